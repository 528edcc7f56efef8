"""The stream-connection base: everything a byte-stream transport needs.

A transport that moves bytes (TCP, Unix sockets, TLS, ...) subclasses
:class:`StreamConnection` and says only how to parse an address, listen and
connect. The core does the rest, identically for every such transport: the
handshake, framing, batching, heartbeats, timed-out detection, flush,
back-pressure and a clean close that tells the peer. That machinery lives in
a :class:`~._stream_link.StreamLink` the connection owns (under a mangled
name), so none of its state shares the subclass's namespace.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import trio

from ._connection import Connection, declare_final
from ._handshake_io import HandshakeResult, run_handshake
from ._log import endpoint
from ._poller import AVAILABLE as POLLER_AVAILABLE
from ._stream_link import StreamLink
from ._stream_queue import send_package

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["StreamConnection", "link_of"]


class StreamConnection(Connection):
    """Base class of connections that carry yoton's framed byte stream.

    Subclasses implement :meth:`parse_address`, :meth:`open_listener` and
    :meth:`connect_once`; optionally :meth:`wrap_server_stream`,
    :meth:`handshake` (extend it, calling ``super()``), :meth:`target_names`,
    :meth:`describe_target`, :meth:`listener_names`, :meth:`stream_peer`, :meth:`tune_socket` and
    :meth:`listener_closed`, and set the class attributes below. The transport
    half of :class:`Connection`'s contract (``open_bind``, ``open_connect``,
    ``send_package``, ``shutdown``, ``flush``, ``queued_count``,
    ``wait_writable``) is implemented here and may not be redefined.
    """

    #: Seconds a peer may take to complete the handshake.
    handshake_timeout: float = 3.0
    #: Handshakes that may be in progress at once on one bind; when more peers
    #: arrive the oldest pending one is dropped, so silent clients cannot keep a
    #: real peer out.
    max_pending_handshakes: int = 16
    #: Let user threads write to an idle socket themselves (see _stream_queue.py).
    direct_writes: bool = True
    #: Read a plain socket outside trio, in the poller thread or in the thread
    #: that waits for the data (see _poller.py); else trio's receive loop reads.
    poll_reads: bool = POLLER_AVAILABLE

    def __init__(self, context: Context, name: str = "") -> None:
        super().__init__(context, name)
        if context.handshake_timeout is not None:  # Context(handshake_timeout=...)
            self.handshake_timeout = context.handshake_timeout
        self.__link = StreamLink(self, context)

    # -- what a stream transport implements ---------------------------------

    def parse_address(self, address: str) -> Any:
        """Turn the address (scheme removed) into a transport target; ValueError if bad."""
        raise NotImplementedError(f"{type(self).__name__} does not implement parse_address()")

    def open_listener(self, target: Any, max_tries: int) -> socket.socket:
        """Return a bound, listening stdlib socket for ``target`` (blocking call)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement open_listener()")

    async def connect_once(self, target: Any) -> trio.abc.Stream:
        """Make one attempt to open a stream to ``target``; raise OSError on failure.

        The core retries until the connect timeout.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement connect_once()")

    async def wrap_server_stream(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        """Hook to wrap an accepted stream (e.g. in TLS) before the handshake."""
        return stream

    async def handshake(self, stream: trio.abc.Stream, role: str) -> HandshakeResult:
        """Run yoton's handshake on a new stream; ``role`` is ``"bind"`` or ``"connect"``.

        Override to do something first (e.g. a TLS handshake) and return
        ``await super().handshake(stream, role)``; raise
        :class:`~yoton_core.HandshakeError` with a reason.
        """
        return await run_handshake(stream, role, self.context)

    def target_names(self, target: Any) -> tuple[str, int]:
        """``(hostname, port)`` to report for a connect target."""
        if isinstance(target, tuple) and len(target) == 2:
            return str(target[0]), int(target[1])
        return str(target), 0

    def describe_target(self, target: Any) -> str:
        """The target as a user reads it in an error message, e.g. ``127.0.0.1:5000``."""
        return endpoint(*self.target_names(target))

    def listener_names(self, sock: socket.socket) -> tuple[str, int]:
        """``(hostname1, port1)`` a bind reports for its listening socket."""
        name = sock.getsockname()
        if isinstance(name, tuple):
            return str(name[0]), int(name[1])
        return str(name), 0

    def stream_peer(self, stream: trio.abc.Stream) -> tuple[str, int]:
        """``(hostname2, port2)`` of an accepted stream."""
        sock = getattr(stream, "socket", None)
        if sock is None:
            inner = getattr(stream, "transport_stream", None)
            sock = getattr(inner, "socket", None)
        try:
            peer = sock.getpeername() if sock is not None else ""
        except OSError:
            peer = ""
        if isinstance(peer, tuple):
            return str(peer[0]), int(peer[1])
        return str(peer or ""), 0

    def tune_socket(self, sock: socket.socket) -> None:
        """Hook: set options on an established plain socket (e.g. buffer sizes)."""

    def listener_closed(self) -> None:
        """Hook: a bind accepts no more peers (its peer came: called before the
        link is established; or it was closed). Called once, in the IO engine;
        e.g. remove a socket file."""

    # -- the transport half of the contract, implemented by the link ---------

    #: The hot path: the context's sends land in the link's queue without a
    #: call layer in between (_stream_queue.py).
    send_package = send_package

    def open_bind(self, address: str, max_tries: int) -> None:
        self.__link.bind(address, max_tries)

    def open_connect(self, address: str, timeout: float) -> None:
        self.__link.connect(address, timeout)

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        self.__link.shutdown(reason, notify_peer)

    def flush(self, timeout: float = 3.0) -> None:
        """Block until everything queued so far was handed to the OS.

        Raises:
            yoton.TimeoutError: if that takes longer than ``timeout`` seconds.
            ConnectionClosedError / BrokenConnectionError: if the connection
                closes before the data went out.
        """
        self.__link.flush(timeout)

    def queued_count(self) -> int:
        return self.__link.queued_count()

    def wait_writable(self) -> None:
        self.__link.wait_writable()


declare_final(
    StreamConnection,
    (
        "open_bind",
        "open_connect",
        "send_package",
        "shutdown",
        "flush",
        "queued_count",
        "wait_writable",
    ),
)


def link_of(conn: StreamConnection) -> StreamLink:
    """The machinery of ``conn`` (for the core's white-box tests)."""
    return conn._StreamConnection__link  # type: ignore[attr-defined]  # (mangled: mypy does not)
