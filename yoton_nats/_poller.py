"""Reading the server connections of plain-TCP bus links in one thread, outside trio.

Why: a trio task that waits for a socket costs a round of the event loop per
wake-up (tens of microseconds on the 2-core benchmark machine), and a
request/reply round trip has one in each process. One thread per process
waiting in a level-triggered ``select.epoll`` on every such socket reads a
chunk and hands its packages to the context itself (``Connection.deliver``
may be called from any thread, one call at a time per connection); what needs
the engine (answering a PING, a PONG someone waits for, a new INFO, an error
that ends the session) is passed to it with ``run_sync_soon``. The core's
stream transports read their sockets the same way, for the same reason.

Ownership: each link has a lock held while its socket is read and the chunk
handled; :meth:`Poller.unregister` takes it, so once it returns no read of
that socket is under way and the socket may be closed (never while a read
could still use the file descriptor). TLS sessions stay on trio's reader
(``trio.SSLStream`` is not ours to read from another thread).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Any

__all__ = ["AVAILABLE", "Poller", "get_poller"]

logger = logging.getLogger("yoton")

AVAILABLE = hasattr(select, "epoll")
#: After a chunk at least this large, the poller yields the GIL once.
YIELD_AFTER = 64 * 1024


class Poller:
    """One daemon thread reading registered sockets (see the module docstring)."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._links: dict[int, Any] = {}  # fd -> link
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def register(self, link: Any, sock: Any) -> None:
        """Start reading ``sock`` for ``link`` (any thread)."""
        fd = sock.fileno()
        link.polled_fd = fd
        self._links[fd] = link
        self._ep.register(fd, select.EPOLLIN)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="yoton-nats-reader", daemon=True
                    )
                    self._thread.start()

    def in_thread(self) -> bool:
        """True when called from the poller's own thread (which must never wait)."""
        thread = self._thread
        return thread is not None and threading.get_ident() == thread.ident

    def unregister(self, link: Any) -> None:
        """Stop reading ``link``'s socket; returns once no read of it is under way."""
        with link.read_lock:
            self._forget(link)

    def _forget(self, link: Any) -> None:
        fd = link.polled_fd
        if fd < 0:
            return
        link.polled_fd = -1
        if self._links.get(fd) is link:
            del self._links[fd]
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        poll = self._ep.poll
        links = self._links
        while True:
            try:
                ready = poll(1.0)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            for fd, _mask in ready:
                link = links.get(fd)
                if link is None:
                    continue
                with link.read_lock:
                    if link.polled_fd != fd:
                        continue  # unregistered meanwhile
                    try:
                        data = link.polled_sock.recv(link.receive_size)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        self._forget(link)
                        link.poll_lost(f"reading from the server failed: {exc}")
                        continue
                    if not data:
                        self._forget(link)
                        link.poll_lost("the server closed the connection")
                        continue
                    try:
                        link.on_data(data)
                    except Exception as exc:  # the link's problem, not the thread's
                        self._forget(link)
                        link.poll_lost(str(exc) or repr(exc))
                        continue
                if len(data) >= YIELD_AFTER:
                    # A big chunk was just deposited: let the threads that read
                    # it run before the next (the server cannot be slowed down
                    # by our socket; a reader that got the GIL back keeps up).
                    time.sleep(0)


_poller: Poller | None = None
_poller_lock = threading.Lock()


def get_poller() -> Poller:
    """The process-wide poller (its thread starts with the first registration)."""
    global _poller
    poller = _poller
    if poller is None:
        with _poller_lock:
            if _poller is None:
                _poller = Poller()
            poller = _poller
    return poller


def _after_fork_in_child() -> None:
    global _poller, _poller_lock
    _poller = None  # the parent's thread does not exist here
    _poller_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
