"""The transport-agnostic :class:`Connection` base class.

A Connection is one link between two contexts. The core only relies on the
small contract below; a transport plugin implements ``_bind``, ``_connect``,
``_push`` and ``_request_close``. Stream transports should subclass
:class:`yoton_core.StreamConnection` instead, which implements all of that on top
of a byte stream.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ._block import check_timeout
from ._errors import InvalidArgumentError
from ._events import Signal
from ._log import transport_logger
from ._wire import raw_package

if TYPE_CHECKING:
    from ._context import Context
    from ._wire import Header, Package

__all__ = ["Connection", "ConnectionStatistics", "STATUS_NAMES"]

STATUS_CLOSED = 0
STATUS_CLOSING = 1
STATUS_WAITING = 2
STATUS_HOSTING = 3
STATUS_CONNECTED = 4

STATUS_NAMES = {
    STATUS_CLOSED: "closed",
    STATUS_CLOSING: "closing",
    STATUS_WAITING: "waiting",
    STATUS_HOSTING: "hosting",
    STATUS_CONNECTED: "connected",
}

MIN_TIMEOUT = 0.5

#: The reason a peer's own close is reported with; like a close by us, it is
#: the life of a connection (logged at INFO), not a fault (WARNING).
CLOSED_FROM_OTHER_END = "Closed from other end."


def endpoint(host: str, port: int) -> str:
    """``host:port`` for messages; just ``host`` when there is no port (a socket path)."""
    return f"{host}:{port}" if port else host


#: What a connect that finds nobody listening tells the user: also the case of a
#: second peer at a bind that already serves one (its listener is gone).
ONE_PEER_HINT = (
    "Is a context bound there and running? One bind() serves one peer: if another "
    "peer is already connected there, bind again (another port or name) for this one."
)
#: What a bind at an address in use tells the user.
IN_USE_HINT = (
    "Another context or program holds it: choose another port or name, or pass "
    "max_tries=N to bind() to try N ports from there."
)


@dataclass(frozen=True)
class ConnectionStatistics:
    """A snapshot of a connection's counters (see :attr:`Connection.stats`)."""

    packages_sent: int
    bytes_sent: int
    packages_received: int
    bytes_received: int
    packages_dropped: int
    queued: int


class Connection:
    """One link between two contexts.

    Attributes:
        closed: Signal emitted once, as ``closed(connection, reason)``, when the
            connection ends for whatever reason.
        timedout: Signal emitted as ``timedout(connection, True)`` when nothing
            was received for :attr:`timeout` seconds, and ``timedout(connection,
            False)`` when data flows again.
    """

    #: The address scheme this class serves, e.g. ``"tcp"``.
    scheme: ClassVar[str] = ""
    #: Set by the transport while its outgoing queue is above its high-water
    #: mark; the context then calls :meth:`_wait_writable` before a send.
    _congestion_check: bool = False
    # Join announcements (_joins.py). Until a peer's handshake says otherwise
    # it speaks 2.x: it gets every NEW_CONNECTION and counts as wanting them.
    _joins_cap: bool = False  # the peer speaks the capability
    _peer_joins: bool = True  # the peer wants announcements on this link
    _told_joins: bool | None = None  # what we last told the peer

    def _set_joins(self, joins: tuple[bool, bool] | None) -> None:
        """Keep what the handshake said: (the peer wants joins, what we told it)."""
        if joins is not None:
            self._joins_cap = True
            self._peer_joins, self._told_joins = joins

    def __init__(self, context: Context, name: str = "") -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Connection name must be a str, got {type(name).__name__}")
        self._context = context
        self._name = name
        self._status = STATUS_CLOSED
        self._timeout = MIN_TIMEOUT
        self._hostname1 = ""
        self._port1 = 0
        self._hostname2 = ""
        self._port2 = 0
        self._id2 = 0
        self._pid2 = 0
        self._close_reason: str | None = None
        # True once close() was called: the end is on purpose, not a fault.
        self._closed_on_purpose = False
        self._closed_event = threading.Event()
        #: This transport's logger, ``yoton.<scheme>`` (see _log.py).
        self._log = transport_logger(self.scheme)
        self.closed = Signal()
        self.timedout = Signal()
        # Counters; written by the IO side, read without locks (ints are atomic).
        self._n_sent = 0
        self._b_sent = 0
        self._n_recv = 0
        self._b_recv = 0
        self._n_dropped = 0

    # -- documented properties ---------------------------------------------

    @property
    def hostname1(self) -> str:
        """The host name or address of this end."""
        return self._hostname1

    @property
    def port1(self) -> int:
        """The port (or equivalent) of this end; the real one when bound to port 0."""
        return self._port1

    @property
    def hostname2(self) -> str:
        """The host name or address of the other end ("" until connected)."""
        return self._hostname2

    @property
    def port2(self) -> int:
        """The port of the other end (0 until connected)."""
        return self._port2

    @property
    def id1(self) -> int:
        """The id of our context."""
        return self._context.id

    @property
    def id2(self) -> int:
        """The id of the context at the other end (0 until connected)."""
        return self._id2

    @property
    def pid1(self) -> int:
        """Our process id."""
        return os.getpid()

    @property
    def pid2(self) -> int:
        """The process id at the other end (0 until connected)."""
        return self._pid2

    @property
    def is_alive(self) -> bool:
        """True while waiting, hosting or connected."""
        return self._status >= STATUS_WAITING

    @property
    def is_connected(self) -> bool:
        """True while connected to a peer (hosting or connected)."""
        return self._status >= STATUS_HOSTING

    @property
    def is_waiting(self) -> bool:
        """True while bound and waiting for a peer."""
        return self._status == STATUS_WAITING

    @property
    def status(self) -> str:
        """The status as a word: closed, closing, waiting, hosting or connected."""
        return STATUS_NAMES[self._status]

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed, or None while it is alive."""
        return self._close_reason

    @property
    def name(self) -> str:
        """A name to find this connection in :attr:`Context.connections`."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"Connection name must be a str, got {type(value).__name__}")
        self._name = value

    @property
    def timeout(self) -> float:
        """Seconds of silence after which ``timedout(conn, True)`` fires (>= 0.5)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = check_timeout(value, "Connection.timeout", minimum=MIN_TIMEOUT)

    @property
    def stats(self) -> ConnectionStatistics:
        """A snapshot of the traffic counters."""
        return ConnectionStatistics(
            packages_sent=self._n_sent,
            bytes_sent=self._b_sent,
            packages_received=self._n_recv,
            bytes_received=self._b_recv,
            packages_dropped=self._n_dropped,
            queued=self._queued_count(),
        )

    def statistics(self) -> ConnectionStatistics:
        """Same as :attr:`stats` (trio-style spelling)."""
        return self.stats

    @property
    def context(self) -> Context:
        return self._context

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._name!r} {self.status} "
            f"{self._hostname1}:{self._port1} -> {self._hostname2}:{self._port2}>"
        )

    # -- closing -------------------------------------------------------------

    def close(self, reason: str | None = None) -> None:
        """Close the connection, telling the other end, and emit ``closed``.

        Blocks briefly (at most about a second) until the link is really shut,
        so that binding the same address again right after works.
        """
        if reason is None:
            reason = "Closed on command."
        if self._status > STATUS_CLOSING:  # (not when a fault is ending it already)
            self._closed_on_purpose = True
        self._close(reason, notify_peer=True)

    def close_on_problem(self, reason: str | None = None) -> None:
        """Close the connection because something went wrong."""
        if reason is None:
            reason = "Unspecified problem"
        self._close(reason, notify_peer=True)

    def _close(self, reason: str, notify_peer: bool) -> None:
        if not isinstance(reason, str):
            reason = "Invalid stop reason specified (must be string)."
        if self._status <= STATUS_CLOSING:
            return
        self._status = STATUS_CLOSING
        self._request_close(reason, notify_peer)

    def _set_closed(self, reason: str) -> None:
        """Called by the transport exactly once when the link is gone."""
        if self._closed_event.is_set():
            return
        self._close_reason = reason
        was = self._status
        self._status = STATUS_CLOSED
        self._log_closed(reason, was)
        self._context._connection_closed(self)
        self._closed_event.set()
        self.closed.emit(self, reason)

    def _log_closed(self, reason: str, was: int) -> None:
        """INFO for a close on purpose (ours or the peer's), WARNING for a fault."""
        log = self._log
        if was >= STATUS_HOSTING:
            where = f"connection {self._describe_link()}"
        else:
            where = f"listener at {endpoint(self._hostname1, self._port1)}"
        if self._closed_on_purpose or reason == CLOSED_FROM_OTHER_END:
            log.info("%s closed: %s", where, reason)
        else:
            log.warning("%s lost: %s", where, reason)

    def _describe_link(self) -> str:
        """``here -> there (peer context id, pid)`` for log messages."""
        return (
            f"{endpoint(self._hostname1, self._port1)} -> "
            f"{endpoint(self._hostname2, self._port2)} "
            f"(peer context {self._id2:016x}, pid {self._pid2})"
        )

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection is closed; return False on timeout."""
        return self._closed_event.wait(timeout)

    # -- what a transport implements ----------------------------------------

    def _bind(self, address: str, max_tries: int) -> None:
        """Start listening on ``address`` (scheme removed); return at once."""
        raise NotImplementedError

    def _connect(self, address: str, timeout: float) -> None:
        """Connect and handshake, blocking; raise OSError on failure."""
        raise NotImplementedError

    def _push(self, package: Package) -> None:
        """Queue one package for the peer; thread-safe and never blocking."""
        raise NotImplementedError

    def _push_raw(self, header: Header, data: bytes) -> None:
        """Queue one package given as header tuple and payload (how the core
        hands packages over; see ``_wire.Header``). The default makes a
        :class:`Package` and calls :meth:`_push`, so a transport may implement
        either; the built-in ones implement this one."""
        self._push(raw_package(header, data))

    def _note_congestion(self) -> None:
        """The outgoing queue passed its high-water mark (transports call this)."""
        self._congestion_check = True
        self._context._congestion = True

    def _wait_writable(self) -> None:
        """Block a user thread briefly while the outgoing queue is congested."""

    def _queued_count(self) -> int:
        return 0

    def _request_close(self, reason: str, notify_peer: bool) -> None:
        raise NotImplementedError

    def flush(self, timeout: float = 3.0) -> None:
        """Block until every queued package was handed to the OS."""
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "status": self.status}
