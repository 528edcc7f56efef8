"""Many peers connected to one context: threads, time, memory, and how they grow.

The *hub* process makes one context and binds it N times on ``localhost:0``
(one bind per peer, as yoton's connections are point to point). Four *peer*
processes each make N/4 contexts, and each context connects to one of the
hub's ports. The soft ``RLIMIT_NOFILE`` is raised to the hard limit in every
process. This project runs for N = 250, 500, 1,000 and 2,000, so that growth
shows: with a cost per connection that does not depend on N, the time and the
hub's CPU per connection stay flat (2.x's NEW_CONNECTION broadcast, relayed by
the hub to every other peer, made them grow with N).

Measured in the hub: the threads of the process (``threading.active_count()``
and the kernel's count, ``Threads`` in ``/proc/self/status``, which also sees
threads that Python did not start); the time from the runner's GO to the last
connection established (monotonic clock, shared by the processes; binding is
not timed), and per connection; the hub's CPU time in that span per
connection (accepting, handshaking and routing what each join brings: what a
hub pays per peer, less sensitive to the machine's load than the wall clock);
its RSS before binding and once every connection is established (per
connection = the difference / N).

yoton 2.x runs one thread per connection, so for information it gets 100
peers (one peer process), stated in its row.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from argparse import Namespace
from typing import Any

from _util import US, Commands, roles, say, say_json, start_role
from bench_memory import proc_status

SCENARIO = "connections to one context: threads in the hub process"
TIME_SCENARIO = "connections to one context: time to connect them all (s)"
PER_SCENARIO = "connections to one context: cost per connection as the count grows"
MEM_SCENARIO = "connections to one context: hub memory per connection (KiB)"
#: The row the ratios and targets are read from (issue 18: 1,000 peers in <= 2 s).
MAIN_PEERS = 1000
LIBRARIES = {
    # key: (display, peers, peer processes)
    "yoton-250": ("yoton 3, 250 peers", 250, 4),
    "yoton-500": ("yoton 3, 500 peers", 500, 4),
    "yoton": (US, MAIN_PEERS, 4),
    "yoton-2000": ("yoton 3, 2,000 peers", 2000, 4),
    "yoton-100": ("yoton 3, 100 peers (as 2.x)", 100, 1),
    "yoton2": ("yoton 2.2 (pyzo), 100 peers", 100, 1),
}
MAX_THREADS = 8
MAX_SECONDS = 2.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hub(n: int) -> None:
    raise_fd_limit()
    import yoton

    ctx = yoton.Context()
    before = proc_status()
    t0 = time.monotonic()
    conns = [ctx.bind("localhost:0") for _ in range(n)]
    bind_s = time.monotonic() - t0
    say("PORTS", json.dumps([int(c.port1) for c in conns]))
    bound = proc_status()
    cmds = Commands()
    cmds.wait("GO", 120)
    cpu0 = time.process_time()
    deadline = time.monotonic() + 300
    pending = conns
    while pending and time.monotonic() < deadline:
        pending = [c for c in pending if not c.is_connected]
        if pending:
            time.sleep(0.005)
    done = time.monotonic()
    cpu = time.process_time() - cpu0
    time.sleep(0.5)  # let handshake stragglers settle
    after = proc_status()
    say_json(
        "RESULT",
        {
            "version": yoton.__version__,
            "connected": n - len(pending),
            "done": done,
            "cpu_s": cpu,
            "bind_s": bind_s,
            "threads_py": threading.active_count(),
            "threads_os": after["Threads"],
            "threads_os_bound": bound["Threads"],
            "rss_before_kib": before["VmRSS"],
            "rss_after_kib": after["VmRSS"],
        },
    )
    cmds.wait("STOP", 120)
    ctx.close()


def peer(ports: list[int]) -> None:
    raise_fd_limit()
    import yoton

    cmds = Commands()
    ctxs = [yoton.Context() for _ in ports]
    say("READY")
    cmds.wait("GO", 120)
    for ctx, port in zip(ctxs, ports, strict=True):
        ctx.connect(f"localhost:{port}", timeout=30)
    say_json("CONNECTED", {"threads_os": proc_status()["Threads"]})
    cmds.wait("STOP", 120)
    for ctx in ctxs:
        ctx.close()


def measure(lib: str, n: int, procs: int) -> dict[str, Any]:
    yoton2 = lib == "yoton2"
    with roles() as started:
        h = start_role("bench_connections", "hub", n, yoton2=yoton2, name=f"{lib} hub")
        started.append(h)
        ports = json.loads(h.expect("PORTS", 120))
        peers = []
        for i in range(procs):
            p = start_role(
                "bench_connections", "peer", ports[i::procs], yoton2=yoton2, name=f"{lib} peer {i}"
            )
            started.append(p)
            peers.append(p)
        for p in peers:
            p.expect("READY", 60)
        t_go = time.monotonic()
        for p in peers:
            p.send("GO")
        h.send("GO")
        result = h.expect_json("RESULT", 400)
        peer_threads = [p.expect_json("CONNECTED", 120)["threads_os"] for p in peers]
        h.send("STOP")
        for p in peers:
            p.send("STOP")
    result["seconds"] = result["done"] - t_go
    result["peer_threads"] = peer_threads
    return result


def _growth(figs: dict[int, dict[str, Any]]) -> str:
    """How the cost per connection moved from the fewest peers to the most."""
    sizes = sorted(figs)
    if len(sizes) < 2:
        return ""
    lo, hi = figs[sizes[0]], figs[sizes[-1]]
    t = (hi["seconds"] / sizes[-1]) / (lo["seconds"] / sizes[0])
    c = (hi["cpu_s"] / sizes[-1]) / (lo["cpu_s"] / sizes[0]) if lo["cpu_s"] else float("nan")
    return (
        f"; {sizes[-1]:,} vs {sizes[0]:,} peers ({sizes[-1] / sizes[0]:.0f}x as many): "
        f"time per connection x{t:.2f}, hub CPU per connection x{c:.2f} (1 = linear growth)"
    )


def run(opts: Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    rows: list[dict[str, Any]] = []
    ours: dict[int, dict[str, Any]] = {}  # peers -> figures, this project over tcp
    for lib, (display, n, procs) in LIBRARIES.items():
        if only and not any(o.lower() in f"{lib} {display}".lower() for o in only):
            continue
        if quick and lib in ("yoton-100", "yoton-500", "yoton-2000"):
            continue
        if quick and lib == "yoton":
            n = 200  # the row says how many connected
        base = {"library": display}
        try:
            r = measure(lib, n, procs)
        except Exception as exc:
            fail = f"failed: {str(exc).splitlines()[0][:150]}"
            for title in (SCENARIO, TIME_SCENARIO, PER_SCENARIO, MEM_SCENARIO):
                rows.append(
                    {**base, "scenario": title, "metric": "", "value": None, "detail": fail}
                )
            continue
        ok = r["connected"] == n
        if lib.startswith("yoton") and lib != "yoton2" and ok:
            ours[n] = r
        conn_detail = f"{r['connected']:,}/{n:,} connected"
        if lib in ("yoton", "yoton-100", "yoton2"):
            threads = {
                **base,
                "scenario": SCENARIO,
                "metric": "threads (OS)",
                "higher_is_better": False,
                "value": float(r["threads_os"]),
                "detail": f"{conn_detail}; threading.active_count() {r['threads_py']}; "
                f"after binding {r['threads_os_bound']}; peer processes "
                f"{'/'.join(str(t) for t in r['peer_threads'])}",
            }
            if lib == "yoton":
                threads["target_max"] = MAX_THREADS
                threads["target_met"] = ok and r["threads_os"] <= MAX_THREADS
            rows.append(threads)
        timing = {
            **base,
            "scenario": TIME_SCENARIO,
            "metric": "s",
            "higher_is_better": False,
            "value": r["seconds"],
            "detail": f"{conn_detail}; {n / r['seconds']:,.0f} connections/s; "
            f"binding them took {r['bind_s']:.2f} s",
        }
        if lib == "yoton":
            timing["target_max"] = MAX_SECONDS
            timing["target_met"] = ok and r["seconds"] <= MAX_SECONDS
        rows.append(timing)
        rows.append(
            {
                **base,
                "scenario": PER_SCENARIO,
                "metric": "ms per connection",
                "detail_title": "hub CPU per connection (accept, handshake, what the join brings)",
                "higher_is_better": False,
                "value": r["seconds"] / n * 1000,
                "detail": f"{conn_detail}; hub CPU {r['cpu_s'] / n * 1000:.2f} ms per connection "
                f"({r['cpu_s']:.2f} s)",
            }
        )
        per = (r["rss_after_kib"] - r["rss_before_kib"]) / n
        rows.append(
            {
                **base,
                "scenario": MEM_SCENARIO,
                "metric": "KiB/connection",
                "higher_is_better": False,
                "value": per,
                "detail": f"{conn_detail}; RSS {r['rss_before_kib'] / 1024:,.1f} → "
                f"{r['rss_after_kib'] / 1024:,.1f} MiB",
            }
        )
    growth = _growth({k: v for k, v in ours.items() if k != 100})
    if growth:
        for row in rows:
            if row["scenario"] == PER_SCENARIO and row["library"] == US:
                row["detail"] += growth
    order = [SCENARIO, TIME_SCENARIO, PER_SCENARIO, MEM_SCENARIO]
    rows.sort(key=lambda row: order.index(row["scenario"]))
    return rows


SCENARIOS = [(SCENARIO, run)]
