"""Fan-out: one publisher to four subscribers, 100-byte messages over TCP.

Libraries: this project, yoton 2.x (pyzo's copy), pyzmq PUB/SUB and pynng
pub0/sub0. Five processes per library: each subscriber binds (port 0); the
publisher connects to all four and sends warm-up messages until every
subscriber has seen one (slow-joiner safe); only then is it told to send N
messages (or as many as it manages within a time limit), then end markers.

Each subscriber counts the ``M`` messages and notes the monotonic time of its
first and last one (CLOCK_MONOTONIC is shared by the processes). The figure is
*deliveries* per second: all messages received by the four, divided by the
span from the earliest first to the latest last message. The slowest
subscriber's count is beside it; losses are shown, never hidden.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from _util import US, Commands, cpu_seconds, roles, say, say_json, start_role
from bench_pubsub import ENDPOINTS, IDLE_TIMEOUT, payload

SCENARIO = "fan-out 1 publisher → 4 subscribers, 100 B, TCP (deliveries/s)"
SUBSCRIBERS = 4

LIBRARIES = {
    # key: (display name, messages, time limit of the publisher in s)
    "yoton": (US, 100_000, 15.0),
    "yoton2": ("yoton 2.2 (pyzo)", 10_000, 3.0),
    "zmq": ("pyzmq PUB/SUB", 100_000, 15.0),
    "nng": ("pynng pub0/sub0", 100_000, 15.0),
}
#: Minimum ratio us/peer, from the issue.
TARGETS = {"zmq": 0.3}


def subscriber(lib: str, n: int) -> None:
    r = ENDPOINTS[lib][0]()
    say("PORT", r.bind())
    deadline = time.monotonic() + 60
    while r.recv(0.5) is None:
        if time.monotonic() > deadline:
            say_json("RESULT", {"error": "no warm-up message arrived"})
            return
    say("READY")
    recv = r.recv
    clock = time.monotonic
    count = 0
    first = last = 0.0
    end_reason = "all received"
    while count < n:
        m = recv(IDLE_TIMEOUT)
        if m is None:
            end_reason = f"{IDLE_TIMEOUT} s of silence"
            break
        tag = m[:1]
        if tag == b"M":
            last = clock()
            if not count:
                first = last
            count += 1
        elif tag == b"E":
            end_reason = "end marker"
            break
    result = {"received": count, "first": first, "last": last, "end": end_reason}
    result.update(r.stats())
    say_json("RESULT", result)
    r.close()


def publisher(lib: str, ports: list[int], n: int, time_limit: float) -> None:
    s = ENDPOINTS[lib][1]()
    for port in ports:
        s.connect(port)
    say("CONNECTED")
    cmds = Commands()
    warm = payload(b"W")
    while not cmds.seen("GO"):
        s.send(warm)
        s.flush()
        time.sleep(0.002)
    msg = payload(b"M")
    send = s.send
    clock = time.perf_counter
    sent = 0
    t0 = clock()
    deadline = t0 + time_limit
    while sent < n:
        k = min(1000, n - sent)
        for _ in range(k):
            send(msg)
        sent += k
        if clock() > deadline:
            break
    s.flush()
    result = {"sent": sent, "seconds": clock() - t0}
    result.update(s.stats())
    say_json("SENT", result)
    end = payload(b"E")
    while not (cmds.seen("STOP") or cmds.seen("EOF")):
        send(end)
        s.flush()
        time.sleep(0.02)
    s.close()


def measure(lib: str, n: int, time_limit: float) -> dict[str, Any]:
    yoton2 = lib == "yoton2"
    with roles() as started:
        subs = []
        for i in range(SUBSCRIBERS):
            sub = start_role("bench_fanout", "subscriber", lib, n, yoton2=yoton2,
                             name=f"{lib} sub {i}")
            started.append(sub)
            subs.append(sub)
        ports = [int(sub.expect("PORT")) for sub in subs]
        pub = start_role("bench_fanout", "publisher", lib, ports, n, time_limit,
                         yoton2=yoton2, name=f"{lib} pub")
        started.append(pub)
        pub.expect("CONNECTED", 60)
        for sub in subs:
            sub.expect("READY", 60)
        cpu0 = [cpu_seconds(r.pid) for r in [pub, *subs]]
        t0 = time.monotonic()
        pub.send("GO")
        sent = pub.expect_json("SENT", time_limit + 120)
        results = [sub.expect_json("RESULT", 120) for sub in subs]
        cpu = [cpu_seconds(r.pid) - c for r, c in zip([pub, *subs], cpu0, strict=True)]
        wall = time.monotonic() - t0
        pub.send("STOP")
    for r in results:
        if "error" in r:
            raise RuntimeError(r["error"])
    return {"sent": sent, "recv": results, "cpu": cpu, "wall": wall}


def run(opts: Namespace) -> list[dict[str, Any]]:
    rows = []
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    for lib, (display, n, limit) in LIBRARIES.items():
        if only and not any(o.lower() in f"{lib} {display}".lower() for o in only):
            continue
        if quick:
            n, limit = max(n // 5, 2000), min(limit, 2.0)
        row: dict[str, Any] = {"scenario": SCENARIO, "library": display,
                               "metric": "deliveries/s",
                               "detail_title": "received per subscriber/sent"}
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        try:
            fig = measure(lib, n, limit)
        except Exception as exc:
            row.update(value=None, detail=f"failed: {str(exc).splitlines()[0][:150]}")
            rows.append(row)
            continue
        sent = fig["sent"]["sent"]
        got = [r["received"] for r in fig["recv"]]
        live = [r for r in fig["recv"] if r["received"]]
        span = max(r["last"] for r in live) - min(r["first"] for r in live) if live else 0.0
        total = sum(got)
        value = (total - len(live)) / span if span > 0 else None
        detail = f"{'/'.join(f'{g:,}' for g in got)} of {sent:,}"
        lost = SUBSCRIBERS * sent - total
        if lost:
            detail += f" ({lost:,} lost)"
        drops = [r.get("inbox_dropped", 0) for r in fig["recv"]]
        if any(drops):
            detail += f"; inbox dropped {sum(drops)}"
        if fig["sent"].get("queue_dropped"):
            detail += f"; queue dropped {fig['sent']['queue_dropped']}"
        cpu = fig["cpu"]
        detail += (f"; CPU s in {fig['wall']:.1f} s: publisher {cpu[0]:.2f}, subscribers "
                   + "/".join(f"{c:.2f}" for c in cpu[1:]))
        row.update(value=value, detail=detail)
        rows.append(row)
    return rows


SCENARIOS = [(SCENARIO, run)]
