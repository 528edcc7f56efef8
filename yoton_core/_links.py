"""The links of a Context: what transports report and are told.

:class:`LinkKeeper` is a mixin of :class:`~._context.Context`, which owns the
state it reads. It holds the context's side of the transport contract
(``yoton.transport``): a connection established or closed (called by
:meth:`Connection.set_established` / :meth:`Connection.set_closed`), the
socket readers that waiting threads may borrow (``_poller.py``), and the
notifications every alive connection gets when a link comes or goes or when
the slots of local channels change.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from ._fan import refan
from ._log import describe_link, get_logger

if TYPE_CHECKING:
    from ._channels import BaseChannel
    from ._connection import Connection
    from ._ctxlock import ContextLock
    from ._poller import PolledSocket
    from ._stream_queue import StreamQueue
    from ._wire import Header

__all__ = ["LinkKeeper"]

logger = get_logger("context")


class LinkKeeper:
    """The context's links (see the module docstring); mixed into Context."""

    # Owned and initialised by Context (see Context.__init__).
    _lock: ContextLock
    _connections: list[Connection]
    _connected: tuple[Connection, ...]
    _fan_out: tuple[StreamQueue, ...] | None
    _send_seq: int
    _readers: tuple[PolledSocket, ...]
    _routes: dict[int, Connection]
    _startup_queue: collections.deque[tuple[Header, bytes]]
    _send_channels: dict[int, BaseChannel]
    _recv_channels: dict[int, BaseChannel]
    _congestion: bool
    _joins_told: dict[Connection, bool | None]
    _joins_declined: set[Connection]

    if TYPE_CHECKING:  # (JoinAnnouncer's, mixed into Context beside this one)

        def _joins_link_up(self, conn: Connection) -> None: ...
        def _joins_link_down(self, conn: Connection) -> None: ...

    def _connection_established(self, conn: Connection) -> None:
        """A connection got its peer: start routing to it (called by transports)."""
        with self._lock:
            if conn not in self._connections:
                self._connections.append(conn)
            self._connected = (*self._connected, conn)
            self._fan_out = refan(self._fan_out, self._connected, self._send_seq)
            self._joins_link_up(conn)
            startup, self._startup_queue = self._startup_queue, collections.deque()
            for header, data in startup:
                conn.send_package(header, data)
        if conn.status == "hosting":
            conn.log.info("peer connected: %s", describe_link(conn))
        else:
            conn.log.info("connected: %s", describe_link(conn))
        for ch in list(self._send_channels.values()):
            ch._on_new_connection(conn)
        self._links_changed(conn)

    def _connection_closed(self, conn: Connection) -> None:
        """A connection is gone: stop routing to it (called by transports)."""
        with self._lock:
            routes = self._routes
            for peer in [peer for peer, via in routes.items() if via is conn]:
                del routes[peer]
            if conn in self._connections:
                self._connections.remove(conn)
            if conn in self._connected:
                self._connected = tuple(c for c in self._connected if c is not conn)
                self._fan_out = refan(self._fan_out, self._connected, self._send_seq)
                self._joins_link_down(conn)
            else:  # (a handshake's answer for a link never established)
                self._joins_told.pop(conn, None)
                self._joins_declined.discard(conn)
            channels = set(self._send_channels.values()) | set(self._recv_channels.values())
        # -- req/rep + sync-mode hook: channels forget (or fail) what a peer
        # that went away was doing for them (_reqrep.py, _repchannel.py, _sync.py).
        for ch in channels:
            try:
                ch._on_connection_closed(conn)
            except Exception:
                logger.exception("error in %r._on_connection_closed", ch)
        # -- end of req/rep hook
        self._links_changed(conn)

    def _ease_congestion(self) -> None:
        """Let congested connections drain a little before the next send."""
        # Cleared first: a connection that reports congestion meanwhile sets it again.
        self._congestion = False
        for conn in self._connected:
            if conn.congested:
                conn.wait_writable()
                if conn.congested:
                    self._congestion = True

    def _add_reader(self, reader: PolledSocket) -> None:
        """A connection's socket is read outside trio from now on (_poller.py)."""
        with self._lock:
            self._readers = (*self._readers, reader)

    def _remove_reader(self, reader: PolledSocket) -> None:
        with self._lock:
            self._readers = tuple(r for r in self._readers if r is not reader)

    def _links_changed(self, changed: Connection) -> None:
        """``changed`` came or went: tell the other alive connections (no lock held)."""
        for conn in list(self._connections):
            if conn is not changed and conn.is_alive:
                try:
                    conn.links_changed()
                except Exception:
                    logger.exception("error in %r.links_changed", conn)

    def _slots_changed(self, added: frozenset[int], removed: frozenset[int]) -> None:
        """Tell the alive connections (in this thread, without the lock held)."""
        for conn in list(self._connections):
            if conn.is_alive:
                try:
                    conn.slots_changed(added, removed)
                except Exception:
                    logger.exception("error in %r.slots_changed", conn)
