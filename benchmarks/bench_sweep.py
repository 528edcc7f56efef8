"""Pub/sub throughput against message size, 2 B ... 16 MiB, for every library.

Libraries: this project over tcp, unix and inproc; yoton 2.x (pyzo's copy);
pyzmq PUB/SUB; pynng pub0/sub0; and a raw-socket loop (4-byte length prefix,
small frames batched into 64 KiB writes, large ones sent as they are and
received with ``recv_into`` a buffer of the frame's size) as the physical
reference. All over TCP on 127.0.0.1 unless said otherwise.

Procedure, one publisher/subscriber pair per library, each role in its own
process (inproc: both in one process, the subscriber in a thread), set up
once and then run through the sizes one *phase* at a time:

1. The subscriber binds and reports its port; the publisher connects and
   sends warm-up messages until the subscriber has seen one (slow-joiner
   safe); warm-up and set-up are not timed.
2. For each size the runner arms the subscriber for phase ``k`` and then
   tells the publisher to send ``n`` messages of that size tagged ``M<k>``
   (or as many as it manages within a time limit), followed by end markers
   ``E<k>`` until the phase is over.
3. The subscriber counts the ``M<k>`` messages and times the first to the
   last; it stops at ``n``, at an end marker, after 2 s of silence or at the
   phase deadline. Messages of other phases (late end markers) are ignored.
   The figure is the receive rate in MB/s (10^6 bytes per second); received
   and sent counts go beside it, so drops are shown, never hidden.

The 1 MiB and 16 MiB phases are the "bandwidth" tables; they run three
times each (after the sweep) and the tables show the median phase. The whole
sweep is the plot ``throughput.png`` (log-log, MB/s against size).

The endpoints and the counting and sending loops are those of ``_pubsub``
(shared with ``bench_pubsub`` and ``bench_fanout``); this module holds the
phases: the roles that run them, the plan, and the rows.
"""

from __future__ import annotations

import threading
import time
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from _pubsub import (
    IDLE_TIMEOUT,
    Receiver,
    Sender,
    count_messages,
    drops,
    payload,
    receiver,
    send_counted,
    send_until,
    sender,
    start_pubsub,
    wait_warm,
)
from _util import US, Commands, failure, roles, say, say_json, selected, start_role

KiB = 1024
MiB = 1024 * KiB
#: The sizes of the sweep: powers of eight from 2 B, plus 1 MiB and 16 MiB.
SIZES = [2, 16, 128, KiB, 8 * KiB, 64 * KiB, 512 * KiB, MiB, 4 * MiB, 16 * MiB]
SWEEP = "pub/sub throughput against message size (MB/s)"
#: The sizes of the bandwidth tables, and how many phases of each are run.
BANDWIDTH_SIZES = [MiB, 16 * MiB]
BANDWIDTH_REPEATS = 3

LIBRARIES = {
    # key: (display name, byte budget per phase, max messages, time limit per phase in s)
    "yoton-tcp": (US, 384 * MiB, 150_000, 1.5),
    "yoton-unix": ("yoton 3 over unix", 384 * MiB, 150_000, 1.5),
    "yoton-inproc": ("yoton 3 over inproc (one process, by reference)", 384 * MiB, 150_000, 1.5),
    "yoton2": ("yoton 2.2 (pyzo)", 48 * MiB, 10_000, 1.5),
    "zmq": ("pyzmq PUB/SUB, no HWM (lossless)", 384 * MiB, 150_000, 1.5),
    "nng": ("pynng pub0/sub0", 384 * MiB, 150_000, 1.5),
    "raw": ("raw socket loop", 384 * MiB, 150_000, 1.5),
}


def phase_count(lib: str, size: int, quick: bool) -> int:
    """How many messages one phase sends: bounded by bytes and by count."""
    _, budget, most, _ = LIBRARIES[lib]
    if quick:
        budget, most = budget // 4, most // 5
    least = 6 if size >= 4 * MiB else 16
    return max(least, min(most, budget // size))


def head(tag: bytes, phase: int) -> bytes:
    """The first two bytes of a message of phase ``phase``: its tag, then the phase."""
    return tag + bytes([phase])


# -- the two halves of one phase (shared by the process roles and inproc) ----------------


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The counters of ``after`` less those of ``before`` (drops of this phase only)."""
    return {
        k: v - before.get(k, 0) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in after.items()
    }


def receive_phase(r: Receiver, phase: int, n: int, deadline_s: float) -> dict[str, Any]:
    """Count ``M<phase>`` messages; stop at n, an end marker, silence or the deadline.

    Messages of another phase (late end markers of the previous one) are skipped.
    """
    before = r.stats()
    result = count_messages(
        r.reader(IDLE_TIMEOUT),
        n,
        head(b"M", phase),
        head(b"E", phase),
        deadline=time.monotonic() + deadline_s,
    )
    result.update(stats_delta(before, r.stats()))
    return result


def send_phase(s: Sender, phase: int, size: int, n: int, time_limit: float) -> dict[str, Any]:
    """Send ``n`` messages of ``size`` bytes tagged ``M<phase>`` (or what fits the limit)."""
    step = 1000 if size < 64 * KiB else 1
    return send_counted(s, payload(head(b"M", phase), size), n, time_limit, step)


def send_end_markers(s: Sender, phase: int, stop: Callable[[], bool]) -> None:
    """End markers of ``phase`` until ``stop()``: a subscriber short of n stops at one."""
    send_until(s, head(b"E", phase), stop, 0.02)


# -- roles (each in its own process) ---------------------------------------------------


def subscriber(lib: str) -> None:
    """Bind, wait for warm-up (READY), then run each phase the runner arms."""
    # Our queues sized to the largest phase, as pyzmq's (no HWM) in this table.
    r = receiver(lib, large=True, run=max(most for _d, _b, most, _t in LIBRARIES.values()))
    say("PORT", r.bind())
    if not wait_warm(r):
        say_json("RESULT", {"error": "no warm-up message arrived"})
        return
    say("READY")
    cmds = Commands()
    phase = 0
    while True:
        line = cmds.wait(f"ARM{phase}", 600)
        if line == "DONE":
            break
        n, deadline_s = line.split()
        say("ARMED")
        say_json("RESULT", receive_phase(r, phase, int(n), float(deadline_s)))
        phase += 1
    r.close()


def publisher(lib: str, ports: list[int]) -> None:
    """Connect, send warm-up until GO, then each phase's messages and end markers."""
    s = sender(lib)
    for port in ports:
        s.connect(port)
    say("CONNECTED")
    cmds = Commands()
    send_until(s, head(b"W", 255), lambda: cmds.seen("GO"), 0.002)
    phase = 0
    while True:
        line = cmds.wait(f"SEND{phase}", 600)
        if line == "DONE":
            break
        size, n, limit = line.split()
        before = s.stats()
        result = send_phase(s, phase, int(size), int(n), float(limit))
        result.update(stats_delta(before, s.stats()))
        say_json("SENT", result)

        def stopped(phase: int = phase) -> bool:
            return cmds.seen(f"STOP{phase}") or cmds.seen("EOF")

        send_end_markers(s, phase, stopped)
        phase += 1
    s.close()


def inproc_pair(plan: list[tuple[int, int, float, float]]) -> None:
    """Both ends in this process: the subscriber in a thread, the publisher here."""
    r = receiver("yoton-inproc", large=True, run=LIBRARIES["yoton-inproc"][2])
    port = r.bind()
    s = sender("yoton-inproc")
    s.connect(port)
    ready = threading.Event()

    def warm_up() -> None:
        if wait_warm(r):
            ready.set()

    t = threading.Thread(target=warm_up)
    t.start()
    send_until(s, head(b"W", 255), lambda: ready.is_set() or not t.is_alive(), 0.002)
    t.join()
    results = []
    for phase, (size, n, limit, deadline_s) in enumerate(plan):
        got: dict[str, Any] = {}
        reader = threading.Thread(
            target=lambda p=phase, k=n, d=deadline_s, out=got: out.update(receive_phase(r, p, k, d))
        )
        reader.start()
        sent = send_phase(s, phase, size, n, limit)
        stop = threading.Event()
        ender = threading.Thread(target=send_end_markers, args=(s, phase, stop.is_set))
        ender.start()
        reader.join()
        stop.set()
        ender.join()
        results.append({"sent": sent, "recv": got})
    say_json("RESULTS", results)
    s.close()
    r.close()


# -- runner side -----------------------------------------------------------------------


def phase_sizes(quick: bool) -> list[int]:
    """The size of each phase: the sweep, then the bandwidth sizes again.

    The 1 MiB and 16 MiB phases are short (a few hundred MB), so one of them
    moves by +-30 % on a shared VM; they run :data:`BANDWIDTH_REPEATS` times
    and their figure is the median phase.
    """
    return SIZES + BANDWIDTH_SIZES * ((1 if quick else BANDWIDTH_REPEATS) - 1)


def plan_for(lib: str, quick: bool) -> list[tuple[int, int, float, float]]:
    """(size, n, publisher time limit, subscriber deadline) per phase."""
    limit = LIBRARIES[lib][3] * (0.5 if quick else 1.0)
    return [
        (size, phase_count(lib, size, quick), limit, limit + 8.0) for size in phase_sizes(quick)
    ]


def measure(lib: str, quick: bool) -> list[dict[str, Any]]:
    """Run the whole sweep for ``lib``; return one {sent, recv} per size."""
    plan = plan_for(lib, quick)
    if lib == "yoton-inproc":
        with roles() as started:
            pair = start_role("bench_sweep", "inproc_pair", plan, name="inproc pair")
            started.append(pair)
            return pair.expect_json("RESULTS", 300)
    out = []
    with roles() as started:
        pub, (sub,) = start_pubsub(started, "bench_sweep", lib, (), ())
        pub.send("GO")
        for phase, (size, n, limit, deadline_s) in enumerate(plan):
            sub.send(f"ARM{phase} {n} {deadline_s}")
            sub.expect("ARMED")
            pub.send(f"SEND{phase} {size} {n} {limit}")
            sent = pub.expect_json("SENT", limit + 120)
            got = sub.expect_json("RESULT", deadline_s + IDLE_TIMEOUT + 30)
            pub.send(f"STOP{phase}")
            out.append({"sent": sent, "recv": got})
        sub.send(f"ARM{len(plan)} DONE")
        pub.send(f"SEND{len(plan)} DONE")
    return out


def figure(size: int, fig: dict[str, Any]) -> tuple[float | None, str]:
    """(MB/s or None, detail with received/sent and drops) of one phase."""
    received, secs = fig["recv"].get("received", 0), fig["recv"].get("seconds", 0.0)
    sent = fig["sent"]["sent"]
    value = (received - 1) * size / secs / 1e6 if received > 1 and secs > 0 else None
    detail = f"{received:,}/{sent:,}"
    if received != sent:
        detail += f" ({sent - received:,} lost or late; {fig['recv'].get('end')})"
    detail += "".join(f"; {d}" for d in drops(fig["recv"], fig["sent"]))
    return value, detail


def median_phase(runs: list[tuple[float | None, str]]) -> tuple[float | None, str]:
    """The phase with the median figure of ``runs`` (one or more phases of one size).

    A phase without a figure counts as the slowest. With several phases the
    detail ends with all their figures.
    """
    if len(runs) == 1:
        return runs[0]
    ranked = sorted(runs, key=lambda run: -1.0 if run[0] is None else run[0])
    value, detail = ranked[len(ranked) // 2]
    figures = ", ".join("-" if v is None else f"{v:,.0f}" for v, _ in ranked)
    return value, f"{detail}; median of {len(runs)} phases ({figures} MB/s)"


def size_label(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB} MiB"
    if size >= KiB:
        return f"{size // KiB} KiB"
    return f"{size} B"


#: Targets on the bandwidth tables: (scenario size, peer key) -> minimum ratio us/peer.
TARGETS = {(16 * MiB, "raw"): 0.7}


def bandwidth_row(
    size: int, lib: str, display: str, value: float | None, detail: str, *, measured: bool = True
) -> dict[str, Any]:
    """A row of the bandwidth table of ``size``: one phase of the sweep.

    A library whose sweep failed (``measured=False``) gets neither ``no_ratio``
    nor its target: the row says only why it has no figure.
    """
    row: dict[str, Any] = {
        "scenario": f"pub/sub bandwidth {size_label(size)}",
        "library": display,
        "metric": "MB/s",
        "value": value,
        "detail": detail,
    }
    if measured and lib == "yoton-inproc":
        row["no_ratio"] = True  # handed over by reference: no ratio against copies
    if measured and (size, lib) in TARGETS:
        row["target_ratio"] = TARGETS[(size, lib)]
    return row


def run(opts: Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(opts, "quick", False))
    only = getattr(opts, "only", None)
    rows: list[dict[str, Any]] = []
    bandwidth: dict[int, list[dict[str, Any]]] = {MiB: [], 16 * MiB: []}
    for lib, (display, *_rest) in LIBRARIES.items():
        if not selected(only, lib, display):
            continue
        row: dict[str, Any] = {"scenario": SWEEP, "library": display, "metric": "MB/s"}
        try:
            figs = measure(lib, quick)
        except Exception as exc:  # one broken peer must not hide the others
            row.update(value=None, detail=failure(exc))
            rows.append(row)
            for size, group in bandwidth.items():
                group.append(bandwidth_row(size, lib, display, None, row["detail"], measured=False))
            continue
        series: dict[int, float | None] = {}
        details: dict[int, str] = {}
        phases: dict[int, list[tuple[float | None, str]]] = {}
        for size, fig in zip(phase_sizes(quick), figs, strict=True):
            phases.setdefault(size, []).append(figure(size, fig))
        for size, runs in phases.items():
            series[size], details[size] = median_phase(runs)
        row.update(value=series.get(16 * MiB), series=series, series_detail=details)
        if lib == "yoton-inproc":
            row["by_reference"] = True  # drawn in its own panel (run.plot)
        rows.append(row)
        for size, group in bandwidth.items():
            group.append(bandwidth_row(size, lib, display, series[size], details[size]))
    for group in bandwidth.values():
        rows.extend(group)
    return rows


SCENARIOS = [(SWEEP, run)]
