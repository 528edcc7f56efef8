"""Reading plain sockets outside trio: one poller thread, and threads that borrow.

Why not trio's ``wait_readable``: measured on the 2-core benchmark machine, one
trio wake-up costs 50-70 µs of CPU, and a request/reply round trip needs one
in each process, each followed by a hand-off to the thread that waits for the
data. Connections whose stream is a plain socket (tcp, unix) are therefore read
here once established; trio keeps everything that is not per-message work
(accepting, connecting, handshakes, TLS, batched writes, timers).

Who reads a socket:

* Normally the **poller**: one daemon thread per process (``yoton-poller``)
  waiting in a level-triggered ``select.epoll`` on every registered socket. It
  reads a chunk and hands it to the connection, which decodes it and routes the
  packages (:meth:`Context._route`) in this thread.
* A thread about to block for yoton data -- ``Future.result()``,
  ``SubChannel.recv()``, a RepChannel worker -- **borrows** the sockets of its
  context (:func:`borrow_wait`): it takes them out of the poller's set
  (``EPOLL_CTL_MOD`` to no events; the poller is not woken for that), polls
  them itself together with a per-thread :class:`Waker`, and reads and routes
  what arrives in its own thread until what it waits for is there. Then it
  gives them back (``EPOLL_CTL_MOD`` to ``EPOLLIN``: data that came meanwhile is
  reported to the poller at once). The reply to a request is so read by the
  thread that waits for it, with no hand-off between threads and no transfer of
  the GIL; a subscriber that keeps up reads its own socket like a plain loop.

Ownership: each :class:`SocketReader` has a lock held while reading, decoding
and routing one chunk, so one stream is decoded in order by one thread at a
time; ``borrower`` (set under that lock) says which thread may read it. Lock
order is reader lock, then context lock; nothing holding a context lock ever
takes a reader lock. Whatever wakes a waiter (a reply routed by another thread,
a cancel, a timer, ``close()``) also calls the wakers registered on the object
waited for, so a borrowing thread never sleeps through its own completion.

Where ``select.epoll`` does not exist the connections stay on trio's receive
loop (:attr:`StreamConnection.poll_reads`), and nothing is ever borrowed.
"""

from __future__ import annotations

import os
import select
import signal
import threading

from ._log import get_logger

try:  # the C function: signal.pthread_sigmask converts every mask to enums
    from _signal import pthread_sigmask as _sigmask  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not POSIX
    _sigmask = None
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import Context

__all__ = [
    "AVAILABLE",
    "Poller",
    "SocketReader",
    "Waker",
    "borrow_wait",
    "get_poller",
    "in_io_role",
]

logger = get_logger()

AVAILABLE = hasattr(select, "epoll") and hasattr(select, "poll")

#: Bytes asked for per read while the stream carries small packages.
CHUNK = 65536
#: Upper bound of one read while a large payload is being received.
MAX_CHUNK = 64 << 20
#: Borrow at most this many sockets (polling more is the poller's job).
MAX_BORROW = 16


def _spin_seconds() -> float:
    """How long a borrowing thread polls before it sleeps (``YOTON_SPIN_US``).

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


#: Seconds a thread that borrowed sockets polls them before it blocks.
SPIN_SECONDS = _spin_seconds()
#: A thread stops spinning after this many spins in a row ran out...
SPIN_MISSES = 3
#: ... and then spins only on every this-many-th wait, to see if it pays again.
SPIN_PROBE = 16

_EPOLLIN = getattr(select, "EPOLLIN", 1)
_POLLIN = getattr(select, "POLLIN", 1)
_EVENTFD = hasattr(os, "eventfd")
_SIGMASK = _sigmask is not None
#: Asynchronous signals, which our threads leave to the user's (blocking the
#: synchronous ones, such as SIGSEGV, would only hide faults).
_ASYNC_SIGNALS = {
    int(getattr(signal, name))
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGCHLD",
        "SIGWINCH",
        "SIGIO",
        "SIGPIPE",
    )
    if hasattr(signal, name)
}
_main_ident = threading.main_thread().ident


class Waker:
    """A file descriptor that another thread makes readable (one per thread)."""

    __slots__ = ("fd", "_wfd", "_owner", "woken")

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        #: Set before the fd is made readable; lets :meth:`drain` skip a
        #: system call in the usual case (nobody woke us).
        self.woken = False
        if _EVENTFD:
            self.fd = self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - Linux has eventfd
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)

    def wake(self) -> None:
        """Make :attr:`fd` readable; any thread, never blocks."""
        if threading.get_ident() == self._owner:
            return  # the owner is not asleep: it looks at its condition next
        self.woken = True
        try:
            if _EVENTFD:
                os.eventfd_write(self._wfd, 1)
            else:  # pragma: no cover
                os.write(self._wfd, b"\0")
        except OSError:  # full (already awake) or closed
            pass

    def clear(self) -> None:
        """Forget earlier wake-ups (skips the system call when there were none)."""
        if self.woken:
            self.drain()

    def drain(self) -> None:
        """Make :attr:`fd` unreadable again (after poll reported it readable)."""
        self.woken = False  # (a wake after this makes the fd readable again)
        try:
            if _EVENTFD:
                os.eventfd_read(self.fd)
            else:  # pragma: no cover
                os.read(self.fd, 4096)
        except OSError:  # nothing to drain
            pass

    def close(self) -> None:
        for fd in {self.fd, self._wfd}:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:  # the thread that owned it ended
        self.close()


class _ThreadState(threading.local):
    """Per thread: its waker, its poll object, and whether it is doing IO."""

    def __init__(self) -> None:
        self.waker: Waker | None = None
        self.poll: Any = None
        self.fork_gen = -1
        self.io = 0  # > 0 while this thread reads and routes for yoton
        # Adaptive spinning (borrow_wait): spins in a row that ran out before
        # what we waited for came, and waits since the last probe.
        self.spin_misses = 0
        self.waits = 0


_state = _ThreadState()
_fork_gen = 0


def in_io_role() -> bool:
    """True while the calling thread reads and routes packages (poller or borrower).

    Code reached from routing must not block waiting for the network there
    (e.g. for a congested queue): the thread it would wait for may be itself.
    """
    return _state.io > 0


class SocketReader:
    """The read side of one connection's plain socket.

    Args:
        conn: The connection's link (:class:`~._stream_link.StreamLink`):
            ``conn._receive(data)`` decodes and routes a chunk and returns
            False when the connection must end; ``conn._receive_end(exc)`` is
            told once why reading stopped.
        sock: The connected, non-blocking socket.
    """

    __slots__ = ("conn", "sock", "fd", "lock", "borrower", "done", "_poller", "_receive")

    def __init__(self, conn: Any, sock: Any, poller: Poller) -> None:
        self.conn = conn
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.borrower: _ThreadState | None = None
        self.done = False
        self._poller = poller
        self._receive = conn._receive

    def read(self) -> None:
        """Read one chunk and route it (caller holds :attr:`lock`, not done)."""
        conn = self.conn
        view = None
        size = CHUNK
        if conn._decoder._head is not None:  # inside a payload
            view = conn._decoder.recv_buffer()
            if view is None:
                size = conn._read_size()
        main = _SIGMASK and threading.get_ident() == _main_ident
        if main:
            # A KeyboardInterrupt between reading and routing would lose what
            # was read: signals wait until the chunk is routed.
            old = _sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
        _state.io += 1
        try:
            try:
                if view is None:
                    data = self.sock.recv(size)
                    got = len(data)
                else:  # a large payload: straight into its own bytes object
                    got = self.sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return  # another thread read it first, or a spurious wake-up
            except OSError as exc:
                self._finish(exc)
                return
            if not got:
                self._finish(None, eof=True)
                return
            try:
                ok = self._receive(data) if view is None else conn._receive_filled(got)
            except Exception as exc:  # a routing bug must not kill the reading thread
                logger.exception("error while routing packages of %r", self.conn)
                self._finish(exc)
            else:
                if not ok:
                    self._finish(None)
        finally:
            _state.io -= 1
            if main:
                _sigmask(signal.SIG_SETMASK, old)

    def _finish(self, exc: BaseException | None, eof: bool = False) -> None:
        self.done = True
        self._poller.remove(self)
        self.conn._receive_end(exc, eof)

    def stop(self) -> None:
        """No thread reads the socket after this returns (any thread but a reader)."""
        with self.lock:
            self.done = True
        self._poller.remove(self)


class Poller:
    """The process-wide poller thread (see the module docstring)."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._readers: dict[int, SocketReader] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.ident: int | None = None
        self._reads = 0
        self._borrows = 0

    def add(self, reader: SocketReader) -> None:
        """Start reading ``reader``'s socket."""
        with self._lock:
            self._readers[reader.fd] = reader
            self._ep.register(reader.fd, _EPOLLIN)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="yoton-poller", daemon=True)
                self._thread.start()

    def remove(self, reader: SocketReader) -> None:
        with self._lock:
            if self._readers.get(reader.fd) is reader:
                del self._readers[reader.fd]
                try:
                    self._ep.unregister(reader.fd)
                except (OSError, ValueError):  # already closed
                    pass

    def _watch(self, reader: SocketReader, on: bool) -> None:
        """Let the poller watch ``reader`` or not (caller holds ``reader.lock``)."""
        try:
            self._ep.modify(reader.fd, _EPOLLIN if on else 0)
        except (OSError, ValueError):  # removed meanwhile
            pass

    def _run(self) -> None:
        self.ident = threading.get_ident()
        if _SIGMASK:  # signals are for the user's threads
            _sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
        poll = self._ep.poll
        readers = self._readers
        while True:
            try:
                events = poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except (OSError, ValueError):  # pragma: no cover - epoll closed (fork)
                return
            for fd, _ev in events:
                r = readers.get(fd)
                if r is None:
                    continue
                with r.lock:
                    if r.done or r.borrower is not None:
                        continue
                    self._reads += 1
                    r.read()

    def statistics(self) -> dict[str, int]:
        return {"sockets": len(self._readers), "reads": self._reads, "borrows": self._borrows}


_poller: Poller | None = None
_poller_lock = threading.Lock()


def get_poller() -> Poller:
    """The process-wide poller (its thread starts with the first socket)."""
    global _poller
    p = _poller
    if p is None:
        with _poller_lock:
            if _poller is None:
                _poller = Poller()
            p = _poller
    return p


def _after_fork_in_child() -> None:
    global _poller, _poller_lock, _fork_gen, _main_ident
    _poller = None  # the parent's epoll set is the parent's; its thread is gone
    _poller_lock = threading.Lock()
    _fork_gen += 1
    _main_ident = threading.main_thread().ident  # the forking thread, now


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _thread_state() -> _ThreadState:
    st = _state
    if st.fork_gen != _fork_gen:
        if st.waker is not None and st.fork_gen >= 0:
            st.waker.close()  # the parent's copy stays open in the parent
        st.waker = Waker()
        st.poll = select.poll()
        st.fork_gen = _fork_gen
    return st


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
        None if nothing could be borrowed (no plain sockets, all borrowed by
        other threads, or the caller is an IO thread itself): the caller waits
        its usual way. Otherwise ``bool(ready())`` at the end of the wait.
    """
    if _poller is None or _state.io:
        return None
    poller = _poller
    st = _state
    if st.fork_gen != _fork_gen:
        st = _thread_state()
    waker = st.waker
    assert waker is not None
    wfd = waker.fd
    poll = st.poll
    taken: dict[int, SocketReader] = {}
    waiting = False
    # Everything after the first borrow is inside ``try``: the sockets must go
    # back to the poller whatever happens (a KeyboardInterrupt in the main thread).
    try:
        for r in context._readers:
            if r.borrower is not None or r.done or len(taken) >= MAX_BORROW:
                continue
            with r.lock:
                if r.done or r.borrower is not None:
                    continue
                r.borrower = st
                poller._watch(r, False)
            taken[r.fd] = r
            poll.register(r.fd, _POLLIN)
        if not taken:
            return None
        poller._borrows += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        poll.register(wfd, _POLLIN)
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
        spin = SPIN_SECONDS
        if spin:
            st.waits += 1
            if st.spin_misses >= SPIN_MISSES and st.waits % SPIN_PROBE:
                spin = 0.0
            else:
                spin_end = time.monotonic() + spin
                if deadline is not None and deadline < spin_end:
                    spin_end = deadline
        while not ready():
            if spin:
                if time.monotonic() < spin_end:
                    events = poll.poll(0)
                    if not events:
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
                got = taken.get(fd)
                if got is None:
                    continue
                with got.lock:
                    if not got.done and got.borrower is st:
                        got.read()
                    if got.done or got.borrower is not st:
                        poll.unregister(fd)
                        del taken[fd]
        if spin:  # it came while we spun
            st.spin_misses = 0
        return bool(ready())
    finally:
        if waiting:
            try:
                wakers.remove(waker)
            except ValueError:  # pragma: no cover
                pass
            poll.unregister(wfd)
        for fd, r in taken.items():
            poll.unregister(fd)
            with r.lock:
                if r.borrower is st:
                    r.borrower = None
                    if not r.done:
                        poller._watch(r, True)
