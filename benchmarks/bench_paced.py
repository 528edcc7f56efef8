"""A subscriber's CPU at a moderate rate: 5,000 messages of 100 B a second.

The throughput scenarios measure a subscriber that is busy anyway; most real
streams (sensors, progress, logs) come at a moderate, even pace, where what a
user notices is the CPU the subscriber burns while it mostly waits. With
messages 200 µs apart, a waiting thread that spins for up to 250 µs before it
blocks never blocks: before ``_borrow.spin_for`` our subscriber used 85-95 % of
a core here (pyzmq's ~10 %).

Each library's publisher sends ``N`` messages evenly spaced at ``RATE`` a
second (``_pubsub.send_paced``: it polls the clock for the last half
millisecond before each send, so its own CPU is high and not the figure);
the subscriber counts them as in ``bench_pubsub`` (``_pubsub.measure``).
The figure is the subscriber process's CPU time over the span from GO to
its result, as a percentage of one core: lower is better.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import _pubsub
from _util import US, failure, selected

SCENARIO = "pub/sub 100 B at 5,000 msg/s, even pace: subscriber CPU (% of a core)"
RATE = 5000.0
N = 15_000
SIZE = 100
REPEATS = 3
LIBRARIES = {
    "yoton": US,
    "yoton2": "yoton 2.2 (pyzo)",
    "zmq": "pyzmq PUB/SUB, no HWM (lossless)",
}


def _percent(fig: dict[str, Any]) -> float:
    return 100.0 * fig["cpu"][1] / fig["wall"]


def run(opts: Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    n = N // 5 if quick else N
    plan = {lib: display for lib, display in LIBRARIES.items() if selected(only, lib, display)}
    figs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in plan}
    failed: dict[str, Exception] = {}
    for _ in range(1 if quick else REPEATS):
        for lib in plan:
            if lib in failed:
                continue
            try:
                figs[lib].append(_pubsub.measure(lib, n, n / RATE + 60, size=SIZE, rate=RATE))
            except Exception as exc:  # one broken peer must not hide the others
                failed[lib] = exc
    rows = []
    for lib, display in plan.items():
        row: dict[str, Any] = {
            "scenario": SCENARIO,
            "library": display,
            "metric": "subscriber CPU %",
            "higher_is_better": False,
            "detail_title": "received/sent; publisher CPU %; messages sent late",
        }
        if lib in failed:
            row.update(value=None, detail=failure(failed[lib]))
            rows.append(row)
            continue
        runs = sorted(figs[lib], key=_percent)
        fig = runs[len(runs) // 2]
        got, sent = fig["recv"][0]["received"], fig["sent"]["sent"]
        detail = f"{got:,}/{sent:,}"
        if got != sent:
            detail += f" ({sent - got:,} lost)"
        detail += (
            f"; publisher {100.0 * fig['cpu'][0] / fig['wall']:.0f} %; {fig['sent']['late']:,} late"
        )
        if len(runs) > 1:
            detail += (
                f"; median of {len(runs)} runs ({', '.join(f'{_percent(f):.0f}' for f in runs)} %)"
            )
        row.update(value=_percent(fig), detail=detail)
        rows.append(row)
    return rows


SCENARIOS = [(SCENARIO, run)]
