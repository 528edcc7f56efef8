"""Waiting threads read their context's sockets themselves: :func:`borrow_wait`.

A thread about to block for yoton data -- ``Future.result()``,
``SubChannel.recv()``, a RepChannel worker -- takes its context's plain
sockets from the poller thread (``EPOLL_CTL_MOD`` to no events; the poller is
not woken for that), polls them together with its own
:class:`~._poller.Waker`, and reads and routes what arrives in its own thread
until what it waits for is there (see :mod:`._poller` for why, and for the
ownership rules of a :class:`~._poller.PolledSocket`).

It then **holds** them: a loop's next ``recv`` or ``result`` comes within
microseconds, and giving them back meant two ``epoll_ctl`` per wait and, worse,
a poller woken by whatever arrived in between, taking the GIL from the thread
to read it. The poller takes held sockets back once their holder has been
away :data:`~._poller.HOLD_IDLE`; another thread that waits takes over those of
a holder that is not waiting; a wait that ends by an exception (a
KeyboardInterrupt in the main thread) gives them back at once.

Spin, then park: a waiting thread polls without sleeping for a short while
first (:data:`SPIN_SECONDS`), adaptively (see :func:`borrow_wait`), and gives
its CPU to any thread that waits for one between two polls (``sched_yield``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _poller
from ._poller import Poller, _ThreadState

if TYPE_CHECKING:
    from ._context import Context
    from ._poller import Waker

__all__ = [
    "MAX_BORROW",
    "SPIN_FLOOR",
    "SPIN_MISSES",
    "SPIN_PER_WORK",
    "SPIN_PROBE",
    "SPIN_SECONDS",
    "borrow_wait",
    "give_back_held",
    "spin_for",
]

#: Borrow at most this many sockets (polling more is the poller's job).
MAX_BORROW = 16

_POLLIN = _poller._POLLIN


def _no_yield() -> None:  # pragma: no cover - every POSIX system has sched_yield
    pass


#: Called between two polls of a spin: lets a thread that waits for this CPU run.
_yield = getattr(os, "sched_yield", _no_yield)


def _spin_seconds() -> float:
    """The longest a borrowing thread polls before it sleeps (``YOTON_SPIN_US``).

    Spinning only pays where another core runs the peer meanwhile: 0 on a
    single CPU.
    """
    text = os.environ.get("YOTON_SPIN_US")
    if text is None:
        try:
            cpus = len(os.sched_getaffinity(0))  # the CPUs we may run on
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        return 250e-6 if cpus > 1 else 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"YOTON_SPIN_US must be a number of microseconds (0 turns spinning off), got {text!r}"
        ) from None
    if not value >= 0:
        raise ValueError(f"YOTON_SPIN_US must be >= 0, got {text!r}")
    return value * 1e-6


#: The longest a thread that borrowed sockets polls them before it blocks.
SPIN_SECONDS = _spin_seconds()
#: A spin lasts at most this many times the work the thread did since its
#: last wait (and at least SPIN_FLOOR): see :func:`spin_for`.
SPIN_PER_WORK = 8
#: The shortest spin: a wake-up from ``epoll_wait`` costs about this much CPU.
SPIN_FLOOR = 20e-6
#: A thread stops spinning after this many spins in a row ran out...
SPIN_MISSES = 3
#: ... and then spins only on every this-many-th wait, to see if it pays again.
SPIN_PROBE = 16


def spin_for(work: float, limit: float) -> float:
    """How long a thread that worked ``work`` seconds since its last wait may spin.

    Why in proportion to the work: a spin that ends with data is cheap where
    the thread is busy anyway (a subscriber draining a fast stream works
    ~100 us a chunk and waits ~80; a request/reply loop works ~20 us and its
    answer comes within ~40), and pure waste where it is not: a subscriber of
    5,000 messages a second works ~5 us a message and used to spin the other
    195 us, each spin ending with data, so it never stopped spinning (85-95 %
    of a core against ~10 % parked). Bounded by ``limit``
    (:data:`SPIN_SECONDS`) and by :data:`SPIN_FLOOR` from below.
    """
    return min(limit, max(SPIN_FLOOR, SPIN_PER_WORK * work))


def _take(context: Context, poller: Poller, st: _ThreadState) -> None:
    """Make ``st`` hold what it can of ``context``'s sockets (``st.waiting`` is set)."""
    held = st.held
    poll = st.poll
    if held:  # what we still hold from our last wait, unless taken back or closed
        for fd, r in list(held.items()):
            # Decided under the reader's lock: the poller may be taking it back
            # right now, having seen us away (not waiting yet) under that lock.
            # Read without it, we could keep a socket whose borrower it sets to
            # None a moment later: then the poller reads what we wait for.
            with r.lock:
                kept = r.borrower is st and not r.done
            if not kept:
                del held[fd]
                poll.unregister(fd)
    for r in context._readers:
        if held.get(r.fd) is r or r.done or len(held) >= MAX_BORROW:
            continue
        if r._poller is not poller:  # a socket of the parent process (fork)
            continue
        holder = r.borrower
        if holder is not None and holder.waiting:
            continue  # another thread waits on it: it reads for us too
        with r.lock:
            holder = r.borrower
            if r.done or (holder is not None and holder.waiting):
                continue
            r.borrower = st  # (the poller's, or taken over from a holder that is away)
            if holder is None:  # the poller stops watching it
                poller._watch(r, False)
                poller.lend(r)
        stale = held.pop(r.fd, None)  # a closed reader whose fd number was reused
        if stale is not None:
            poll.unregister(r.fd)
        held[r.fd] = r
        poll.register(r.fd, _POLLIN)


def _give_back(poller: Poller, st: _ThreadState) -> None:
    """Return every socket ``st`` holds to the poller."""
    held = st.held
    for fd, r in list(held.items()):
        with r.lock:
            if r.borrower is st:
                poller.give_back(r)
        st.poll.unregister(fd)
    held.clear()


def give_back_held() -> None:
    """The calling thread is about to block on something else than yoton data
    (the IO engine, a connection closing): return the sockets it holds.

    Else what it waits for may sit unread in a socket it holds until the poller
    takes it back (:data:`~._poller.HOLD_IDLE`): a NATS channel made right
    after a ``recv`` waits for the server's PONG, which arrives on the very
    socket this thread held (5 ms instead of 0.35 ms).
    """
    st = _poller._local.state
    poller = _poller._poller
    if st.held and not st.waiting and poller is not None and st.fork_gen == _poller._fork_gen:
        _give_back(poller, st)


def borrow_wait(
    context: Context,
    wakers: list[Waker],
    ready: Callable[[], object],
    timeout: float | None,
) -> bool | None:
    """Wait until ``ready()`` is true, reading ``context``'s sockets meanwhile.

    Args:
        context: Whose connections to read.
        wakers: The list that whoever makes ``ready()`` true calls ``wake()``
            on (e.g. ``Future._wakers``); this thread's waker is added for the
            time of the wait.
        ready: The condition waited for; called often, must be cheap.
        timeout: Seconds, or None for no limit.

    Returns:
        None if nothing could be borrowed (no plain sockets, all in use by
        threads that wait, or the caller is an IO thread itself): the caller
        waits its usual way. Otherwise ``bool(ready())`` at the end of the wait.
    """
    poller = _poller._poller
    st = _poller._local.state
    if poller is None or st.io:
        return None
    if st.fork_gen != _poller._fork_gen:
        st = _poller.thread_state()
    waker = st.waker
    assert waker is not None
    wfd = waker.fd
    poll = st.poll
    held = st.held
    waiting = ended = False
    st.waiting = True
    # Everything after the first borrow is inside ``try``: the sockets must go
    # back to the poller if the wait ends by an exception (a KeyboardInterrupt
    # in the main thread).
    try:
        _take(context, poller, st)
        if not held:
            ended = True
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        # Completers set their state first, then wake a snapshot of ``wakers``;
        # we add ours first, then look at the state: no wake-up is lost.
        wakers.append(waker)
        waiting = True
        waker.clear()
        # Spin, then park: poll without sleeping for a short while first. A
        # reply or the next request usually comes within it, and a thread
        # that did not sleep answers it without a wake-up (on the benchmark
        # machine: 190 -> 130 us per request/reply round trip). Only while it
        # pays: when other work keeps the CPUs busy, the peer is often not
        # running during our spin, and the spin only takes its CPU (loaded
        # machine: 614 us per round trip with spinning, 93-101 us without).
        # After SPIN_MISSES spins in a row that ran out, a thread parks at once,
        # and tries a spin again every SPIN_PROBE-th wait.
        #
        # A spin yields the CPU between two polls: where a thread waits for
        # this CPU -- often the very peer we wait for, queued behind us while
        # the other core is busy, or our own process's poller -- it runs now,
        # not when the spin has run out or the scheduler preempts us. On the
        # loaded 2-core benchmark machine the slowest round trips were made of
        # such waits, ~260 us each (one spin), while both processes shared one
        # core; yielding took req/rep p99 from 400-1,470 us to 200-310 us
        # (most runs) and the CPU per call from ~70 to ~43 us per side.
        # Where nobody waits, the yield returns at once.
        #
        # How long: in proportion to the work done since the last wait
        # (spin_for), so that a thread that waits far longer than it works
        # (a slow stream) runs out of spin, counts misses, and parks.
        spin = SPIN_SECONDS
        if spin:
            st.waits += 1
            if st.spin_misses >= SPIN_MISSES and st.waits % SPIN_PROBE:
                spin = 0.0
            else:
                now = time.monotonic()
                spin_end = now + spin_for(now - st.left, spin)
                if deadline is not None and deadline < spin_end:
                    spin_end = deadline
        while not ready():
            if spin:
                if time.monotonic() < spin_end:
                    events = poll.poll(0)
                    if not events:
                        _yield()
                        continue
                else:
                    spin = 0.0
                    if st.spin_misses < SPIN_MISSES:
                        st.spin_misses += 1
                    continue
            elif deadline is None:
                events = poll.poll()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                events = poll.poll(left * 1000.0)
            for fd, _ev in events:
                if fd == wfd:
                    waker.drain()
                    continue
                r = held.get(fd)
                if r is None:
                    continue
                with r.lock:
                    if not r.done and r.borrower is st:
                        r.read()
                    if r.done or r.borrower is not st:
                        poll.unregister(fd)
                        del held[fd]
        if spin:  # it came while we spun
            st.spin_misses = 0
        ended = True
        return bool(ready())
    finally:
        if waiting:
            try:
                wakers.remove(waker)
            except ValueError:  # pragma: no cover
                pass
        st.left = time.monotonic()
        st.waiting = False
        if not ended:
            _give_back(poller, st)
