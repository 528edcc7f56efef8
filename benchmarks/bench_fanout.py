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

The endpoints, roles and loops are those of ``_pubsub`` (``bench_pubsub`` is
the same run with one subscriber); this module holds the counts, the target
and how the four results make one row.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import _pubsub
from _util import PURE, US, US_PURE, failure, selected

SCENARIO = "fan-out 1 publisher → 4 subscribers, 100 B, TCP (deliveries/s)"
SUBSCRIBERS = 4
PAYLOAD_SIZE = 100

LIBRARIES = {
    # key: (display name, messages, time limit of the publisher in s)
    "yoton": (US, 100_000, 15.0),
    PURE: (US_PURE, 100_000, 15.0),
    "yoton2": ("yoton 2.2 (pyzo)", 10_000, 3.0),
    "zmq": ("pyzmq PUB/SUB, no HWM (lossless)", 100_000, 15.0),
    "zmq-default": ("pyzmq PUB/SUB, default HWM 1,000 (drops)", 100_000, 15.0),
    "nng": ("pynng pub0/sub0", 100_000, 15.0),
}
#: Minimum ratio us/peer (issue 18), against pyzmq's lossless figure.
TARGETS = {"zmq": 0.6}


def run(opts: Namespace) -> list[dict[str, Any]]:
    """One row per library: deliveries/s, each subscriber's count, drops, CPU seconds."""
    rows = []
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    for lib, (display, n, limit) in LIBRARIES.items():
        if not selected(only, lib, display):
            continue
        if quick:
            n, limit = max(n // 5, 2000), min(limit, 2.0)
        row: dict[str, Any] = {
            "scenario": SCENARIO,
            "library": display,
            "metric": "deliveries/s",
            "detail_title": "received per subscriber/sent",
        }
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        try:
            # The subscribers' first/last stamps are compared across processes:
            # time.monotonic, not perf_counter.
            fig = _pubsub.measure(
                lib, n, limit, subscribers=SUBSCRIBERS, clock="monotonic", size=PAYLOAD_SIZE
            )
        except Exception as exc:
            row.update(value=None, detail=failure(exc))
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
        detail += "".join(f"; {d}" for d in _pubsub.drops(*fig["recv"], fig["sent"]))
        cpu = fig["cpu"]
        detail += (
            f"; CPU s in {fig['wall']:.1f} s: publisher {cpu[0]:.2f}, subscribers "
            + "/".join(f"{c:.2f}" for c in cpu[1:])
        )
        row.update(value=value, detail=detail)
        rows.append(row)
    return rows


SCENARIOS = [(SCENARIO, run)]
