#!/usr/bin/env python3
"""yoton over NATS against nats-py on the same local nats-server, in one run.

Scenarios (issue 16), each with a fresh ``nats-server`` on 127.0.0.1 started by
the runner (``yoton_nats.testing.NatsServer``), every role in its own process:

* **NATS pub/sub 100 B**: one publisher and one subscriber process. yoton: a
  PubChannel and a SubChannel whose contexts join bus ``bench`` on the server.
  nats-py: ``publish`` and a subscription with a callback (its documented
  asynchronous API). The subscriber says READY on its first warm-up message;
  then the publisher sends N messages, and the subscriber times the first to
  the last (the receive rate; received/sent beside it, losses never hidden).
  Five runs per library in interleaved rounds; the row is the median run.
* **NATS req/rep (echo 16 B)**: yoton: ReqChannel / RepChannel (thread mode)
  on the bus; nats-py: ``request`` against a subscription that ``respond``\\ s.
  Median and p99 of N calls after warm-up.
* **NATS join**: 50, 100 and 200 contexts, spread over 4 processes, join one
  bus at once (``connect``); the time from GO until the last context of the
  last process joined and every process's first context saw a state set by
  another process (the network works). Target: 200 in under 2 s, growing
  linearly.

Targets (ratios in the same run): pub/sub ≥ 1.0x nats-py, req/rep median
≤ 1.0x nats-py's. Run alone: ``python benchmarks/bench_nats.py [--quick]``, or
with the others: ``python3 dev.py bench --scenario NATS``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _pubsub  # noqa: E402
from _util import (  # noqa: E402
    US,
    Commands,
    cpu_seconds,
    failure,
    roles,
    say,
    say_json,
    say_latencies,
    start_role,
    timed_calls,
)

PAYLOAD_SIZE = 100
# Named so that --scenario "pub/sub 100 B" or "req/rep" (the hot-path checks of the
# other transports) does not pick these too: "--scenario NATS" runs them.
PUBSUB = "NATS bus: publish/subscribe of 100-byte messages"
REQREP = "NATS bus: request/reply round trip (echo 16 B)"
JOIN = "NATS bus: contexts joining (4 processes)"
ECHO = "0123456789abcdef"
NATSPY = "nats-py (callback API)"
REPEATS = 5

PUBSUB_LIBS = {"yoton": (US, 300_000, 20.0), "natspy": (NATSPY, 300_000, 20.0)}
REQREP_LIBS = {"yoton": (US, 3000, 500, 200), "natspy": ("nats-py request", 3000, 500, 200)}
JOIN_SIZES = (50, 100, 200)
JOIN_PROCESSES = 4


def _bus(url: str, name: str) -> str:
    return f"{url}/{name}"


# -- pub/sub roles --------------------------------------------------------------------------


def subscriber(lib: str, url: str, n: int) -> None:
    if lib == "yoton":
        import yoton

        ctx = yoton.Context()
        sub = yoton.SubChannel(ctx, "bench", yoton.BINARY)
        ctx.connect(_bus(url, "bench"), timeout=10)

        class R:
            def recv(self, timeout: float) -> bytes | None:
                return sub.recv(timeout) or None

        r = R()
        if not _pubsub.wait_warm(r):
            say_json("RESULT", {"error": "no warm-up message arrived"})
            return
        say("READY")
        result = _pubsub.count_messages((functools.partial(sub.recv, _pubsub.IDLE_TIMEOUT), ()), n)
        result["inbox_dropped"] = getattr(sub, "dropped", 0)
        say_json("RESULT", result)
        ctx.close()
        return
    asyncio.run(_natspy_subscriber(url, n))


async def _natspy_subscriber(url: str, n: int) -> None:
    import nats

    nc = await nats.connect(url)
    done = asyncio.Event()
    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "ready": False, "end": ""}
    clock = time.perf_counter

    async def cb(msg: Any) -> None:
        head = msg.data[:1]
        if head == b"M":
            state["last"] = clock()
            if not state["count"]:
                state["first"] = state["last"]
            state["count"] += 1
            if state["count"] >= n:
                state["end"] = "all received"
                done.set()
        elif head == b"W" and not state["ready"]:
            state["ready"] = True
            say("READY")
        elif head == b"E" and state["ready"] and not done.is_set():
            state["end"] = "end marker"
            done.set()

    await nc.subscribe("bench", cb=cb)
    await nc.flush()
    while not done.is_set():
        before = state["count"]
        try:
            await asyncio.wait_for(done.wait(), _pubsub.IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            if state["ready"] and state["count"] == before:
                state["end"] = f"{_pubsub.IDLE_TIMEOUT} s of silence"
                break
    say_json(
        "RESULT",
        {
            "received": state["count"],
            "first": state["first"],
            "last": state["last"],
            "seconds": state["last"] - state["first"],
            "end": state["end"],
        },
    )
    await nc.close()


def publisher(lib: str, url: str, n: int, time_limit: float, size: int) -> None:
    cmds = Commands()
    if lib == "yoton":
        import yoton

        ctx = yoton.Context()
        pub = yoton.PubChannel(ctx, "bench", yoton.BINARY)
        conn = ctx.connect(_bus(url, "bench"), timeout=10)

        class S:
            send = pub.send

            def flush(self) -> None:
                pass

        s = S()
        say("CONNECTED")
        _pubsub.send_until(s, _pubsub.payload(b"W", size), lambda: cmds.seen("GO"), 0.002)
        result = _pubsub.send_counted(s, _pubsub.payload(b"M", size), n, time_limit)
        result["queue_dropped"] = conn.stats.packages_dropped
        say_json("SENT", result)
        _pubsub.send_until(
            s, _pubsub.payload(b"E", size), lambda: cmds.seen("STOP") or cmds.seen("EOF"), 0.02
        )
        ctx.close()
        return
    asyncio.run(_natspy_publisher(url, n, time_limit, size, cmds))


async def _natspy_publisher(url: str, n: int, limit: float, size: int, cmds: Commands) -> None:
    import nats

    nc = await nats.connect(url)
    say("CONNECTED")
    warm, msg, end = (_pubsub.payload(h, size) for h in (b"W", b"M", b"E"))
    while not cmds.seen("GO"):
        await nc.publish("bench", warm)
        await nc.flush()
        await asyncio.sleep(0.002)
    clock = time.perf_counter
    sent = 0
    t0 = clock()
    deadline = t0 + limit
    publish = nc.publish
    while sent < n:
        k = min(1000, n - sent)
        for _ in range(k):
            await publish("bench", msg)
        sent += k
        if clock() > deadline:
            break
    await nc.flush()
    say_json("SENT", {"sent": sent, "seconds": clock() - t0})
    while not (cmds.seen("STOP") or cmds.seen("EOF")):
        await nc.publish("bench", end)
        await nc.flush()
        await asyncio.sleep(0.02)
    await nc.close()


def _measure_pubsub(lib: str, url: str, n: int, limit: float) -> dict[str, Any]:
    with roles() as started:
        sub = start_role("bench_nats", "subscriber", lib, url, n, name=f"{lib} subscriber")
        started.append(sub)
        pub = start_role(
            "bench_nats", "publisher", lib, url, n, limit, PAYLOAD_SIZE, name=f"{lib} publisher"
        )
        started.append(pub)
        pub.expect("CONNECTED", timeout=60)
        sub.expect("READY", timeout=60)
        t0 = time.monotonic()
        cpu0 = cpu_seconds(pub.pid), cpu_seconds(sub.pid)
        pub.send("GO")
        sent = pub.expect_json("SENT", timeout=limit + 60)
        got = sub.expect_json("RESULT", timeout=60)
        cpu1 = cpu_seconds(pub.pid), cpu_seconds(sub.pid)
        pub.send("STOP")
        if "error" in got:
            raise RuntimeError(got["error"])
        return {
            "recv": [got],
            "sent": sent,
            "wall": time.monotonic() - t0,
            "cpu": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
        }


def _rate(fig: dict[str, Any]) -> float:
    got = fig["recv"][0]
    received, secs = got["received"], got["seconds"]
    return (received - 1) / secs if received > 1 and secs > 0 else 0.0


def run_pubsub(opts: argparse.Namespace) -> list[dict[str, Any]]:
    from yoton_nats.testing import NatsServer

    quick = getattr(opts, "quick", False)
    only = getattr(opts, "only", None)
    plan = {
        lib: (d, max(n // 10, 2000) if quick else n, min(t, 3.0) if quick else t)
        for lib, (d, n, t) in PUBSUB_LIBS.items()
        if _selected(only, lib, d)
    }
    figs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in plan}
    failed: dict[str, Exception] = {}
    with NatsServer() as server:
        for _ in range(1 if quick else REPEATS):
            for lib, (_d, n, limit) in plan.items():
                if lib in failed:
                    continue
                try:
                    figs[lib].append(_measure_pubsub(lib, server.url, n, limit))
                except Exception as exc:  # one broken peer must not hide the other
                    failed[lib] = exc
    rows = []
    for lib, (display, _n, _limit) in plan.items():
        row: dict[str, Any] = {"scenario": PUBSUB, "library": display, "metric": "msg/s"}
        if lib == "natspy":
            row["target_ratio"] = 1.0
        if lib in failed:
            row.update(value=None, detail=failure(failed[lib]))
        else:
            ordered = sorted(figs[lib], key=_rate)
            fig = ordered[len(ordered) // 2]
            got, sent = fig["recv"][0], fig["sent"]["sent"]
            detail = f"{got['received']:,}/{sent:,}"
            if got["received"] != sent:
                detail += f" ({sent - got['received']:,} lost"
                if got.get("inbox_dropped"):
                    detail += f", {got['inbox_dropped']:,} by the subscriber's full inbox"
                detail += ")"
            detail += (
                f"; CPU s in {fig['wall']:.1f} s: publisher {fig['cpu'][0]:.2f}, "
                f"subscriber {fig['cpu'][1]:.2f}"
            )
            if len(ordered) > 1:
                rates = ", ".join(f"{_rate(f):,.0f}" for f in ordered)
                detail += f"; median of {len(ordered)} runs ({rates} msg/s)"
            row.update(value=_rate(fig), detail=detail)
        rows.append(row)
    return rows


# -- req/rep roles --------------------------------------------------------------------------


def replier(lib: str, url: str) -> None:
    cmds = Commands()
    if lib == "yoton":
        import yoton

        ctx = yoton.Context()
        rep = yoton.RepChannel(ctx, "bench")
        rep.set_mode("thread")
        ctx.connect(_bus(url, "bench-rr"), timeout=10)
        say("READY")
        cmds.wait("STOP", 600)
        ctx.close()
        return

    async def main() -> None:
        import nats

        nc = await nats.connect(url)

        async def cb(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("echo", cb=cb)
        await nc.flush()
        say("READY")
        while not (cmds.seen("STOP") or cmds.seen("EOF")):
            await asyncio.sleep(0.05)
        await nc.close()

    asyncio.run(main())


def requester(lib: str, url: str, n: int, warmup: int) -> None:
    if lib == "yoton":
        import yoton

        ctx = yoton.Context()
        req = yoton.ReqChannel(ctx, "bench")
        ctx.connect(_bus(url, "bench-rr"), timeout=10)

        def call() -> None:
            assert req.echo(ECHO).result(30)[0] == ECHO

        times = timed_calls(call, n, warmup)
        ctx.close()
    else:
        times = asyncio.run(_natspy_requests(url, n, warmup))
    say_latencies(times)


async def _natspy_requests(url: str, n: int, warmup: int) -> list[float]:
    import nats

    nc = await nats.connect(url)
    data = ECHO.encode()
    for _ in range(warmup):
        await nc.request("echo", data, timeout=10)
    say("TIMING")
    clock = time.perf_counter
    out = []
    for _ in range(n):
        t0 = clock()
        msg = await nc.request("echo", data, timeout=10)
        out.append(clock() - t0)
        assert msg.data == data
    say("TIMED")
    await nc.close()
    return out


def run_reqrep(opts: argparse.Namespace) -> list[dict[str, Any]]:
    from yoton_nats.testing import NatsServer

    rows = []
    with NatsServer() as server:
        for lib, (name, n, n_quick, warmup) in REQREP_LIBS.items():
            if not _selected(getattr(opts, "only", None), lib, name):
                continue
            row: dict[str, Any] = {
                "scenario": REQREP,
                "library": name,
                "metric": "median µs",
                "higher_is_better": False,
                "detail_title": "p99 µs (calls); CPU per call",
            }
            if lib == "natspy":
                row["target_ratio"] = 1.0
            count = n_quick if getattr(opts, "quick", False) else n
            try:
                with roles() as started:
                    rep = start_role("bench_nats", "replier", lib, server.url, name="replier")
                    started.append(rep)
                    rep.expect("READY", timeout=60)
                    req = start_role(
                        "bench_nats", "requester", lib, server.url, count, warmup, name="requester"
                    )
                    started.append(req)
                    req.expect("TIMING", timeout=300)
                    cpu0 = cpu_seconds(rep.pid), cpu_seconds(req.pid)
                    req.expect("TIMED", timeout=300)
                    cpu1 = cpu_seconds(rep.pid), cpu_seconds(req.pid)
                    r = req.expect_json("RESULT", timeout=60)
                    rep.send("STOP")
                cpu = [(b - a) / count * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
                row["value"] = r["median_us"]
                row["detail"] = (
                    f"{r['p99_us']:,.0f} ({r['n']}); CPU µs per call: replier "
                    f"{cpu[0]:,.0f}, requester {cpu[1]:,.0f}"
                )
            except Exception as exc:
                row.update(value=None, detail=failure(exc))
            rows.append(row)
    return rows


# -- joining ----------------------------------------------------------------------------------


def joiner(url: str, k: int, index: int, processes: int) -> None:
    """Make ``k`` contexts; on GO, join them all to the bus; report when done.

    The first context of each process also holds a state of its own and waits
    until it has every other process's state: the network works.
    """
    import yoton

    cmds = Commands()
    contexts = [yoton.Context() for _ in range(k)]
    states = [yoton.StateChannel(contexts[0], f"join-state-{i}") for i in range(processes)]
    say("READY")
    cmds.wait("GO", 120)
    t0 = time.monotonic()
    for ctx in contexts:
        ctx.connect(_bus(url, "join"), timeout=10)
    joined = time.monotonic()
    states[index].send(f"from {index}")
    deadline = time.monotonic() + 30
    while any(not st.recv() for st in states) and time.monotonic() < deadline:
        time.sleep(0.001)
    seen = time.monotonic()
    missing = [i for i, st in enumerate(states) if not st.recv()]
    say_json("JOINED", {"t0": t0, "joined": joined, "seen": seen, "missing": missing})
    cmds.wait("STOP", 120)
    for ctx in contexts:
        ctx.close()


def run_join(opts: argparse.Namespace) -> list[dict[str, Any]]:
    from yoton_nats.testing import NatsServer

    if not _selected(getattr(opts, "only", None), "yoton", US):
        return []
    series: dict[int, float] = {}
    details: dict[int, str] = {}
    try:
        with NatsServer() as server:
            for total in JOIN_SIZES:
                per = total // JOIN_PROCESSES
                with roles() as started:
                    for i in range(JOIN_PROCESSES):
                        started.append(
                            start_role("bench_nats", "joiner", server.url, per, i, JOIN_PROCESSES)
                        )
                    for r in started:
                        r.expect("READY", timeout=120)
                    go = time.monotonic()
                    for r in started:
                        r.send("GO")
                    figs = [r.expect_json("JOINED", timeout=120) for r in started]
                    for r in started:
                        r.send("STOP")
                joined = max(f["joined"] for f in figs) - go
                seen = max(f["seen"] for f in figs) - go
                series[total] = joined
                missing = sum(len(f["missing"]) for f in figs)
                details[total] = f"joined {joined:.2f} s, states seen {seen:.2f} s" + (
                    f" ({missing} MISSING)" if missing else ""
                )
    except Exception as exc:
        return [{"scenario": JOIN, "library": US, "metric": "s", "value": None,
                 "detail": failure(exc)}]  # fmt: skip
    worst = max(series.values())
    linear = series[200] <= 2 * series[100] * 1.5 and series[100] <= 2 * series[50] * 1.5
    return [
        {
            "scenario": JOIN,
            "library": US,
            "metric": "seconds to join",
            "higher_is_better": False,
            "value": worst,
            "detail": "; ".join(f"{k}: {v}" for k, v in details.items())
            + f"; linear: {'yes' if linear else 'NO'}",
            "target_max": 2.0,
            "target_met": series[200] < 2.0 and linear,
        }
    ]


def _selected(only: list[str] | None, lib: str, display: str) -> bool:
    return not only or any(o.lower() in f"{lib} {display}".lower() for o in only)


SCENARIOS = [(PUBSUB, run_pubsub), (REQREP, run_reqrep), (JOIN, run_join)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages and calls")
    ap.add_argument("--only", nargs="+", metavar="LIB", help="only libraries matching these")
    ap.add_argument("--scenario", nargs="+", help="only scenarios matching these")
    opts = ap.parse_args(argv)
    for name, fn in SCENARIOS:
        if opts.scenario and not any(s.lower() in name.lower() for s in opts.scenario):
            continue
        print(f"## {name}\n")
        for r in fn(opts):
            v = r["value"]
            print(
                f"- {r['library']}: {v if v is None else f'{v:,.1f}'} {r['metric']}; {r['detail']}"
            )
        print()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-nats"
    sys.exit(main())
