"""Letting the core read a transport's socket: the poller, and threads that wait.

Why: a reply that one thread reads and another thread waits for costs a
thread hand-off (a futex wake-up and a transfer of the GIL) in each process
of a round trip. The core reads its stream connections' plain sockets
outside trio (``_poller.py``): in the process-wide poller thread, or, while a
user thread waits for yoton data (``Future.result()``, ``SubChannel.recv()``,
a RepChannel worker), in that very thread, which *borrows* the sockets of its
context and reads them itself. A transport that is not a
:class:`~._stream.StreamConnection` but whose input is a plain socket too (a
broker connection such as NATS's, whose bytes are not yoton's frames) gets
the same by registering the socket with :meth:`Engine.watch_socket`: the core
reads it, and the transport's ``receive(data)`` decodes each chunk and
delivers its packages, in whichever thread read it.

The rules the registration gives the transport (and the core keeps):

* One thread at a time reads the socket and runs ``receive``, holding the
  watch's lock: chunks are handed over in the order they were read.
* ``receive`` runs in an IO role (``engine().in_io_thread()`` is true): it
  must not block waiting for the network, nor take a lock a thread may hold
  while waiting for the network; what needs the IO engine goes there with
  ``run_sync_soon``. Lock order: the watch's lock, then a context lock.
* Reading ends once: ``ended(exc)`` is called (in the reading thread, with
  the watch already out of every poll set) at EOF, after a failed read, when
  ``receive`` raised or returned False; or :meth:`SocketWatch.stop` ends it,
  after which no thread reads the socket (it may then be closed).
* A process that forks: the child's poller is a new one, and sockets watched
  in the parent are never read there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._poller import PolledSocket, Poller, enter_io, exit_io, in_io_role

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["DEFAULT_READ_SIZE", "SocketWatch", "WatchedSocket"]

#: Bytes asked for per read unless the transport says otherwise (below
#: glibc's mmap threshold: a larger ``recv`` buffer costs an ``mmap``,
#: ``mremap`` and ``munmap`` per chunk, each a system call).
DEFAULT_READ_SIZE = 65536


class WatchedSocket(PolledSocket):
    """What the poller and borrowing threads read: a socket a transport registered."""

    __slots__ = ("conn", "_receive", "_ended", "_size", "_recv")

    def __init__(
        self,
        conn: Connection,
        sock: Any,
        receive: Callable[[bytes], object],
        ended: Callable[[BaseException | None], object],
        read_size: int,
        poller: Poller,
    ) -> None:
        super().__init__(sock, poller)
        self.conn = conn
        self._receive = receive
        self._ended = ended
        self._size = read_size
        if isinstance(sock, socket.socket):
            self._recv: Callable[[int], bytes] = sock.recv
        else:  # any other file descriptor (a pipe, a device)
            fd = self.fd
            self._recv = lambda size: os.read(fd, size)

    def read(self) -> None:
        """Read one chunk and hand it to ``receive`` (caller holds ``lock``, not done)."""
        old = enter_io()
        try:
            try:
                data = self._recv(self._size)
            except (BlockingIOError, InterruptedError):
                return  # a spurious wake-up
            except OSError as exc:
                self._finish(exc)
                return
            if not data:
                self._finish(None)
                return
            if len(data) == self._size:
                # A full read: more is probably waiting. A broker does not slow
                # down for a slow reader the way a TCP peer does, so the poller
                # must not starve the threads consuming what it delivers.
                self.yield_gil = True
            try:
                going = self._receive(data)
            except Exception as exc:  # the transport's bug must not kill the reading thread
                self.conn.log.exception("error in %r's receive()", self.conn)
                self._finish(exc)
            else:
                if going is False:
                    self._finish(None)
        finally:
            exit_io(old)

    def _finish(self, exc: BaseException | None) -> None:
        """Reading ended by itself (the reading thread, ``lock`` held)."""
        self.done = True
        self._poller.remove(self)
        self.conn.context._remove_reader(self)
        try:
            self._ended(exc)
        except Exception:
            self.conn.log.exception("error in %r's ended()", self.conn)


class SocketWatch:
    """A socket the core reads for a transport (:meth:`Engine.watch_socket`).

    What the transport keeps to stop the reading. What the core promises, and
    asks of the transport's callbacks:

    * One thread at a time reads the socket and runs ``receive``: chunks are
      handed over in the order they were read. Which thread varies (the
      poller, or a user thread of the context while it waits for yoton data).
    * ``receive`` runs in an IO role (``engine().in_io_thread()`` is true): it
      must not block waiting for the network, nor take a lock that a thread
      may hold while waiting for the network; what needs the IO engine goes
      there with ``engine().run_sync_soon``.
    * Reading ends once: ``ended(exc)`` is called, in the reading thread and
      with the socket already out of every poll set, at EOF (``exc`` None),
      after a failed read (the ``OSError``), when ``receive`` raised (the
      exception, also logged) or returned False (None). Or :meth:`stop` ends
      it, and ``ended`` is not called.
    * A thread that waited keeps the sockets it read for its next wait (the
      poller takes them back after a few milliseconds). ``engine().run()`` and
      ``Connection.wait_closed()`` hand the calling thread's sockets back
      before they block: block a user thread there when what it waits for
      arrives on the watched socket (a server's acknowledgement).
    * In a child process after ``fork`` the parent's watched sockets are never
      read (the child's poller is a new one).
    """

    __slots__ = ("_reader",)

    def __init__(self, reader: WatchedSocket) -> None:
        self._reader = reader

    def __repr__(self) -> str:
        r = self._reader
        return f"<SocketWatch fd={r.fd} of {r.conn!r}, {'done' if r.done else 'reading'}>"

    @property
    def done(self) -> bool:
        """True once reading ended (by :meth:`stop`, or by itself)."""
        return self._reader.done

    def stop(self) -> None:
        """Stop reading; once this returns, no thread reads the socket.

        Then the transport may close it. Call it from any thread except one
        reading for yoton (inside ``receive`` or ``ended``: return False from
        ``receive`` instead), and holding no lock that ``receive`` may take
        (a context lock, the transport's own): it waits for a chunk being
        handed over to finish. ``ended`` is not called. Calling it again, or
        after reading ended by itself, does nothing.

        Raises:
            RuntimeError: called from a thread that reads for yoton.
        """
        if in_io_role():
            raise RuntimeError(
                "SocketWatch.stop() cannot be called from a thread that reads for yoton "
                "(it would wait for itself); return False from receive() instead"
            )
        r = self._reader
        with r.lock:
            was_done, r.done = r.done, True
        if not was_done:
            r._poller.remove(r)
            r.conn.context._remove_reader(r)
