"""Everything a transport plugin needs, and nothing else (``yoton.transport``).

A transport is a :class:`Connection` subclass with a class attribute
``scheme``, returned by a :data:`hookimpl` function
``yoton_connection_types()``. Plugins, yoton's own included, import only
:mod:`yoton` and this module: the names here are the stable contract, and
everything in ``yoton_core._*`` may change at any release.

**A byte-stream transport** subclasses :class:`StreamConnection` and
implements three methods; the core does the handshake, framing, batching,
heartbeats, timeouts, flush and close:

================================  ===========================================
``parse_address(address)``        the address (scheme removed) -> a target
                                  (raise ValueError quoting the address)
``open_listener(target, tries)``  a bound, listening stdlib socket
``async connect_once(target)``    one attempt to open a ``trio.abc.Stream``
================================  ===========================================

Optional hooks: ``wrap_server_stream`` (e.g. TLS), ``handshake`` (extend with
``super()``; it returns a :class:`HandshakeResult`), ``target_names``,
``describe_target``, ``listener_names``, ``stream_peer``, ``tune_socket``,
``listener_closed``, and the class attributes ``handshake_timeout``,
``max_pending_handshakes``, ``direct_writes`` and ``poll_reads``.

**Any other transport** (a message bus, shared memory, queues) subclasses
:class:`Connection`. What it implements (the core calls these):

================================  ===========================================
``open_bind(address, max_tries)`` listen; return at once after
                                  ``set_waiting`` (or ``set_established``)
``open_connect(address, timeout)`` block until connected (``set_established``)
                                  or raise :class:`ConnectError` saying why
                                  (or yoton's ``TimeoutError``)
``send_package(header, payload)`` the hot path: queue one package; thread-safe,
                                  never blocks; called under the context lock
                                  (calls arrive in sequence order)
``shutdown(reason, notify_peer)`` begin closing; end with ``set_closed(reason)``
``flush(timeout)``                block until queued packages were handed over
``queued_count()``                optional, for ``stats``
``wait_writable()``               optional back-pressure while congested
``configure(**options)``          optional: options of bind/connect
``slots_changed(added, removed)`` optional: local channels' slots changed
``links_changed()``               optional: another link of the context came
                                  or went (a bus relays for its other links)
================================  ===========================================

What it calls (provided by the base class, which refuses subclasses that
redefine them): ``set_waiting(hostname1, port1)``,
``set_established(peer_id, peer_pid, *, hosting, hostname1=, port1=,
hostname2=, port2=, announce=False)``, ``deliver(batch)`` (flat ``[header,
payload, ...]``) or ``deliver_packages(packages)``, ``set_closed(reason)``,
``set_timed_out(flag)``, ``set_congested(flag)``, ``count_sent(n, nbytes)``,
``count_received(n, nbytes)``, ``count_dropped(n)``, ``announce()`` (the
context joined, again: a bus link after reconnecting); it logs to ``log``
(``yoton.<scheme>``; the base logs the link's life itself) and reads
``context``: its ``id``, ``queue_params``, ``max_message_size``,
``handshake_timeout``, ``has_auth_key``, ``listened_slots()`` and
``sent_slots()``. The base class keeps its own state under mangled names, so
a plugin's private attributes never collide with the core's.

**A bus** (a broker routes between every context on it, like NATS): set the
class attribute ``joins_bus = True``. ``bind`` and ``connect`` both join
(``set_established(0, 0, hosting=False, ..., announce=True)`` from
``open_bind``; ``connect`` announces by itself), the link has no single peer,
and the conformance kit skips its peer-to-peer checks. Subscribe to what
``listened_slots()`` names (and follow ``slots_changed``), to everything while
``links_changed`` says the context has other links, and refuse a context
whose ``has_auth_key`` is true: there is no yoton handshake on a bus.

**Errors.** ``open_connect`` raises :class:`ConnectError` (a
``ConnectionRefusedError``; chain the cause, and end a "nobody is there"
message with :data:`ONE_PEER_HINT`), a bad address ``yoton.InvalidArgumentError``
(quote the address); ``flush`` raises yoton's :class:`TimeoutError`,
:class:`ConnectionClosedError` or :class:`BrokenConnectionError`. A reason
given to ``set_closed`` is what the user reads: "Closed from other end." for
the peer's own close, a description of the fault otherwise.

**Threads and the IO engine.** yoton runs one trio event loop per process in
a daemon thread; :func:`engine` gives a transport its ``spawn``,
``run_sync_soon``, ``run``, ``in_engine_thread``, ``in_io_thread`` and
``add_ticker``/``remove_ticker`` (keep-alive callbacks every
:data:`TICK_INTERVAL` seconds, or when the callback says it is next due, up
to :data:`TICK_MAX_SLEEP` later). A thread that reads and delivers packages
must never block waiting for the network (``in_io_thread()``).

**Letting the core read a socket.** A transport whose input is a plain
socket (or a pipe) hands it to the core with ``engine().watch_socket(conn,
sock, receive, ended)`` instead of reading it in a thread or task of its own:
the process's poller thread reads it, and so does a user thread of the
context while it waits for yoton data (``Future.result()``,
``SubChannel.recv()``, a RepChannel worker), which then reads the reply it
waits for itself: no hand-off between threads on a round trip (a futex
wake-up and a GIL transfer in each process). ``receive(data)`` decodes each chunk
and calls ``deliver``, one thread at a time, in order, and must not block;
``ended(exc)`` says once that reading stopped by itself (EOF, a failed read,
``receive`` raised or returned False); :meth:`SocketWatch.stop` stops it,
after which the socket may be closed.
"""

from __future__ import annotations

from ._address import bind_port_offsets, parse_host_port, split_address, split_scheme
from ._auth import pairing_refusal
from ._connection import Connection, ConnectionStatistics
from ._context import Context
from ._decoder import FrameDecoder
from ._engine import TICK_INTERVAL, TICK_MAX_SLEEP, Engine, get_engine
from ._errors import (
    ONE_PEER_HINT,
    BrokenConnectionError,
    ConnectError,
    ConnectionClosedError,
    HandshakeError,
    ProtocolError,
    TimeoutError,
)
from ._handshake_io import HandshakeResult
from ._hashing import port_hash
from ._hookspecs import hookimpl
from ._socketwatch import SocketWatch
from ._stream import StreamConnection
from ._wire import (
    CONTROL,
    HEADER,
    HEADER_SIZE,
    SLOT_CONTEXT,
    Header,
    Package,
    _bad_control,
    encode_package,
    package_header,
)
from ._wire import raw_package as make_package

__all__ = [
    "HEADER_SIZE",
    "ONE_PEER_HINT",
    "SLOT_CONTEXT",
    "TICK_INTERVAL",
    "TICK_MAX_SLEEP",
    "BrokenConnectionError",
    "ConnectError",
    "Connection",
    "ConnectionClosedError",
    "ConnectionStatistics",
    "Context",
    "Engine",
    "FrameDecoder",
    "HandshakeError",
    "HandshakeResult",
    "Header",
    "Package",
    "ProtocolError",
    "SocketWatch",
    "StreamConnection",
    "TimeoutError",
    "bind_port_offsets",
    "encode_package",
    "engine",
    "hookimpl",
    "make_package",
    "pack_header",
    "package_header",
    "pairing_refusal",
    "parse_host_port",
    "port_hash",
    "split_address",
    "split_scheme",
    "unpack_header",
]


def engine() -> Engine:
    """The process-wide IO engine (a trio loop in a daemon thread, started on first use).

    Call it when needed rather than keeping it across a ``fork``: a child
    process gets a fresh engine.
    """
    return get_engine()


def pack_header(header: Header) -> bytes:
    """The :data:`HEADER_SIZE` bytes of a package header (seven little-endian u64)."""
    return HEADER.pack(*header)


def unpack_header(data: bytes, offset: int = 0) -> Header:
    """Read one package header from ``data[offset:]``, checking its control word.

    Raises:
        ProtocolError: fewer than :data:`HEADER_SIZE` bytes, or not a yoton
            header (the message shows the bytes found).
    """
    if len(data) - offset < HEADER_SIZE:
        raise ProtocolError(
            f"A package header needs {HEADER_SIZE} bytes, got {max(len(data) - offset, 0)}."
        )
    header: Header = HEADER.unpack_from(data, offset)
    if header[0] != CONTROL:
        raise ProtocolError(_bad_control(bytes(data[offset : offset + 8])))
    return header
