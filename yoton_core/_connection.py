"""The transport-agnostic :class:`Connection` base class and its subclass contract.

A Connection is one link between two contexts. A transport plugin subclasses
it and implements a few methods the core calls (``open_bind``,
``open_connect``, ``send_package``, ``shutdown``, ``flush``, ...); it reports
what happens on the link through methods the base provides (``set_waiting``,
``set_established``, ``deliver``, ``set_closed``, ...). Both halves are public,
documented names: :mod:`yoton_core.transport` lists them, and
docs/plugins.md shows them at work. Stream transports subclass
:class:`~yoton_core.transport.StreamConnection` instead, which implements the
first half on top of a byte stream.

Why the base's own state is name-mangled (``self.__status``): a plugin is
free to name its private attributes as it likes (``_reader``, ``_status``,
``_outq``, ...). Python's mangling gives the base's attributes names no
subclass can produce by accident, so a plugin's private names never collide
with the core's, and the core may rename its internals without breaking any
plugin. The public names of the contract are the one shared namespace; a
subclass that redefines one the base provides (``deliver``, ``set_closed``,
``closed``, ...) is refused with a TypeError when the class is created.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ._block import check_timeout
from ._borrow import give_back_held
from ._connstats import ConnectionStatistics
from ._errors import InvalidArgumentError
from ._events import Signal
from ._log import CLOSED_FROM_OTHER_END, describe_link, endpoint, transport_logger
from ._wire import package_header

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


def closed_on_purpose(conn: Connection) -> bool:
    """Whether :meth:`Connection.close` on this side ended ``conn`` (for the core, e.g. the CLI)."""
    return bool(getattr(conn, "_Connection__closed_on_purpose", False))


#: What the base class provides and the core relies on: a subclass that
#: defines one of these names is refused (see :meth:`Connection.__init_subclass__`).
PROVIDED_NAMES = frozenset(
    # reported by the transport
    "set_waiting set_established deliver deliver_packages set_closed set_timed_out "
    "set_congested count_sent count_received count_dropped announce "
    # the user's API
    "close close_on_problem wait_closed closed timedout stats statistics context "
    "hostname1 hostname2 port1 port2 id1 id2 pid1 pid2 is_alive is_connected is_waiting "
    "status close_reason name timeout congested log".split()
)


#: Names a core base class below Connection implements itself and its
#: subclasses must not redefine (see :func:`declare_final`).
_FINAL: dict[type, frozenset[str]] = {}


def declare_final(cls: type, names: Iterable[str]) -> None:
    """Refuse subclasses of ``cls`` that define one of ``names`` (core base classes).

    :class:`~yoton_core.transport.StreamConnection` implements the transport
    half of the contract itself; a stream plugin that defined ``send_package``
    would silently bypass its queue.
    """
    _FINAL[cls] = frozenset(names)


class Connection:
    """One link between two contexts; the base class of every transport.

    Attributes:
        closed: Signal emitted once, as ``closed(connection, reason)``, when the
            connection ends for whatever reason.
        timedout: Signal emitted as ``timedout(connection, True)`` when nothing
            was received for :attr:`timeout` seconds, and ``timedout(connection,
            False)`` when data flows again.

    A transport implements :meth:`open_bind`, :meth:`open_connect`,
    :meth:`send_package`, :meth:`shutdown` and :meth:`flush` (optionally
    :meth:`queued_count`, :meth:`wait_writable`, :meth:`configure` and
    :meth:`slots_changed`), and calls :meth:`set_waiting`,
    :meth:`set_established`, :meth:`deliver` / :meth:`deliver_packages`,
    :meth:`set_closed`, :meth:`set_timed_out`, :meth:`set_congested` and the
    ``count_*`` methods.
    """

    #: The address scheme this class serves, e.g. ``"tcp"``.
    scheme: ClassVar[str] = ""
    #: True for a transport whose ``bind`` and ``connect`` both *join a bus*
    #: (a broker routes between every context on it: NATS) instead of pairing
    #: two contexts. Such a link has no single peer (``id2`` is 0) and no
    #: "other end" to tell when it closes; the conformance kit skips its
    #: peer-to-peer checks for it.
    joins_bus: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass that redefines a name the base provides.

        Such a definition is almost always an accident (a plugin's own
        ``deliver`` or ``closed``) that would silently cut the core off from
        the transport; the error says which name and what to do.
        """
        super().__init_subclass__(**kwargs)
        for name in sorted(PROVIDED_NAMES & set(vars(cls))):
            raise TypeError(
                f"{cls.__qualname__}.{name}: {name!r} is provided by yoton's Connection "
                "base class and relied on by the core; a transport must not redefine it "
                "(rename yours; the subclass contract is listed in yoton.transport)."
            )
        for base in cls.__mro__[1:]:
            final = _FINAL.get(base)
            if final is not None:
                for name in sorted(final & set(vars(cls))):
                    raise TypeError(
                        f"{cls.__qualname__}.{name}: {base.__name__} implements {name!r} "
                        "itself and a subclass must not redefine it (rename yours; the "
                        "methods a subclass implements are listed in yoton.transport)."
                    )

    def __init__(self, context: Context, name: str = "") -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Connection name must be a str, got {type(name).__name__}")
        self.__context = context
        self.__name = name
        self.__status = STATUS_CLOSED
        self.__timeout = MIN_TIMEOUT
        self.__hostname1 = ""
        self.__port1 = 0
        self.__hostname2 = ""
        self.__port2 = 0
        self.__id2 = 0
        self.__pid2 = 0
        self.__close_reason: str | None = None
        # True once close() was called: the end is on purpose, not a fault.
        self.__closed_on_purpose = False
        self.__closed_event = threading.Event()
        self.__log = transport_logger(self.scheme)
        self.__timed_out = False
        self.__congested = False
        # Counters; written by the IO side, read without locks (ints are atomic).
        self.__n_sent = 0
        self.__b_sent = 0
        self.__n_recv = 0
        self.__b_recv = 0
        self.__n_dropped = 0
        self.closed: Signal = Signal()
        self.timedout: Signal = Signal()

    # -- documented properties ---------------------------------------------

    @property
    def hostname1(self) -> str:
        """The host name or address of this end."""
        return self.__hostname1

    @property
    def port1(self) -> int:
        """The port (or equivalent) of this end; the real one when bound to port 0."""
        return self.__port1

    @property
    def hostname2(self) -> str:
        """The host name or address of the other end ("" until connected)."""
        return self.__hostname2

    @property
    def port2(self) -> int:
        """The port of the other end (0 until connected)."""
        return self.__port2

    @property
    def id1(self) -> int:
        """The id of our context."""
        return self.__context.id

    @property
    def id2(self) -> int:
        """The id of the context at the other end (0 until connected)."""
        return self.__id2

    @property
    def pid1(self) -> int:
        """Our process id."""
        return os.getpid()

    @property
    def pid2(self) -> int:
        """The process id at the other end (0 until connected)."""
        return self.__pid2

    @property
    def is_alive(self) -> bool:
        """True while waiting, hosting or connected."""
        return self.__status >= STATUS_WAITING

    @property
    def is_connected(self) -> bool:
        """True while connected to a peer (hosting or connected)."""
        return self.__status >= STATUS_HOSTING

    @property
    def is_waiting(self) -> bool:
        """True while bound and waiting for a peer."""
        return self.__status == STATUS_WAITING

    @property
    def status(self) -> str:
        """The status as a word: closed, closing, waiting, hosting or connected."""
        return STATUS_NAMES[self.__status]

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed, or None while it is alive."""
        return self.__close_reason

    @property
    def name(self) -> str:
        """A name to find this connection in :attr:`Context.connections`."""
        return self.__name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"Connection name must be a str, got {type(value).__name__}")
        self.__name = value

    @property
    def timeout(self) -> float:
        """Seconds of silence after which ``timedout(conn, True)`` fires (>= 0.5)."""
        return self.__timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.__timeout = check_timeout(value, "Connection.timeout", minimum=MIN_TIMEOUT)

    @property
    def stats(self) -> ConnectionStatistics:
        """A snapshot of the traffic counters."""
        return ConnectionStatistics(
            packages_sent=self.__n_sent,
            bytes_sent=self.__b_sent,
            packages_received=self.__n_recv,
            bytes_received=self.__b_recv,
            packages_dropped=self.__n_dropped,
            queued=self.queued_count(),
        )

    def statistics(self) -> ConnectionStatistics:
        """Same as :attr:`stats` (trio-style spelling)."""
        return self.stats

    @property
    def context(self) -> Context:
        """The context this connection belongs to."""
        return self.__context

    @property
    def log(self) -> logging.Logger:
        """This transport's logger, ``yoton.<scheme>`` (docs/logging.md)."""
        return self.__log

    @property
    def congested(self) -> bool:
        """True while the transport reports its outgoing queue above its high-water mark."""
        return self.__congested

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.__name!r} {self.status} "
            f"{self.__hostname1}:{self.__port1} -> {self.__hostname2}:{self.__port2}>"
        )

    # -- closing (the user's side) -------------------------------------------

    def close(self, reason: str | None = None) -> None:
        """Close the connection, telling the other end, and emit ``closed``.

        Blocks briefly (at most about a second) until the link is really shut,
        so that binding the same address again right after works.
        """
        if reason is None:
            reason = "Closed on command."
        if self.__status > STATUS_CLOSING:  # (not when a fault is ending it already)
            self.__closed_on_purpose = True
        self.__begin_close(reason)

    def close_on_problem(self, reason: str | None = None) -> None:
        """Close the connection because something went wrong.

        Like :meth:`close`, with ``reason`` (default "Unspecified problem") as
        the reason ``closed`` reports; for code that detects a fault itself.
        """
        if reason is None:
            reason = "Unspecified problem"
        self.__begin_close(reason)

    def __begin_close(self, reason: str) -> None:
        if not isinstance(reason, str):
            reason = "Invalid stop reason specified (must be string)."
        if self.__status <= STATUS_CLOSING:
            return
        self.__status = STATUS_CLOSING
        self.shutdown(reason, True)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection is closed; return False on timeout."""
        if not self.__closed_event.is_set():
            give_back_held()  # (a goodbye may have to be read on a socket we hold)
        return self.__closed_event.wait(timeout)

    # -- what a transport implements (called by the core) ---------------------

    def open_bind(self, address: str, max_tries: int) -> None:
        """Listen at ``address`` (scheme removed) for one peer; return at once.

        Call :meth:`set_waiting` before returning (or :meth:`set_established`
        if the link is up at once); raise OSError (or ValueError for a bad
        address) if the address cannot be bound.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement open_bind()")

    def open_connect(self, address: str, timeout: float) -> None:
        """Connect to ``address`` (scheme removed), blocking until connected.

        Call :meth:`set_established` before returning; raise an OSError
        (``ConnectionRefusedError``, or yoton's ``TimeoutError``) that says
        what failed when nobody accepts within ``timeout`` seconds.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement open_connect()")

    def send_package(self, header: Header, payload: bytes) -> None:
        """Queue one package for the peer; the hot path of every send.

        ``header`` is the package's :data:`~yoton_core.transport.Header`
        tuple (``pack_header(header)`` gives its bytes) and ``payload`` its
        data. Called under the context's lock, so calls arrive in sequence
        order, from any thread; must be thread-safe and must never block.
        Apply the context's ``queue_params`` when the queue is full and
        count what is discarded with :meth:`count_dropped`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement send_package()")

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        """Begin closing (the core calls this once, from :meth:`close`).

        Deliver what is queued, tell the peer if ``notify_peer``, release the
        medium, and end with :meth:`set_closed` ``(reason)`` exactly once;
        may block the calling thread briefly (about a second at most).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement shutdown()")

    def flush(self, timeout: float = 3.0) -> None:
        """Block until every queued package was handed over (user-visible).

        Raises:
            yoton.TimeoutError: if that takes longer than ``timeout`` seconds.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement flush()")

    def queued_count(self) -> int:
        """Packages queued and not yet handed over (for :attr:`stats`)."""
        return 0

    def wait_writable(self) -> None:
        """Optional back-pressure: block a user thread briefly while congested.

        The core calls it before a send while :attr:`congested` is true (see
        :meth:`set_congested`); never from an IO thread.
        """

    def configure(self, **options: Any) -> None:
        """Take the transport options given to bind/connect (e.g. ``ssl_context=``).

        Called before :meth:`open_bind` / :meth:`open_connect` when options
        were given. The default refuses every option.
        """
        if options:
            raise TypeError(
                f"The {self.scheme!r} transport takes no options, got "
                f"{', '.join(sorted(options))} (e.g. ssl_context= needs a 'tls://' address)."
            )

    def slots_changed(self, added: frozenset[int], removed: frozenset[int]) -> None:
        """Optional: the slots the local context listens on changed.

        Called in the thread that made or closed the channel, after the
        channel was registered (or unregistered), on every alive connection;
        may block briefly (a broker transport subscribes here, so that the
        channel's constructor returns once the broker filters for it). The
        arguments say what changed; ``context.listened_slots()`` is the
        current set at any time, and the one to read when established.
        """

    def links_changed(self) -> None:
        """Optional: another connection of this context was established or closed.

        Called on every other alive connection, in the thread that reported
        the change (an IO thread, or a user thread closing a link), so it must
        not block. A bus transport that filters by slot listens to every slot
        while its context also has other links: it relays for them, and
        cannot know what their peers listen to.
        """

    # -- what a transport calls (provided by the base) ----------------------

    def set_waiting(self, hostname1: str, port1: int) -> None:
        """Report that the connection is bound and waits for a peer at ``hostname1:port1``."""
        self.__hostname1, self.__port1 = str(hostname1), int(port1)
        self.__status = STATUS_WAITING

    def set_established(
        self,
        peer_id: int,
        peer_pid: int,
        *,
        hosting: bool,
        hostname1: str | None = None,
        port1: int | None = None,
        hostname2: str | None = None,
        port2: int | None = None,
        announce: bool = False,
    ) -> bool:
        """Report the link up: the context starts routing to it.

        Args:
            peer_id: The id of the context at the other end.
            peer_pid: Its process id.
            hosting: True on the side that was bound (status ``hosting``),
                False on the side that connected (``connected``).
            hostname1: This end's host name or address, where known.
            port1: This end's port, where known.
            hostname2: The other end's host name or address, where known.
            port2: The other end's port, where known.
            announce: Tell the network about the new link (the context sends
                NEW_CONNECTION, which state channels and sync mode act on).
                :meth:`Context.connect` does it after :meth:`open_connect`
                returns; a transport that joins a bus when *bound* sets it.

        Returns:
            False (and nothing changed) when the connection was closed or is
            closing meanwhile: the transport then drops the link.
        """
        if self.__status == STATUS_CLOSING or self.__closed_event.is_set():
            return False
        self.__id2, self.__pid2 = int(peer_id), int(peer_pid)
        if hostname1 is not None:
            self.__hostname1 = str(hostname1)
        if port1 is not None:
            self.__port1 = int(port1)
        if hostname2 is not None:
            self.__hostname2 = str(hostname2)
        if port2 is not None:
            self.__port2 = int(port2)
        self.__status = STATUS_HOSTING if hosting else STATUS_CONNECTED
        self.__context._connection_established(self)
        if announce:
            self.__context._send_context_message("NEW_CONNECTION")
        return True

    def announce(self) -> None:
        """Tell the network that this context joined (the context message NEW_CONNECTION).

        :meth:`set_established` does it with ``announce=True``; a bus transport
        calls it again when it joined anew (after reconnecting to its broker),
        or where a channel made after the join should be announced, so that
        holders of a state re-send it and sync-mode subscribers hear of it.
        """
        self.__context._send_context_message("NEW_CONNECTION")

    def deliver(self, batch: list[Any]) -> None:
        """Hand received packages to the context, as one batch.

        ``batch`` alternates header tuples and payloads, ``[header, payload,
        header, payload, ...]`` (what :meth:`FrameDecoder.feed_raw` returns;
        no object per package). Call from any thread, but one call at a time
        per connection, in the order the packages arrived.
        """
        self.__context._deliver(self, batch)

    def deliver_packages(self, packages: Iterable[Package]) -> None:
        """Like :meth:`deliver`, for :class:`~yoton_core.transport.Package` objects."""
        flat: list[Any] = []
        for p in packages:
            flat.append(package_header(p))
            flat.append(p.data)
        self.__context._route(self, flat)

    def set_closed(self, reason: str) -> None:
        """Report the link gone, with a reason the user reads (once; later calls are ignored)."""
        if self.__closed_event.is_set():
            return
        self.__close_reason = reason
        was = self.__status
        self.__status = STATUS_CLOSED
        self.__log_closed(reason, was)
        self.__context._connection_closed(self)
        self.__closed_event.set()
        self.closed.emit(self, reason)

    def __log_closed(self, reason: str, was: int) -> None:
        """INFO for a close on purpose (ours or the peer's), WARNING for a fault."""
        if was >= STATUS_HOSTING:
            where = f"connection {describe_link(self)}"
        else:
            where = f"listener at {endpoint(self.__hostname1, self.__port1)}"
        if self.__closed_on_purpose or reason == CLOSED_FROM_OTHER_END:
            self.__log.info("%s closed: %s", where, reason)
        else:
            self.__log.warning("%s lost: %s", where, reason)

    def set_timed_out(self, timed_out: bool) -> None:
        """Report silence for :attr:`timeout` seconds (True) or data flowing again (False).

        Emits ``timedout(connection, flag)`` (and logs it) only when the flag changes.
        """
        timed_out = bool(timed_out)
        if timed_out != self.__timed_out:
            self.__timed_out = timed_out
            if timed_out:
                self.__log.warning(
                    "nothing received for %.1f s (timed out): %s",
                    self.__timeout,
                    describe_link(self),
                )
            else:
                self.__log.info("receiving again: %s", describe_link(self))
            self.timedout.emit(self, timed_out)

    def set_congested(self, congested: bool) -> None:
        """Report the outgoing queue above (True) or back below (False) its high-water mark.

        While it is congested the context calls :meth:`wait_writable` before
        each send, so user threads wait for the link instead of filling memory.
        Report False too when a wait gave up (a stalled peer): senders then go
        on, and the queue's discard policy applies.
        """
        self.__congested = congested
        if congested:
            self.__context._congestion = True

    def count_sent(self, packages: int, nbytes: int) -> None:
        """Add to the sent counters (packages handed over, and their bytes)."""
        self.__n_sent += packages
        self.__b_sent += nbytes

    def count_received(self, packages: int, nbytes: int) -> None:
        """Add to the received counters."""
        self.__n_recv += packages
        self.__b_recv += nbytes

    def count_dropped(self, packages: int = 1) -> None:
        """Count packages discarded by a full queue."""
        self.__n_dropped += packages
