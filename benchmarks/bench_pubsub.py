"""Pub/sub throughput of 100-byte messages between two processes over TCP.

Libraries: this project, yoton 2.x (pyzo's copy), pyzmq PUB/SUB, pynng
pub0/sub0, and a raw-socket loop (4-byte length prefix + the same payloads,
the sender batching frames into 64 KiB writes) as the physical reference.

Procedure, identical for each library, every role in its own process:

1. The subscriber binds (port 0) and reports its port.
2. The publisher connects and sends warm-up messages (``W...``) every 2 ms.
3. The subscriber says READY on its first message; only then the runner
   tells the publisher GO (slow-joiner safe: the subscription is live).
4. The publisher sends N messages (``M...``), or as many as it can within a
   time limit (yoton 2.x manages ~10,000/s, so it gets fewer), reports how
   many, then sends end markers (``E...``) until told to stop.
5. The subscriber counts ``M`` messages and times the first to the last; it
   stops at N, at an end marker, or after 2 s of silence (lost messages).
   The rate is (received - 1) / (last - first): the *receive* rate, with
   received/sent shown beside it, so drops are never hidden.
6. Steps 1-5 run five times per library, with new processes each time, in
   rounds (every library once per round, so that the runs a ratio compares
   are seconds apart, not minutes); the row is the run with the median rate
   (the five rates are in its detail).

Connection set-up and warm-up are outside the timed span. pyzmq runs twice:
with no high-water mark (nothing lost; the figure ours is judged against) and
with its default HWM of 1,000 (a PUB socket drops at its HWM, and the rate of
a subscriber that loses messages is measured while the publisher competes
with it for the CPU: see ``_pubsub``). pynng's buffers are raised to the
largest it accepts; it still drops. Losses are always reported.

The endpoints, roles and loops are those of ``_pubsub`` (shared with the
fan-out and the size sweep); this module holds the counts, targets and rows.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import _pubsub
from _util import PURE, US, US_PURE, failure, selected

PAYLOAD_SIZE = 100
SCENARIO = "pub/sub 100 B"

LIBRARIES = {
    # key: (display name, messages, time limit of the publisher in s)
    "yoton": (US, 300_000, 20.0),
    PURE: (US_PURE, 300_000, 20.0),
    "yoton2": ("yoton 2.2 (pyzo)", 30_000, 3.0),
    "zmq": ("pyzmq PUB/SUB, no HWM (lossless)", 300_000, 20.0),
    "zmq-default": ("pyzmq PUB/SUB, default HWM 1,000 (drops)", 300_000, 20.0),
    "nng": ("pynng pub0/sub0", 300_000, 20.0),
    "raw": ("raw socket loop", 300_000, 20.0),
}


#: Minimum ratio us/peer in the same run (issue 6: 2.x; issue 18: pyzmq,
#: judged against its lossless figure).
TARGETS = {"yoton2": 30.0, "zmq": 1.0}
#: Runs per library, each with fresh processes, in interleaved rounds; the
#: row is the run with the median rate. On a shared 2-core VM one run moves by
#: +-20 %, and the host's load drifts over minutes: a single run, or runs of
#: one library taken back to back, decide a ratio by luck.
REPEATS = 5


def _rate(fig: dict[str, Any]) -> float:
    got = fig["recv"][0]
    received, secs = got["received"], got["seconds"]
    return (received - 1) / secs if received > 1 and secs > 0 else 0.0


def median_run(figs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The run with the median rate, and the spread of all runs as text."""
    figs = sorted(figs, key=_rate)
    if len(figs) == 1:
        return figs[0], ""
    rates = ", ".join(f"{_rate(f):,.0f}" for f in figs)
    return figs[len(figs) // 2], f"median of {len(figs)} runs ({rates} msg/s)"


def _row(fig: dict[str, Any], spread: str) -> dict[str, Any]:
    got = fig["recv"][0]
    received = got["received"]
    sent = fig["sent"]["sent"]
    extra = _pubsub.drops(got, fig["sent"])
    detail = f"{received:,}/{sent:,}"
    if received != sent:
        detail += f" ({sent - received:,} lost)"
    if extra:
        detail += "; " + ", ".join(extra)
    detail += (
        f"; CPU s in {fig['wall']:.1f} s: publisher {fig['cpu'][0]:.2f}, "
        f"subscriber {fig['cpu'][1]:.2f}"
    )
    if spread:
        detail += f"; {spread}"
    return {
        "value": _rate(fig),
        "detail": detail,
        "received": received,
        "sent": sent,
        "send_rate": sent / fig["sent"]["seconds"] if fig["sent"]["seconds"] else 0.0,
    }


def run(opts: Namespace) -> list[dict[str, Any]]:
    """One row per library: the receive rate, received/sent, drops and CPU seconds."""
    quick = getattr(opts, "quick", False)
    only = getattr(opts, "only", None)
    plan = {}
    for lib, (display, n, limit) in LIBRARIES.items():
        if not selected(only, lib, display):
            continue
        if quick:
            n, limit = max(n // 10, 2000), min(limit, 2.0)
        plan[lib] = (display, n, limit)
    figs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in plan}
    failed: dict[str, Exception] = {}
    for _ in range(1 if quick else REPEATS):
        for lib, (_display, n, limit) in plan.items():
            if lib in failed:
                continue
            try:
                figs[lib].append(_pubsub.measure(lib, n, limit, size=PAYLOAD_SIZE))
            except Exception as exc:  # one broken peer must not hide the others
                failed[lib] = exc
    rows = []
    for lib, (display, _n, _limit) in plan.items():
        row: dict[str, Any] = {"scenario": SCENARIO, "library": display, "metric": "msg/s"}
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        if lib in failed:
            row.update(value=None, detail=failure(failed[lib]))
        else:
            row.update(_row(*median_run(figs[lib])))
        rows.append(row)
    return rows


SCENARIOS = [(SCENARIO, run)]
