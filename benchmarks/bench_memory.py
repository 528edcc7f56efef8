"""Peak memory of a subscriber holding 100,000 unread 1 KiB messages.

Libraries: this project and yoton 2.x (pyzo's copy), over TCP, each role in
its own process. Both contexts get ``queue_params=(200_000, "old")`` so that
nothing is discarded (the default keeps 10,000).

1. The subscriber binds; the publisher connects and sends warm-up messages
   until the subscriber has read one; the subscriber notes its RSS then
   (the *baseline*: interpreter, library, engine, one connection).
2. The publisher sends 100,000 BINARY messages of 1 KiB and reports when its
   last ``send`` returned; the subscriber reads nothing meanwhile.
3. Once its channel reports them all pending, the subscriber reads its peak
   resident set (``VmHWM`` in ``/proc/self/status``, the same figure as
   ``resource.getrusage(...).ru_maxrss``) and the current ``VmRSS``.
4. It then drains the queue, counting the messages, so that a lossy run
   cannot look small.

The figure is the peak RSS of the subscriber process (MiB); the delta over the
baseline and the bytes per queued message are shown for information.

Beside them, the *floor* (:func:`floor`): processes that only hold the same
100,000 payloads, with nothing received, measured in the same run. With
``import trio`` first (the IO engine's event loop, which every yoton process
that connects runs; it loads ``ssl`` among others) and the payloads packed
into one buffer, it is the least any subscriber built on this design can
show. Without trio, or as 100,000 ``bytes`` objects (what ``recv`` hands
out, 1,057 bytes each in a 1,072-byte malloc chunk), the rows show what each
of the two costs. Issue 18's 115 MiB is below every combination but the one
without trio *and* without a ``bytes`` object per held message, so the
table shows the target against what can be reached, not only against us.
"""

from __future__ import annotations

import resource
import time
from argparse import Namespace
from typing import Any

from _util import US, Commands, roles, say, say_json, start_role

SCENARIO = "peak RSS of a subscriber holding 100,000 unread 1 KiB messages (MiB)"
N = 100_000
SIZE = 1024
QUEUE = (200_000, "old")
LIBRARIES = {"yoton": US, "yoton2": "yoton 2.2 (pyzo)"}
#: The floor rows: (with trio imported, payloads packed into one buffer) -> name.
FLOORS = {
    (True, True): "floor: Python + trio, payloads in one buffer, nothing received",
    (True, False): "floor: Python + trio, payloads as bytes objects, nothing received",
    (False, True): "floor: Python alone, payloads in one buffer, nothing received",
    (False, False): "floor: Python alone, payloads as bytes objects, nothing received",
}
#: us ≤ 1.2 × 2.x, as a minimum ratio us/peer (lower is better: peer/us).
TARGETS = {"yoton2": 1 / 1.2}
#: Issue 18: our peak RSS at most this many MiB.
MAX_MIB = 115.0


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads from ``/proc/self/status``."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(rest.split()[0])
    return out


def subscriber(n: int) -> None:
    import yoton

    ctx = yoton.Context(queue_params=QUEUE)
    sub = yoton.SubChannel(ctx, "bench-mem", yoton.BINARY)
    conn = ctx.bind("localhost:0")
    say("PORT", conn.port1)
    cmds = Commands()
    deadline = time.monotonic() + 60
    while not sub.recv(0.5):
        if time.monotonic() > deadline:
            say_json("RESULT", {"error": "no warm-up message arrived"})
            return
    say("READY")
    cmds.wait("GO", 60)
    while sub.recv(False):  # warm-up messages that arrived after READY
        pass
    base = proc_status()
    say("BASELINE")
    cmds.wait("SENT", 300)
    deadline = time.monotonic() + 120
    while sub.pending < n and time.monotonic() < deadline:
        time.sleep(0.05)
    pending = sub.pending
    status = proc_status()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    counted = 0
    while True:
        m = sub.recv(False)
        if not m:
            break
        if m[:1] == b"M":
            counted += 1
    say_json(
        "RESULT",
        {
            "version": yoton.__version__,
            "pending": pending,
            "counted": counted,
            "base_rss_kib": base["VmRSS"],
            "hwm_kib": status["VmHWM"],
            "rss_kib": status["VmRSS"],
            "ru_maxrss_kib": maxrss,
            "dropped": getattr(sub, "dropped", None),
        },
    )
    ctx.close()


def publisher(port: int, n: int) -> None:
    import yoton

    ctx = yoton.Context(queue_params=QUEUE)
    pub = yoton.PubChannel(ctx, "bench-mem", yoton.BINARY)
    ctx.connect(f"localhost:{port}", timeout=10)
    say("CONNECTED")
    cmds = Commands()
    while not cmds.seen("GO"):
        pub.send(b"W")
        time.sleep(0.002)
    cmds.wait("BASE", 60)
    msg = b"M" + b"x" * (SIZE - 1)
    t0 = time.perf_counter()
    for _ in range(n):
        pub.send(msg)
    say_json("SENT", {"sent": n, "seconds": time.perf_counter() - t0})
    cmds.wait("STOP", 600)
    ctx.close()


def floor(n: int, with_trio: bool, packed: bool) -> None:
    """Hold ``n`` payloads of 1 KiB and nothing else; say the peak RSS.

    ``packed``: one buffer of ``n`` KiB, the least memory the payloads can
    take; else ``n`` separate ``bytes`` objects, as a subscriber holds them
    (each 1,057 bytes in its own malloc chunk). Every byte is written, so
    every page is resident, as received data is.
    """
    if with_trio:
        import trio  # noqa: F401 - imported for its memory: the engine's loop

    base = proc_status()
    msg = b"M" + b"x" * (SIZE - 1)
    if packed:
        held: Any = msg * n
    else:
        tail = msg[1:]
        held = [b"M" + tail for _ in range(n)]  # (distinct objects, as received)
    status = proc_status()
    say_json(
        "RESULT",
        {
            "held": len(held) if not packed else len(held) // SIZE,
            "base_rss_kib": base["VmRSS"],
            "hwm_kib": status["VmHWM"],
        },
    )


def measure_floor(n: int, with_trio: bool, packed: bool) -> dict[str, Any]:
    with roles() as started:
        role = start_role("bench_memory", "floor", n, with_trio, packed, name="floor")
        started.append(role)
        return role.expect_json("RESULT", 60)


def measure(lib: str, n: int) -> dict[str, Any]:
    yoton2 = lib == "yoton2"
    with roles() as started:
        sub = start_role("bench_memory", "subscriber", n, yoton2=yoton2, name=f"{lib} sub")
        started.append(sub)
        port = int(sub.expect("PORT"))
        pub = start_role("bench_memory", "publisher", port, n, yoton2=yoton2, name=f"{lib} pub")
        started.append(pub)
        pub.expect("CONNECTED")
        sub.expect("READY", 60)
        pub.send("GO")
        sub.send("GO")
        sub.expect("BASELINE")
        pub.send("BASE")
        pub.expect_json("SENT", 300)
        sub.send("SENT")
        result = sub.expect_json("RESULT", 300)
        pub.send("STOP")
    if "error" in result:
        raise RuntimeError(result["error"])
    if (lib == "yoton2") != str(result.get("version", "")).startswith("2."):
        raise RuntimeError(f"the {lib} roles imported the wrong yoton ({result.get('version')})")
    return result


def run(opts: Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    n = N // 5 if quick else N
    rows = []
    for lib, display in LIBRARIES.items():
        if only and not any(o.lower() in f"{lib} {display}".lower() for o in only):
            continue
        row: dict[str, Any] = {
            "scenario": SCENARIO if not quick else SCENARIO.replace("100,000", f"{n:,}"),
            "library": display,
            "metric": "peak RSS MiB",
            "higher_is_better": False,
            "detail_title": "held/sent; delta over baseline; per message",
        }
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        try:
            r = measure(lib, n)
        except Exception as exc:
            row.update(value=None, detail=f"failed: {str(exc).splitlines()[0][:150]}")
            rows.append(row)
            continue
        delta = r["hwm_kib"] - r["base_rss_kib"]
        detail = (
            f"{r['counted']:,}/{n:,}; +{delta / 1024:,.1f} MiB over "
            f"{r['base_rss_kib'] / 1024:,.1f}; {delta * 1024 / max(r['counted'], 1):,.0f} B"
        )
        if r.get("dropped"):
            detail += f"; dropped {r['dropped']}"
        row.update(value=r["hwm_kib"] / 1024, detail=detail)
        if lib == "yoton" and not quick:  # (the target is for 100,000 messages)
            row.update(target_max=MAX_MIB, target_met=r["hwm_kib"] / 1024 <= MAX_MIB)
        rows.append(row)
    if not only or any("floor" in o.lower() for o in only):
        for (with_trio, packed), display in FLOORS.items():
            f = measure_floor(n, with_trio, packed)
            delta = f["hwm_kib"] - f["base_rss_kib"]
            rows.append(
                {
                    "scenario": rows[0]["scenario"] if rows else SCENARIO,
                    "library": display,
                    "metric": "peak RSS MiB",
                    "higher_is_better": False,
                    "value": f["hwm_kib"] / 1024,
                    "detail": f"{f['held']:,} held; +{delta / 1024:,.1f} MiB over "
                    f"{f['base_rss_kib'] / 1024:,.1f}; {delta * 1024 / max(f['held'], 1):,.0f} B",
                }
            )
    return rows


SCENARIOS = [(SCENARIO, run)]
