"""The single timer thread behind every :class:`~yoton_core._events.Timer` and ``call_later``.

Why one thread: yoton creates timers freely (every ReqChannel has one), and a
thread per timer would be wasteful. Why a heap with lazy deletion: restarting or
stopping a timer must be O(log n) and must never disturb the other timers. The
2.x timer thread woke up on every restart and then fired whatever timer was
earliest, due or not (docs/protocol.md#differences-from-2x, item 7). Here the thread fires an entry
only when it is both *current* (the handle's sequence number still matches) and
*due* (``monotonic() >= deadline``), so neither a restart nor a spurious
condition wake-up can make anything fire early.

Nothing starts at import: the thread is created by the first :meth:`schedule`.
After ``os.fork()`` the child has no timer thread, so an at-fork hook resets the
state and, if timers were pending, starts a fresh thread in the child.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
import time
from collections.abc import Callable

from ._log import get_logger

__all__ = ["TimerHandle", "TimerScheduler", "scheduler"]

logger = get_logger("events")

# Rebuild the heap when more than this many entries are stale *and* they are
# the majority; keeps memory bounded for a timer restarted in a tight loop.
_COMPACT_MIN_STALE = 64


class TimerHandle:
    """One schedulable thing: a callback plus how (and whether) it repeats.

    The scheduler owns ``_seq`` and ``_deadline``; the owner may change
    ``interval`` and ``repeat`` at any time, which affects the next expiry.

    Attributes:
        callback: Called in the timer thread when the handle expires.
        interval: Seconds between expiries of a repeating handle (> 0).
        repeat: Whether to reschedule after firing.
    """

    __slots__ = ("callback", "interval", "repeat", "_seq", "_deadline")

    def __init__(
        self, callback: Callable[[], object], interval: float = 1.0, repeat: bool = False
    ) -> None:
        self.callback = callback
        self.interval = interval
        self.repeat = repeat
        self._seq = -1  # sequence number of the current heap entry; -1 = inactive
        self._deadline = 0.0

    @property
    def active(self) -> bool:
        """Whether the handle is scheduled (it will fire unless cancelled)."""
        return self._seq >= 0

    @property
    def deadline(self) -> float:
        """The ``time.monotonic()`` value of the next expiry, or 0.0 when inactive."""
        return self._deadline


class TimerScheduler:
    """A heap of ``(deadline, seq, handle)`` served by one lazily started daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._stale = 0  # entries in the heap that no longer match their handle
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped after fork so an inherited thread loop exits
        # What the thread is sleeping until (math.inf when idle), None while it
        # is busy; lets schedule() skip the notify when it would not matter.
        self._sleeping_until: float | None = None

    # -- public API ---------------------------------------------------------

    def schedule(self, handle: TimerHandle, delay: float) -> None:
        """(Re)schedule ``handle`` to fire ``delay`` seconds from now.

        A handle that is already scheduled just moves: its old heap entry
        becomes stale and is skipped when it reaches the top.
        """
        deadline = time.monotonic() + delay
        with self._cond:
            if handle._seq >= 0:
                self._stale += 1
            seq = next(self._counter)
            handle._seq = seq
            handle._deadline = deadline
            heapq.heappush(self._heap, (deadline, seq, handle))
            self._maybe_compact_locked()
            if self._thread is None:
                self._start_thread_locked()
            elif self._sleeping_until is not None and deadline < self._sleeping_until:
                self._cond.notify()

    def cancel(self, handle: TimerHandle) -> None:
        """Unschedule ``handle``; a no-op if it is not scheduled."""
        with self._cond:
            if handle._seq >= 0:
                self._stale += 1
                handle._seq = -1
                handle._deadline = 0.0
                self._maybe_compact_locked()

    def pending(self) -> int:
        """Number of scheduled handles (for tests and diagnostics)."""
        with self._cond:
            return len(self._heap) - self._stale

    # -- internals ----------------------------------------------------------

    def _maybe_compact_locked(self) -> None:
        if self._stale > _COMPACT_MIN_STALE and self._stale * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2]._seq == e[1]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _start_thread_locked(self) -> None:
        thread = threading.Thread(
            target=self._run, args=(self._generation,), name="yoton-timers", daemon=True
        )
        self._thread = thread
        thread.start()

    def _run(self, generation: int) -> None:
        while True:
            with self._cond:
                handle = self._next_due_locked(generation)
            if handle is None:
                return
            try:
                handle.callback()
            except Exception:
                logger.exception("Exception in timer callback %r", handle.callback)

    def _next_due_locked(self, generation: int) -> TimerHandle | None:
        """Wait until a current entry is due, pop it and reschedule it if it repeats.

        Returns None only when this thread belongs to an older generation (a
        forked child started a new thread).
        """
        cond = self._cond
        while self._generation == generation:
            if not self._heap:
                self._sleeping_until = math.inf
                cond.wait()
                self._sleeping_until = None
                continue
            deadline, seq, handle = self._heap[0]
            if handle._seq != seq:  # stale: restarted or cancelled
                heapq.heappop(self._heap)
                self._stale -= 1
                continue
            now = time.monotonic()
            if deadline > now:
                self._sleeping_until = deadline
                cond.wait(min(deadline - now, threading.TIMEOUT_MAX))
                self._sleeping_until = None
                continue  # whatever woke us, re-check: nothing fires early
            heapq.heappop(self._heap)
            if handle.repeat:
                interval = handle.interval
                # Phase-locked to the original deadline, so no drift; if we are
                # more than one interval late, skip the missed ticks.
                nxt = deadline + interval
                if nxt <= now:
                    nxt += interval * (math.floor((now - nxt) / interval) + 1)
                    if nxt <= now:  # float rounding
                        nxt = now + interval
                new_seq = next(self._counter)
                handle._seq = new_seq
                handle._deadline = nxt
                heapq.heappush(self._heap, (nxt, new_seq, handle))
            else:
                handle._seq = -1
                handle._deadline = 0.0
            return handle
        return None

    # -- fork safety --------------------------------------------------------

    def _before_fork(self) -> None:
        # Hold the lock across fork() so the child never sees a half-updated heap.
        self._cond.acquire()

    def _after_fork_in_parent(self) -> None:
        self._cond.release()

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists in the child: the timer thread is gone
        # and the (copied) lock is held. Start over with fresh primitives.
        self._cond = threading.Condition(threading.Lock())
        self._generation += 1
        self._thread = None
        self._sleeping_until = None
        if any(h._seq == s for _, s, h in self._heap):
            with self._cond:
                self._start_thread_locked()


scheduler = TimerScheduler()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=scheduler._before_fork,
        after_in_parent=scheduler._after_fork_in_parent,
        after_in_child=scheduler._after_fork_in_child,
    )
