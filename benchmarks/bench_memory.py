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
    return result  # type: ignore[no-any-return]


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
    return rows


SCENARIOS = [(SCENARIO, run)]
