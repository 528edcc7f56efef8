"""The context's lock: a mutex that costs one deque operation when free.

Every package a context sends is numbered and queued under its context's lock,
and every batch it receives is routed under it (``Context._send``,
``Router._route``): numbering and queueing must be one step, or a receiver
would see a later number first and drop the earlier package as a duplicate.
The lock is nearly always free when taken. CPython's ``Lock.acquire`` still
parses its arguments and reads the clock on every call: on Python 3.11 an
acquire and release cost about 900 instructions, 9 % of a whole ``pub.send``,
and measured 12-17 % of the publisher's throughput (pub/sub 100 B).

:class:`ContextLock` keeps its state in a deque holding one token while the
lock is free. ``collections.deque`` documents its appends and pops as
thread-safe (atomic), so taking the token is ``free.pop()`` (IndexError: the
lock is held) and giving it back is ``free.append(True)``. Only a thread that
finds the lock held goes the slow way, waiting on a condition; a releaser
wakes one waiter when there is one. The hot paths (``Context._send`` in
``_context.py``, ``Router._route`` in ``_routing.py``) use
:attr:`ContextLock.free` and :meth:`ContextLock.wait` / :meth:`ContextLock.wake`
directly (a Python-level ``acquire()`` call would cost what the lock saves);
everything else uses ``with lock:``.

Like ``threading.Lock`` it is not re-entrant (the context never takes its lock
twice in one thread: work that could send is done after releasing it) and not
fair (a thread on the fast path may overtake a woken waiter, which then waits
again).
"""

from __future__ import annotations

import collections
import threading
import time

__all__ = ["ContextLock"]


class ContextLock:
    """A non-reentrant mutex whose uncontended acquire/release are one deque op each."""

    __slots__ = ("free", "waiters", "_cond")

    def __init__(self) -> None:
        #: One token while the lock is free: ``pop()`` takes it, ``append(True)``
        #: gives it back.
        self.free: collections.deque[bool] = collections.deque((True,))
        #: Threads in :meth:`wait`; a releaser calls :meth:`wake` when non-zero.
        #: (A waiter counts itself before it looks for the token, a releaser
        #: puts the token back before it reads this: no wake-up is lost.)
        self.waiters = 0
        self._cond = threading.Condition(threading.Lock())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; as ``threading.Lock.acquire``."""
        try:
            self.free.pop()
            return True
        except IndexError:
            if not blocking:
                return False
        return self.wait(timeout)

    def wait(self, timeout: float = -1) -> bool:
        """The slow path of :meth:`acquire`: block until the token comes back.

        Returns:
            False if ``timeout`` (seconds, < 0 for none) passed first.
        """
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with self._cond:
            self.waiters += 1
            try:
                while True:
                    try:
                        self.free.pop()
                        return True
                    except IndexError:
                        pass
                    if deadline is None:
                        self._cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        self._cond.wait(left)
            finally:
                self.waiters -= 1

    def release(self) -> None:
        """Give the lock back (any thread may, as with ``threading.Lock``)."""
        if self.free:
            raise RuntimeError("release of an unlocked ContextLock")
        self.free.append(True)
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        """Wake one thread in :meth:`wait` (after the token was put back)."""
        with self._cond:
            self._cond.notify()

    def locked(self) -> bool:
        return not self.free

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<ContextLock {state}, {self.waiters} waiting>"
