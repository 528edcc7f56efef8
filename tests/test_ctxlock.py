"""The context's lock (``_ctxlock.ContextLock``): mutual exclusion, waiting, misuse.

Real threads throughout. The end-to-end check that numbering and queueing stay
one step under contention is ``test_context.py::
test_main_pubsub_multithreaded_senders_in_another_process`` (four threads
sending through one context; a receiver drops a package numbered out of order).
"""

from __future__ import annotations

import os
import threading

import pytest

from yoton_core._ctxlock import ContextLock
from yoton_core.testing import wait_for

THREADS = 4
ROUNDS = 3000


def _hammer(lock: ContextLock, counter: list[int], inline: bool) -> None:
    """Read-modify-write with a thread switch in the middle, under the lock."""
    free = lock.free
    for _ in range(ROUNDS):
        if inline:  # the way Context._send takes it
            try:
                free.pop()
            except IndexError:
                lock.wait()
            try:
                value = counter[0]
                os.sched_yield()
                counter[0] = value + 1
            finally:
                free.append(True)
                if lock.waiters:
                    lock.wake()
        else:
            with lock:
                value = counter[0]
                os.sched_yield()
                counter[0] = value + 1


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "with"])
def test_no_update_is_lost_under_contention(inline: bool) -> None:
    lock = ContextLock()
    counter = [0]
    threads = [
        threading.Thread(target=_hammer, args=(lock, counter, inline)) for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a thread is stuck (lost wake-up?)"
    assert counter[0] == THREADS * ROUNDS
    assert not lock.locked() and lock.waiters == 0 and len(lock.free) == 1


def test_a_waiter_gets_the_lock_when_it_is_released() -> None:
    lock = ContextLock()
    assert lock.acquire()
    got = threading.Event()

    def waiter() -> None:
        with lock:
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    wait_for(lambda: lock.waiters == 1, 10, "the waiter to block")
    assert not got.is_set()
    lock.release()
    assert got.wait(10)
    t.join(10)
    assert not lock.locked() and lock.waiters == 0


def test_acquire_without_blocking_or_with_a_timeout_fails_while_held() -> None:
    lock = ContextLock()
    with lock:
        assert lock.locked()
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0.01) is False
        assert lock.waiters == 0
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_releasing_an_unlocked_lock_is_an_error() -> None:
    lock = ContextLock()
    with pytest.raises(RuntimeError, match="unlocked ContextLock"):
        lock.release()
    assert len(lock.free) == 1  # no second token: mutual exclusion intact
    assert "unlocked" in repr(lock)
