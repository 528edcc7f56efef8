"""The Context: a node of the yoton network.

A context owns its connections, its channels (by slot) and the sending half of
routing: every send takes its sequence number and enters every connection's
queue under one lock, so packages of one source leave in sequence order on
every link, even with many sending threads (the 2.x defect that lost messages
with concurrent senders). The receiving half lives in :mod:`._routing`.
"""

from __future__ import annotations

import atexit
import collections
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from . import _frames
from ._address import address_error, split_scheme
from ._auth import normalize_auth_key
from ._block import check_timeout
from ._channels import BaseChannel
from ._connection import Connection
from ._ctxlock import ContextLock
from ._errors import InvalidArgumentError
from ._fan import settle_fan
from ._joins import JoinAnnouncer
from ._links import LinkKeeper
from ._log import apply_verbose, endpoint, get_logger
from ._plugins import resolve_transport
from ._routing import Router
from ._stream_queue import DIRECT_BATCH, FRAME_MAX
from ._wire import CONTROL, SLOT_CONTEXT, Header, Package

_compiled_frame = _frames.frame if _frames.ACCELERATED else None
_pack_tail = _frames.TAIL.pack

if TYPE_CHECKING:
    from ._poller import PolledSocket
    from ._stream_queue import StreamQueue

__all__ = ["Context", "ConnectionCollection", "new_uid"]

logger = get_logger("context")

DEFAULT_QUEUE_PARAMS = (10000, "old")
DEFAULT_MAX_MESSAGE_SIZE = 2**30

#: Contexts alive in this process, flushed and closed at interpreter exit.
_live_contexts: weakref.WeakSet[Context] = weakref.WeakSet()
#: Total time the exit handler may spend flushing and closing.
EXIT_GRACE = 2.0

_uid_lock = threading.Lock()
_uid_last_ms = 0


def new_uid() -> int:
    """A 64-bit id: 32 bits of strictly increasing milliseconds, 32 random bits."""
    global _uid_last_ms
    with _uid_lock:
        ms = int(time.time() * 1000) & 0xFFFFFFFF
        if ms <= _uid_last_ms:
            ms = (_uid_last_ms + 1) & 0xFFFFFFFF
        ms = ms or 1
        _uid_last_ms = ms
    return (ms << 32) | random.getrandbits(32)


class ConnectionCollection(list[Any]):
    """A list of connections that can also be indexed by connection name."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if not key:
                raise KeyError("An empty string is not a valid connection name.")
            for conn in self:
                if conn.name == key:
                    return conn
            names = ", ".join(repr(c.name) for c in self if c.name) or "none"
            raise KeyError(f"No connection named {key!r} (named connections: {names}).")
        return super().__getitem__(key)


class Context(Router, JoinAnnouncer, LinkKeeper):
    """A node in the yoton network.

    Channels are created on a context; connections join contexts into a
    network (:meth:`bind` waits for one peer, :meth:`connect` joins one that
    is bound). A message sent in any context reaches the matching channels of
    every context in the network, hopping through the contexts between them,
    each package delivered once even where connections form a cycle. Each
    context has a unique 64-bit :attr:`id`. Making a context opens nothing:
    the IO threads start with the first connection.

    Args:
        verbose: Show yoton's log records: 1 (or True) connection life and
            faults (INFO), 2 per-package detail too (DEBUG); 0 leaves it to
            the application's logging configuration. Process-wide; see
            docs/logging.md.
        queue_params: ``(N, discard_mode)``: the size of every queue that
            belongs to this context (channel inboxes, connection outboxes, the
            start-up queue) and what to drop when one is full: ``"old"`` (the
            oldest item) or ``"new"`` (the incoming one). Drops are counted.
            Default ``(10000, "old")``.
        transport: The scheme to use for addresses without one (``"tcp"``,
            ``"unix"``, ``"inproc"``, or any installed plugin). Defaults to the
            ``YOTON_TRANSPORT`` environment variable, then ``"tcp"``.
        max_message_size: Largest payload accepted from or sent to the network
            (default 1 GiB); sending a larger one raises, and a peer announcing
            a larger one is disconnected before its payload is buffered.
        auth_key: A shared secret (bytes, or str encoded as UTF-8). When set,
            every stream connection (tcp, unix, tls) must prove it knows the
            same key in an HMAC challenge-response during the handshake, and
            inproc pairs only contexts with the same key. Off (None) by
            default, for 2.x wire compatibility. See docs/security.md.
        handshake_timeout: Seconds a peer may take to complete the handshake
            (authentication included); None keeps the transport's default (3 s).

    Raises:
        InvalidArgumentError: An argument is of the wrong type or out of range.
        TransportNotFoundError: ``transport`` names no installed scheme (the
            message lists them).
    """

    def __init__(
        self,
        verbose: int = 0,
        queue_params: tuple[int, str] | None = None,
        transport: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        auth_key: bytes | str | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self._id = new_uid()
        self._verbose = verbose
        apply_verbose(verbose)
        self._lock = ContextLock()
        self._lock_free = self._lock.free  # the hot paths take the token themselves
        self._send_seq = 0
        self._recv_seq = 0
        self._source_map: dict[int, int] = {}
        # Learned routes: context id -> the connection its packages came in on.
        # A package for one context goes that way only, not to every link
        # (2.x flooded them); unknown or gone: flooded as before.
        self._routes: dict[int, Connection] = {}
        self._connections: list[Connection] = []  # alive: waiting or connected
        self._connected: tuple[Connection, ...] = ()
        # The socket readers of this context's connections, for threads that
        # read them while they wait (_poller.borrow_wait).
        self._readers: tuple[PolledSocket, ...] = ()
        # (header, payload) of what was sent before any connection existed.
        self._startup_queue: collections.deque[tuple[Header, bytes]] = collections.deque()
        self._send_channels: dict[int, BaseChannel] = {}
        self._recv_channels: dict[int, BaseChannel] = {}
        self._n_duplicates = 0
        self._n_startup_dropped = 0
        # Set by a connection whose outgoing queue passes its high-water mark
        # (Connection.set_congested); _send then lets it drain.
        self._congestion = False
        self._n_unroutable = 0
        # Join announcements only where wanted (_joins.py).
        self._joins_wanting: set[Connection] = set()
        self._joins_told: dict[Connection, bool | None] = {}
        self._joins_declined: set[Connection] = set()
        self._join_level: tuple[bool, int, Any] = (False, 0, None)
        self._joins_unsent: collections.deque[Any] = collections.deque()
        # The last small frame a stream connection packed under our lock, and
        # its header object (a broadcast's other links reuse it: _stream_queue).
        self._frame_of: Any = None
        self._frame = b""
        # The stream queues of all connected links, when every one is ours
        # (_fan.fan_links): _send then packs a small frame once and
        # appends it itself; None otherwise.
        # (_fan_limit, the queue length up to which it does, is set with queue_params.)
        self._fan_out: tuple[StreamQueue, ...] | None = None
        # The first 24 bytes of the frames of the last slot sent on (_frames.py).
        self._prefix_slot: int | None = None
        self._prefix = b""
        # _send's local delivery: the receiving channel of _local_slot (None:
        # none), so that a stream of sends looks it up once; reset whenever
        # a channel comes or goes (all under the context lock).
        self._local_slot: int | None = None
        self._local_ch: BaseChannel | None = None
        self.queue_params = queue_params if queue_params is not None else DEFAULT_QUEUE_PARAMS
        if transport is not None:
            if not isinstance(transport, str):
                raise InvalidArgumentError(
                    f"transport must be a scheme name such as 'tcp', got {transport!r}"
                )
            resolve_transport(transport)  # fail early with the list of known schemes
        self._transport = transport
        if not isinstance(max_message_size, int) or max_message_size < 1:
            raise InvalidArgumentError(
                f"max_message_size must be a positive int, got {max_message_size!r}"
            )
        self._max_message_size = max_message_size
        # -- security and limits (_auth.py, docs/security.md)
        self._auth_key = normalize_auth_key(auth_key)
        self._handshake_timeout = check_timeout(
            handshake_timeout, "Context() handshake_timeout", none=True, above=True
        )
        # -- end of security and limits
        _live_contexts.add(self)

    # -- properties ------------------------------------------------------------

    @property
    def id(self) -> int:
        """The 64-bit id of this context."""
        return self._id

    @property
    def queue_params(self) -> tuple[int, str]:
        """``(N, discard_mode)`` for the queues of this context."""
        return (self._queue_n, "old" if self._queue_discard_old else "new")

    @queue_params.setter
    def queue_params(self, value: tuple[int, str]) -> None:
        if not isinstance(value, tuple) or len(value) != 2:
            raise InvalidArgumentError(
                f"queue_params must be a 2-tuple (N, 'old'|'new'), got {value!r}"
            )
        n, mode = value
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgumentError(f"queue_params[0] must be a positive int, got {n!r}")
        if not isinstance(mode, str) or mode.lower() not in ("old", "new"):
            raise InvalidArgumentError(f"queue_params[1] must be 'old' or 'new', got {mode!r}")
        self._queue_n = n
        self._queue_discard_old = mode.lower() == "old"
        self._fan_limit = min(n, DIRECT_BATCH)

    @property
    def max_message_size(self) -> int:
        """Largest payload, in bytes, this context accepts from or sends to the network."""
        return self._max_message_size

    @property
    def handshake_timeout(self) -> float | None:
        """Seconds a peer may take to complete the handshake; None: the transport's default."""
        return self._handshake_timeout

    def listened_slots(self) -> frozenset[int]:
        """The slots (hashes) on which channels of this context receive.

        A transport that filters by slot (a broker subscribing per slot)
        reads it when a connection is established and follows the changes
        through :meth:`Connection.slots_changed`. Context messages
        (``SLOT_CONTEXT``) are not in it: a transport always carries them.
        """
        return frozenset(self._recv_channels)

    def sent_slots(self) -> frozenset[int]:
        """The slots (hashes) on which channels of this context send.

        The mirror of :meth:`listened_slots`, for a transport that routes by
        slot: who acts on this context's news (a holder of a state on a slot
        it sends on, a sync-mode subscriber of what it publishes) listens on
        these. They change with :meth:`Connection.slots_changed` too (every
        channel also receives on some slot).
        """
        return frozenset(self._send_channels)

    @property
    def has_auth_key(self) -> bool:
        """True when this context was given ``auth_key``: its links must prove the key.

        A transport that cannot run yoton's handshake between contexts (a bus,
        where a broker routes between them) refuses such a context rather than
        ignore the key.
        """
        return self._auth_key is not None

    @property
    def transport(self) -> str:
        """The scheme used for addresses that do not name one."""
        return self._transport or os.environ.get("YOTON_TRANSPORT") or "tcp"

    @property
    def connections(self) -> ConnectionCollection:
        """The connected connections (indexable by name)."""
        return ConnectionCollection(self._connected)

    @property
    def connections_all(self) -> ConnectionCollection:
        """All alive connections, including those waiting for a peer."""
        with self._lock:
            return ConnectionCollection(c for c in self._connections if c.is_alive)

    @property
    def connection_count(self) -> int:
        """The number of connected connections."""
        return len(self._connected)

    def statistics(self) -> dict[str, int]:
        """Counters of the routing layer."""
        return {
            "connections": len(self._connected),
            "sent": self._send_seq,
            "deposited": self._recv_seq,
            "duplicates_dropped": self._n_duplicates,
            "startup_queue": len(self._startup_queue),
            "startup_dropped": self._n_startup_dropped,
        }

    def __repr__(self) -> str:
        return f"<Context {self._id:016x} with {len(self._connected)} connections>"

    # -- connecting -------------------------------------------------------------

    def _new_connection(
        self, address: str, name: str, options: dict[str, Any] | None = None
    ) -> tuple[Connection, str]:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a str, got {type(name).__name__}")
        scheme, rest = split_scheme(address)
        cls = resolve_transport(scheme or self.transport)
        conn = cls(self, name)
        if options:
            conn.configure(**options)
        return conn, rest

    def bind(self, address: str, max_tries: int = 1, name: str = "", **options: Any) -> Connection:
        """Listen at ``address`` for one peer; return the (waiting) Connection at once.

        Args:
            address: ``[scheme://]host:port``; the port may be a name (hashed to
                a number), ``name+offset``, or 0 for any free port (read it back
                from ``connection.port1``).
            max_tries: How many ports to try, counting up from the given one.
            name: A name for the connection.
            **options: Transport options, e.g. ``ssl_context=`` for ``tls://``.
        """
        conn, rest = self._new_connection(address, name, options)
        try:
            conn.open_bind(rest, max_tries)
        except OSError as exc:
            raise address_error("Cannot bind to", address, exc)  # noqa: B904 (it sets the cause)
        with self._lock:
            # A peer may already have connected (and _connection_established
            # added conn) before we get here, e.g. over inproc.
            if conn not in self._connections and conn.is_alive:
                self._connections.append(conn)
        if conn.is_waiting:
            conn.log.info("waiting for a peer at %s", endpoint(conn.hostname1, conn.port1))
        return conn

    def connect(
        self, address: str, timeout: float = 1.0, name: str = "", **options: Any
    ) -> Connection:
        """Connect to a context bound at ``address``; block until connected.

        ``**options`` are transport options, e.g. ``ssl_context=`` for ``tls://``.

        Raises:
            OSError: when nobody accepts within ``timeout`` seconds or the
                handshake fails; the message says which.
        """
        timeout = check_timeout(timeout, "Context.connect() timeout", finite=True)
        conn, rest = self._new_connection(address, name, options)
        with self._lock:
            self._connections.append(conn)
        try:
            conn.open_connect(rest, timeout)
        except BaseException as exc:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            if isinstance(exc, OSError):
                raise address_error("Cannot connect to", address, exc)  # noqa: B904
            raise
        # Always to every direct peer, as 2.x: relays decide who else hears it
        # (_joins.py).
        self._send_context_message("NEW_CONNECTION")
        return conn

    async def connect_async(
        self, address: str, timeout: float = 1.0, name: str = "", **options: Any
    ) -> Connection:
        """:meth:`connect` for a trio or asyncio task: waits without blocking its loop.

        The connect runs in a worker thread (every transport's connect is a
        blocking call). Cancelling the awaiting task stops the waiting at
        once; a connection that completes afterwards is closed, so nothing is
        left half-used. Same arguments, result and errors as :meth:`connect`.
        """
        from ._async import run_blocking

        return await run_blocking(
            lambda: self.connect(address, timeout, name, **options),
            cleanup=lambda conn: conn.close("Closed: connect_async() was cancelled."),
        )

    async def flush_async(self, timeout: float = 5.0) -> bool:
        """:meth:`flush` for a trio or asyncio task: waits without blocking its loop.

        Waits in a worker thread; cancelling the awaiting task stops the
        waiting (the data goes out all the same).
        """
        from ._async import run_blocking

        return await run_blocking(lambda: self.flush(timeout))

    def close(self) -> None:
        """Close every connection and every channel; the context stays usable."""
        for conn in list(self._connections):
            conn.close("Closed by the context.")
        self.close_channels()

    def close_channels(self) -> None:
        """Close every channel of this context."""
        channels = set(self._send_channels.values()) | set(self._recv_channels.values())
        for ch in channels:
            ch.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every connected connection has handed its queue to the OS."""
        for conn in self._connected:
            conn.flush(timeout)
        return True

    # -- channels -------------------------------------------------------------

    def _register_channel(
        self, channel: BaseChannel, slot_out: int | None, slot_in: int | None
    ) -> None:
        with self._lock:
            taken = self._send_channels.get(slot_out) if slot_out is not None else None
            if taken is None and slot_in is not None:
                taken = self._recv_channels.get(slot_in)
            if taken is not None:
                raise InvalidArgumentError(
                    f"Slot not free: this context already has a {taken._describe()} (slot "
                    "names ignore case); a context has one channel of each kind per slot and "
                    "message type. Use that one (threads may share it), close() it first, or "
                    "choose another slot name."
                )
            if slot_out is not None:
                self._send_channels[slot_out] = channel
            if slot_in is not None:
                self._recv_channels[slot_in] = channel
                self._local_slot = None
            if channel._wants_joins:
                self._joins_refresh()
        if slot_in is not None:
            self._slots_changed(frozenset((slot_in,)), frozenset())

    def _unregister_channel(self, channel: BaseChannel) -> None:
        removed: frozenset[int] = frozenset()
        with self._lock:
            for table in (self._send_channels, self._recv_channels):
                for key in [k for k, v in table.items() if v is channel]:
                    del table[key]
                    if table is self._recv_channels:
                        removed = frozenset((key,))
                        self._local_slot = None
            if channel._wants_joins:
                self._joins_refresh()
        if removed:
            self._slots_changed(frozenset(), removed)

    # -- sending -------------------------------------------------------------

    def _send(
        self, data: bytes, slot: int, origin: Any = None, dest_id: int = 0, dest_seq: int = 0
    ) -> int:
        """Send a package from this context: number it and hand it to every link.

        Called from user threads (and IO threads, for protocol answers). Local
        channels but ``origin`` (the sender) get it too, in this thread. It
        travels as a header tuple plus payload (:data:`_wire.Header`). Returns
        its sequence number (sync mode counts what is on its way).
        """
        if self._congestion:  # a connection's queue is above its high-water mark
            self._ease_congestion()
        local = None
        my_id = self._id
        free = self._lock_free  # the context lock, taken inline: the hottest path (_ctxlock.py)
        try:
            free.pop()
        except IndexError:
            self._lock.wait()
        try:
            seq = self._send_seq + 1
            self._send_seq = seq
            n = len(data)
            fan = self._fan_out
            if fan is not None and not dest_id and n <= FRAME_MAX:
                # Every link is one of our stream queues: pack the frame once
                # and append it wherever the queue is streaming (_stream_queue.py,
                # "The fan-out path"); the rest take the full send_package.
                if slot is not self._prefix_slot:  # (a channel passes the same int each time)
                    self._prefix = _frames.prefix(slot, my_id)
                    self._prefix_slot = slot
                if _compiled_frame is not None:  # the optional accelerator (_frames.py)
                    frame = _compiled_frame(self._prefix, seq, dest_seq, data)
                else:  # (_frames._frame, inline: a call would cost ~450 instructions)
                    frame = self._prefix + _pack_tail(seq, 0, dest_seq, n) + data
                lim = self._fan_limit
                header = None
                link = None
                try:
                    for link in fan:
                        q = link._outq
                        nq = len(q)
                        if 0 < nq < lim and nq & 63 and link._wake_pending:
                            q.append(frame)  # (counted by its _fan_base: _fan.py)
                        else:
                            if header is None:
                                header = (CONTROL, slot, my_id, seq, 0, dest_seq, n)
                                self._frame_of = header
                                self._frame = frame
                            link._pushed += seq - 1 - link._fan_base  # (appends so far)
                            link._fan_base = seq
                            link._conn.send_package(header, data)  # (which counts this one)
                except BaseException:
                    # Interrupted (Ctrl-C; an engine shut down under a
                    # send_package): the fan's bases count this package for
                    # links that did not get it. Count it for none from here
                    # on, so that flush cannot wait for it forever.
                    settle_fan(fan[fan.index(link) :] if link is not None else fan, seq)
                    raise
            else:
                if fan is not None:  # not for every link, or large: settle the fan's counts
                    settle_fan(fan, seq)
                header = (CONTROL, slot, my_id, seq, dest_id, dest_seq, n)
                conns = self._connected
                if len(conns) == 1:  # the common case, without a loop
                    conns[0].send_package(header, data)
                elif conns:
                    via = self._routes.get(dest_id) if dest_id else None
                    if via is not None:  # for one context whose way we know
                        via.send_package(header, data)
                    else:
                        for conn in conns:
                            conn.send_package(header, data)
                else:
                    startup = self._startup_queue
                    if len(startup) >= self._queue_n:
                        self._n_startup_dropped += 1
                        if not self._queue_discard_old:
                            startup = None  # type: ignore[assignment]
                        else:
                            startup.popleft()
                    if startup is not None:
                        startup.append((header, data))
            if dest_id == 0 or dest_id == my_id:
                if slot is self._local_slot:  # (a channel passes the same int each time)
                    ch = self._local_ch
                else:  # (looked up per slot: channels change only under this lock)
                    ch = self._local_ch = self._recv_channels.get(slot)
                    self._local_slot = slot
                if ch is not None and ch is not origin:
                    rseq = self._recv_seq = self._recv_seq + 1
                    if ch._inbox_inline:  # a plain inbox: no Package (as _route)
                        ch._deposit_payload(data, rseq)
                    else:  # a channel that takes deposits its own way
                        pkg = Package(data, slot, my_id, seq, dest_id, dest_seq)
                        pkg.recv_seq = rseq
                        ch._deposit(pkg)
                    local = ch
        finally:
            free.append(True)
            if self._lock.waiters:
                self._lock.wake()
        if local is not None:
            local._notify()
        return seq

    def _send_package(self, pkg: Package, origin: Any = None) -> None:
        """Send ``pkg`` (its data, slot and destination) as :meth:`_send` does."""
        self._send(pkg.data, pkg.slot, origin, pkg.dest_id, pkg.dest_seq)

    def _send_context_message(self, text: str, dest_id: int = 0) -> None:
        self._send(text.encode("utf-8"), SLOT_CONTEXT, None, dest_id)


@atexit.register
def _close_contexts_at_exit() -> None:
    """Deliver what is queued and say goodbye to peers when the program ends.

    The IO engine is a daemon thread: without this, messages sent just before
    the program exits would be lost and peers would see a dropped connection
    instead of a clean close.
    """
    deadline = time.monotonic() + EXIT_GRACE
    for ctx in list(_live_contexts):
        for conn in list(ctx._connected):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                conn.flush(min(left, 1.0))
                conn.close("Closed on command.")
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
