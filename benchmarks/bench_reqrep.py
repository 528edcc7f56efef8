#!/usr/bin/env python3
"""Req/rep round-trip latency: echo of a small payload, two processes, TCP.

Libraries: this project (direct path, and forced onto the 2.x four-message
path for comparison), yoton 2.x (pyzo's copy), pyzmq REQ/REP and pynng
req0/rep0.

Procedure, identical for each library, each role in its own process:

1. The replier binds (port 0), reports its port and echoes every request
   (yoton: the built-in ``RepChannel.echo`` in thread mode).
2. The requester connects, makes warm-up calls (untimed; for us the first call
   also lets the two ends agree on the direct path), then N calls one after
   the other, timing each from the call to the result in hand.
3. It reports the median and the 99th percentile.

Run on its own: ``python benchmarks/bench_reqrep.py [--quick] [--only LIB ...]``
prints one table; ``benchmarks/run.py`` runs it with the other scenarios.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import US, Commands, cpu_seconds, roles, say, say_latencies, start_role, timed_calls  # noqa: E402

SCENARIO = "req/rep round trip (echo 16 B)"
PAYLOAD = "0123456789abcdef"

LIBRARIES = {
    # key: (display name, timed calls, quick calls, warm-up calls)
    "yoton": (US, 5000, 1000, 200),
    "yoton-2x-path": ("yoton 3, 2.x 4-message path", 2000, 500, 100),
    "yoton2": ("yoton 2.2 (pyzo)", 25, 10, 2),
    "zmq": ("pyzmq REQ/REP", 5000, 1000, 200),
    "nng": ("pynng req0/rep0", 5000, 1000, 200),
}

#: Minimum ratio us/peer (peer's time / ours), issue 18: our median at most
#: pyzmq's, our p99 at most 1.5x pyzmq's.
TARGETS = {"zmq": 1.0}
P99_TARGETS = {"zmq": 1 / 1.5}
P99_SCENARIO = "req/rep round trip (echo 16 B), p99"


# -- roles (each runs in its own process; imports inside) -------------------------------


def replier(lib: str) -> None:
    cmds = Commands()
    if lib in ("yoton", "yoton-2x-path", "yoton2"):
        import yoton

        ctx = yoton.Context()
        rep = yoton.RepChannel(ctx, "bench")
        rep.set_mode("thread")
        conn = ctx.bind("localhost:0")
        say("PORT", conn.port1)
        cmds.wait("STOP", 600)
        ctx.close()
        return
    if lib == "zmq":
        import zmq

        zctx = zmq.Context()
        sock = zctx.socket(zmq.REP)
        say("PORT", sock.bind_to_random_port("tcp://127.0.0.1"))
        sock.setsockopt(zmq.RCVTIMEO, 200)
        while not (cmds.seen("STOP") or cmds.seen("EOF")):
            try:
                msg = sock.recv()
            except zmq.Again:
                continue
            sock.send(msg)
        sock.close(linger=0)
        zctx.term()
        return
    if lib == "nng":
        import socket

        import pynng

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        sock = pynng.Rep0(recv_timeout=200)
        sock.listen(f"tcp://127.0.0.1:{port}")
        say("PORT", port)
        while not (cmds.seen("STOP") or cmds.seen("EOF")):
            try:
                msg = sock.recv()
            except pynng.Timeout:
                continue
            sock.send(msg)
        sock.close()
        return
    raise ValueError(f"unknown library {lib!r}")


def requester(lib: str, port: int, n: int, warmup: int) -> None:
    if lib in ("yoton", "yoton-2x-path", "yoton2"):
        import yoton

        if lib == "yoton-2x-path":
            yoton.ReqChannel.direct_path = False
        ctx = yoton.Context()
        req = yoton.ReqChannel(ctx, "bench")
        ctx.connect(f"localhost:{port}", timeout=10)

        def call() -> None:
            result = req.echo(PAYLOAD).result(30)
            assert result[0] == PAYLOAD, result

        times = timed_calls(call, n, warmup)
        ctx.close()
    elif lib == "zmq":
        import zmq

        zctx = zmq.Context()
        sock = zctx.socket(zmq.REQ)
        sock.connect(f"tcp://127.0.0.1:{port}")
        data = PAYLOAD.encode()

        def call() -> None:
            sock.send(data)
            assert sock.recv() == data

        times = timed_calls(call, n, warmup)
        sock.close(linger=0)
        zctx.term()
    elif lib == "nng":
        import pynng

        sock = pynng.Req0()
        sock.dial(f"tcp://127.0.0.1:{port}", block=True)
        data = PAYLOAD.encode()

        def call() -> None:
            sock.send(data)
            assert sock.recv() == data

        times = timed_calls(call, n, warmup)
        sock.close()
    else:
        raise ValueError(f"unknown library {lib!r}")
    say_latencies(times)


# -- runner side -------------------------------------------------------------------------


def measure(lib: str, n: int, warmup: int) -> dict[str, Any]:
    """Run one replier/requester pair; return median and p99 in microseconds."""
    yoton2 = lib == "yoton2"
    with roles() as started:
        rep = start_role("bench_reqrep", "replier", lib, yoton2=yoton2, name=f"{lib} replier")
        started.append(rep)
        port = int(rep.expect("PORT"))
        req = start_role(
            "bench_reqrep",
            "requester",
            lib,
            port,
            n,
            warmup,
            yoton2=yoton2,
            name=f"{lib} requester",
        )
        started.append(req)
        req.expect("TIMING", timeout=300)
        cpu0 = cpu_seconds(rep.pid), cpu_seconds(req.pid)
        req.expect("TIMED", timeout=300)
        cpu1 = cpu_seconds(rep.pid), cpu_seconds(req.pid)
        result = req.expect_json("RESULT", timeout=300)
        rep.send("STOP")
        result["cpu_us"] = [(b - a) / max(n, 1) * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
        return result


def run(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The scenario function called by ``benchmarks/run.py``."""
    rows = []
    tails: list[dict[str, Any]] = []
    for lib, (name, n, n_quick, warmup) in LIBRARIES.items():
        if opts.only and not any(s.lower() in f"{lib} {name}".lower() for s in opts.only):
            continue
        row: dict[str, Any] = {
            "scenario": SCENARIO,
            "library": name,
            "metric": "median µs",
            "higher_is_better": False,
            "detail_title": "p99 µs (calls); CPU per call",
        }
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        tail: dict[str, Any] = {
            "scenario": P99_SCENARIO,
            "library": name,
            "metric": "p99 µs",
            "higher_is_better": False,
            "detail_title": "median µs (calls)",
        }
        if lib in P99_TARGETS:
            tail["target_ratio"] = P99_TARGETS[lib]
        try:
            r = measure(lib, n_quick if opts.quick else n, warmup)
            row["value"] = r["median_us"]
            row["detail"] = (
                f"{r['p99_us']:,.0f} ({r['n']}); CPU µs per call: replier "
                f"{r['cpu_us'][0]:,.0f}, requester {r['cpu_us'][1]:,.0f}"
            )
            tail["value"] = r["p99_us"]
            tail["detail"] = f"{r['median_us']:,.1f} ({r['n']})"
        except Exception as exc:  # report, do not stop the other libraries
            row["value"] = tail["value"] = None
            row["detail"] = tail["detail"] = f"failed: {exc}".splitlines()[0][:120]
        rows.append(row)
        tails.append(tail)
    return rows + tails


SCENARIOS = [(SCENARIO, run)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls")
    ap.add_argument("--only", nargs="+", metavar="LIB", help="only libraries matching these")
    opts = ap.parse_args(argv)
    rows = [r for r in run(opts) if r["scenario"] == SCENARIO]
    ours = next((r["value"] for r in rows if r["library"] == US), None)
    print(f"## {SCENARIO}\n")
    print("| library | median µs | p99 µs (calls) | median / ours |")
    print("|---|---:|---|---:|")
    for r in rows:
        v = r["value"]
        ratio = f"{v / ours:.2f}" if v and ours else "n/a"
        shown = f"{v:,.1f}" if v is not None else "n/a"
        print(f"| {r['library']} | {shown} | {r['detail']} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
