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
  what arrives in its own thread until what it waits for is there. The reply
  to a request is so read by the thread that waits for it, with no hand-off
  between threads and no transfer of the GIL. It then **holds** them: the next
  ``recv`` or ``result`` of a loop comes within microseconds, and the poller,
  woken by what arrives meanwhile, would take the GIL from that thread to read
  and route it (a subscriber reading a stream: 4-6 voluntary context switches
  per 1,000 messages, and ~10 % more CPU, against 0.1-0.3 while it holds).
  Another thread that waits takes held sockets over; the poller takes them back
  (``EPOLL_CTL_MOD`` to ``EPOLLIN``: what came meanwhile is reported at once)
  once their holder has been away :data:`HOLD_IDLE`, looking every
  :data:`HOLD_IDLE` while any are held. A wait that ends by an exception gives
  them back at once. See :mod:`._borrow`.

Ownership: each :class:`PolledSocket` (a stream connection's
:class:`SocketReader`, or a transport's socket registered with
``Engine.watch_socket``: :mod:`._socketwatch`) has a lock held while reading,
decoding and routing one chunk, so one stream is decoded in order by one
thread at a time; ``borrower`` (set under that lock) says which thread may
read it (its :class:`_ThreadState`), and a thread reads only under the lock
after checking that it is the borrower. Lock order is reader lock, then
context lock; nothing holding a context lock ever
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
from typing import Any

__all__ = [
    "AVAILABLE",
    "HOLD_IDLE",
    "PolledSocket",
    "Poller",
    "SocketReader",
    "Waker",
    "enter_io",
    "exit_io",
    "get_poller",
    "in_io_role",
    "thread_state",
]

logger = get_logger()

AVAILABLE = hasattr(select, "epoll") and hasattr(select, "poll")

#: Bytes asked for per read while the stream carries small packages.
CHUNK = 65536
#: Upper bound of one read while a large payload is being received.
MAX_CHUNK = 64 << 20
#: A thread keeps the sockets it borrowed after its wait; the poller takes them
#: back once it has been away this long (and looks this often while any are held).
HOLD_IDLE = 0.005

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

    def __init__(self, owned: bool = True) -> None:
        # A thread never wakes its own waker (it is not asleep); an unowned
        # waker (the poller's) is woken by anyone.
        self._owner = threading.get_ident() if owned else None
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


class _ThreadState:
    """Per thread: its waker, its poll object, the sockets it holds, whether it does IO.

    A plain object, one per thread (:func:`thread_state`), so that a reader's
    ``borrower`` names one thread (a ``threading.local`` is one object for all).
    """

    __slots__ = (
        "waker",
        "poll",
        "fork_gen",
        "io",
        "held",
        "waiting",
        "left",
        "spin_misses",
        "waits",
    )

    def __init__(self) -> None:
        self.waker: Waker | None = None
        self.poll: Any = None  # select.poll with the waker and the held sockets
        self.fork_gen = -1
        self.io = 0  # > 0 while this thread reads and routes for yoton
        # Sockets this thread borrowed and holds (fd -> reader), whether it is
        # waiting in borrow_wait now, and when it last left a wait.
        self.held: dict[int, PolledSocket] = {}
        self.waiting = False
        self.left = 0.0
        # Adaptive spinning (borrow_wait): spins in a row that ran out before
        # what we waited for came, and waits since the last probe.
        self.spin_misses = 0
        self.waits = 0


class _Local(threading.local):
    def __init__(self) -> None:
        self.state = _ThreadState()


_local = _Local()
_fork_gen = 0


def in_io_role() -> bool:
    """True while the calling thread reads and routes packages (poller or borrower).

    Code reached from routing must not block waiting for the network there
    (e.g. for a congested queue): the thread it would wait for may be itself.
    """
    return _local.state.io > 0


def enter_io() -> Any:
    """Mark the calling thread as reading for yoton (see :func:`in_io_role`).

    In the main thread it also holds back asynchronous signals until
    :func:`exit_io`: a KeyboardInterrupt between reading bytes and handing
    them on would lose them. Returns what :func:`exit_io` needs.
    """
    _local.state.io += 1
    if _SIGMASK and threading.get_ident() == _main_ident:
        return _sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    return None


def exit_io(old_mask: Any) -> None:
    """Undo :func:`enter_io` (pass what it returned)."""
    _local.state.io -= 1
    if old_mask is not None:
        _sigmask(signal.SIG_SETMASK, old_mask)


class PolledSocket:
    """What the poller and borrowing threads need of a socket they read.

    One per socket: :class:`SocketReader` for a stream connection's socket,
    :class:`~._socketwatch.WatchedSocket` for a socket a transport registered
    (:meth:`Engine.watch_socket`). :meth:`read` reads one chunk and hands it
    on; its caller holds :attr:`lock` and has seen :attr:`done` false.
    """

    __slots__ = ("sock", "fd", "lock", "borrower", "done", "yield_gil", "_poller")

    def __init__(self, sock: Any, poller: Poller) -> None:
        self.sock = sock
        self.fd: int = sock if isinstance(sock, int) else sock.fileno()
        self.lock = threading.Lock()
        self.borrower: _ThreadState | None = None
        self.done = False
        #: Set by :meth:`read` to have the poller thread yield the GIL once
        #: after it (outside :attr:`lock`).
        self.yield_gil = False
        self._poller = poller

    def read(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SocketReader(PolledSocket):
    """The read side of one connection's plain socket.

    Args:
        conn: The connection's link (:class:`~._stream_link.StreamLink`):
            ``conn._receive(data)`` decodes and routes a chunk and returns
            False when the connection must end; ``conn._receive_end(exc)`` is
            told once why reading stopped.
        sock: The connected, non-blocking socket.
    """

    __slots__ = ("conn", "_receive")

    def __init__(self, conn: Any, sock: Any, poller: Poller) -> None:
        super().__init__(sock, poller)
        self.conn = conn
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
        st = _local.state
        st.io += 1
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
            st.io -= 1
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
        self._readers: dict[int, PolledSocket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.ident: int | None = None
        self._reads = 0
        self._borrows = 0
        # Readers a thread borrowed (see thread_state().held); while there are
        # any, the poller looks every HOLD_IDLE for holders that went away.
        self._lent: set[PolledSocket] = set()
        self._wake = Waker(owned=False)  # told when the first socket is lent
        self._ep.register(self._wake.fd, _EPOLLIN)

    def add(self, reader: PolledSocket) -> None:
        """Start reading ``reader``'s socket."""
        with self._lock:
            self._readers[reader.fd] = reader
            self._ep.register(reader.fd, _EPOLLIN)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="yoton-poller", daemon=True)
                self._thread.start()

    def remove(self, reader: PolledSocket) -> None:
        self._lent.discard(reader)
        with self._lock:
            if self._readers.get(reader.fd) is reader:
                del self._readers[reader.fd]
                try:
                    self._ep.unregister(reader.fd)
                except (OSError, ValueError):  # already closed
                    pass

    def _watch(self, reader: PolledSocket, on: bool) -> None:
        """Let the poller watch ``reader`` or not (caller holds ``reader.lock``)."""
        try:
            self._ep.modify(reader.fd, _EPOLLIN if on else 0)
        except (OSError, ValueError):  # removed meanwhile
            pass

    def lend(self, reader: PolledSocket) -> None:
        """A thread borrowed ``reader``: it holds ``reader.lock``, is its ``borrower``
        already, and turned the watch off."""
        self._borrows += 1
        first = not self._lent
        self._lent.add(reader)
        if first:  # the poller may sleep without a timeout: make it look
            self._wake.wake()

    def give_back(self, reader: PolledSocket) -> None:
        """The borrower returns ``reader`` to the poller (caller holds ``reader.lock``)."""
        reader.borrower = None
        self._lent.discard(reader)
        if not reader.done:
            self._watch(reader, True)

    def _run(self) -> None:
        self.ident = threading.get_ident()
        if _SIGMASK:  # signals are for the user's threads
            _sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
        poll = self._ep.poll
        readers = self._readers
        lent = self._lent
        wake_fd = self._wake.fd
        while True:
            try:
                events = poll(HOLD_IDLE if lent else -1)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except (OSError, ValueError):  # pragma: no cover - epoll closed (fork)
                return
            for fd, _ev in events:
                if fd == wake_fd:
                    self._wake.drain()
                    continue
                r = readers.get(fd)
                if r is None:
                    continue
                with r.lock:
                    if r.done or r.borrower is not None:
                        continue
                    self._reads += 1
                    r.read()
                if r.yield_gil:  # let the threads that consume what it delivered run
                    r.yield_gil = False
                    time.sleep(0)
            if lent:
                self._reclaim()

    def _reclaim(self) -> None:
        """Take back the sockets of holders that have been away :data:`HOLD_IDLE`."""
        now = time.monotonic()
        for r in list(self._lent):
            holder = r.borrower
            if holder is not None and (holder.waiting or now - holder.left < HOLD_IDLE):
                continue
            with r.lock:  # (a borrower sets itself and lends under it: decide under it too)
                holder = r.borrower
                if holder is None or r.done:
                    self._lent.discard(r)
                elif not holder.waiting and now - holder.left >= HOLD_IDLE:
                    self.give_back(r)

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


def thread_state() -> _ThreadState:
    """The calling thread's state, made (again, in a forked child) when needed."""
    st: _ThreadState = _local.state
    if st.fork_gen != _fork_gen:
        if st.waker is not None and st.fork_gen >= 0:
            st.waker.close()  # the parent's copy stays open in the parent
        st.waker = Waker()
        st.poll = select.poll()
        st.poll.register(st.waker.fd, _POLLIN)
        st.held = {}  # (the parent's poller and sockets are the parent's)
        st.fork_gen = _fork_gen
    return st
