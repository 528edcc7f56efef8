"""A snapshot of the process-wide IO threads: :func:`io_statistics`.

Every context of a process shares two IO threads
(docs/performance.md#how-the-io-is-organised): the trio engine and the
poller. Which of them, or which waiting user thread, reads a socket decides
where the CPU goes; these counters show it without a profiler. Taking the
snapshot starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _borrow, _engine, _poller

__all__ = ["IOStatistics", "io_statistics"]


@dataclass(frozen=True)
class IOStatistics:
    """The IO threads of this process, as :func:`io_statistics` saw them.

    Attributes:
        engine_running: The trio engine thread has started.
        tickers: Objects the engine calls every tick (connections for their
            heartbeats and time-outs, sync-mode subscribers, request/reply
            channels with requests under way).
        ticks: How often the engine's ticker ran since it started. It runs
            when a ticker needs it (an idle connection: for each heartbeat,
            5 a second), at most every 50 ms, at least once a second.
        poller_running: The poller thread has started (with the first
            established tcp or unix connection).
        polled_sockets: Sockets read outside trio: by the poller, or by a
            thread that waits for data and borrows them.
        poller_reads: Reads the poller thread made since it started.
        borrows: Times a waiting thread (``recv``, ``Future.result``, a
            RepChannel worker) took one of its context's sockets from the
            poller to read it itself (it holds it for its next wait, until it
            stays away). Counted without a lock: a close figure, not an exact
            one, when many threads borrow at once.
        spin_us: The longest a borrowing thread polls before it sleeps
            (``YOTON_SPIN_US``; 0 on a single CPU).
    """

    engine_running: bool
    tickers: int
    ticks: int
    poller_running: bool
    polled_sockets: int
    poller_reads: int
    borrows: int
    spin_us: float


def io_statistics() -> IOStatistics:
    """Return a snapshot of the process-wide IO threads (see :class:`IOStatistics`)."""
    engine = _engine._engine
    poller = _poller._poller
    eng = engine.statistics() if engine is not None else {"tickers": 0, "ticks": 0, "running": 0}
    pol = poller.statistics() if poller is not None else {"sockets": 0, "reads": 0, "borrows": 0}
    return IOStatistics(
        engine_running=bool(eng["running"]),
        tickers=eng["tickers"],
        ticks=eng["ticks"],
        poller_running=poller is not None and poller._thread is not None,
        polled_sockets=pol["sockets"],
        poller_reads=pol["reads"],
        borrows=pol["borrows"],
        spin_us=_borrow.SPIN_SECONDS * 1e6,
    )
