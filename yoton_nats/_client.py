"""Opening one NATS server session over trio: TCP, TLS, INFO, CONNECT, PING/PONG.

The sans-IO parser (``_protocol.py``) says what the server sent; this module
does the IO of the opening exchange, the way every NATS client does it:

1. TCP connect (``TCP_NODELAY``: trio sets it).
2. TLS: with ``handshake_first`` the client starts TLS before the server says
   anything (the server's ``tls { handshake_first: true }``); otherwise the
   server's plain-text INFO says ``tls_required`` and the client upgrades
   after it. Asked for TLS (an ``ssl_context``) where the server offers none,
   we refuse rather than send credentials in the clear.
3. ``CONNECT {...}`` then ``PING``; the server answers ``PONG`` once it
   accepted the connection, or ``-ERR 'Authorization Violation'`` (and closes)
   when it refused the login. So a refused login is an error at once, with
   the server's reason, not a silent wait.

``CONNECT`` asks for ``echo: false`` (a context never receives its own
publications back: the core would drop them anyway, and a bridging context
must not see what it relays), ``headers`` and ``no_responders`` (a publish with
a reply subject that nobody hears is answered by the server with status 503,
how a bind to port 0 finds a free bus), and ``verbose: false``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import trio

from ._protocol import (
    PING,
    Err,
    Event,
    Info,
    NatsProtocolError,
    Pong,
    ServerReader,
    connect_command,
)

__all__ = ["LoginRefused", "ServerSession", "SessionError", "open_session"]

#: Bytes asked for per read.
RECEIVE_SIZE = 1 << 18
CLIENT_VERSION = "3.0"


class SessionError(OSError):
    """Could not open a session with a server (the message says why)."""


class LoginRefused(SessionError):
    """The server refused our credentials: retrying cannot help."""


@dataclass
class ServerSession:
    """An open, accepted connection to one server.

    Attributes:
        stream: The trio stream (TLS-wrapped when TLS is on).
        reader: The parser holding any bytes received after the PONG.
        info: The server's latest INFO.
        host, port: The server's address as we dialled it.
        local: Our end of the TCP connection, ``(host, port)``.
        backlog: Events received after the PONG, to be handled first.
        sock: The plain stdlib socket under ``stream`` (None with TLS), which a
            sending thread may write to directly while the writer task is idle.
    """

    stream: trio.abc.Stream
    reader: ServerReader
    info: Info
    host: str
    port: int
    local: tuple[str, int]
    backlog: list[Event] = field(default_factory=list)
    sock: socket.socket | None = None


def _local_address(stream: Any) -> tuple[str, int]:
    inner = getattr(stream, "transport_stream", stream)
    sock = getattr(inner, "socket", None)
    try:
        addr = sock.getsockname() if sock is not None else ("", 0)
        return str(addr[0]), int(addr[1])
    except OSError:
        return "", 0


async def _next_event(stream: trio.abc.Stream, reader: ServerReader, backlog: list[Event]) -> Event:
    while not backlog:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise SessionError("the server closed the connection during the opening exchange")
        backlog.extend(reader.feed(data))
    return backlog.pop(0)


async def _tls(stream: trio.abc.Stream, ctx: ssl.SSLContext, host: str) -> trio.SSLStream:
    tls = trio.SSLStream(stream, ctx, server_hostname=host, https_compatible=False)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError) as exc:
        cause = exc.__cause__ or exc
        raise SessionError(f"the TLS handshake with {host} failed: {cause}") from exc
    return tls


async def open_session(
    host: str,
    port: int,
    *,
    options: dict[str, Any],
    ssl_context: ssl.SSLContext | None,
    handshake_first: bool,
    max_payload_in: int,
    subscribe: bytes = b"",
) -> ServerSession:
    """Open and log in to one server; the caller bounds it with a deadline.

    Args:
        options: Extra ``CONNECT`` fields (``user``/``pass``/``auth_token``, ``name``).
        ssl_context: TLS with this context (None: plain unless the server requires TLS,
            then the system's default context).
        handshake_first: Start TLS before the server's INFO.
        max_payload_in: Largest message accepted from the server.
        subscribe: ``SUB`` commands sent with ``CONNECT``, before the ``PING``:
            the one ``PONG`` then confirms the login and the subscriptions.

    Raises:
        LoginRefused: the server said authorization failed.
        SessionError: anything else (refused, closed, not NATS, TLS failed).
    """
    try:
        plain = await _tcp_connect(host, port)
    except OSError as exc:
        raise SessionError(f"cannot connect to the NATS server at {host}:{port}: {exc}") from exc
    stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(plain))
    try:
        if handshake_first:
            stream = await _tls(stream, ssl_context or ssl.create_default_context(), host)
        reader = ServerReader(max_payload=max_payload_in)
        backlog: list[Event] = []
        first = await _next_event(stream, reader, backlog)
        if not isinstance(first, Info):
            raise SessionError(f"{host}:{port} is not a NATS server (it began with {first!r})")
        info = first
        tls_on = handshake_first
        if not tls_on and (info.tls_required or ssl_context is not None):
            if ssl_context is not None and not (info.tls_required or info.tls_available):
                raise SessionError(
                    f"TLS was asked for (ssl_context=...) but the NATS server at {host}:{port} "
                    "offers no TLS; refusing to send credentials in the clear"
                )
            stream = await _tls(stream, ssl_context or ssl.create_default_context(), host)
            tls_on = True
        fields = {
            "verbose": False,
            "pedantic": False,
            "tls_required": tls_on,
            "echo": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python-yoton",
            "version": CLIENT_VERSION,
            **options,
        }
        await stream.send_all(connect_command(fields) + subscribe + PING)
        while True:
            event = await _next_event(stream, reader, backlog)
            if isinstance(event, Pong):
                break
            if isinstance(event, Info):
                info = event
            elif isinstance(event, Err):
                if event.is_auth_failure:
                    raise LoginRefused(
                        f"authorization failed: the NATS server at {host}:{port} refused the "
                        f"login ({event.message}); check the user and password or token"
                    )
                raise SessionError(f"the NATS server at {host}:{port} said: {event.message}")
        return ServerSession(
            stream,
            reader,
            info,
            host,
            port,
            _local_address(stream),
            backlog,
            None if tls_on else plain,
        )
    except NatsProtocolError as exc:
        await _close_quietly(stream)
        raise SessionError(f"{host}:{port} does not speak the NATS protocol: {exc}") from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        await _close_quietly(stream)
        raise SessionError(f"the NATS server at {host}:{port} closed the connection") from exc
    except BaseException:
        await _close_quietly(stream)
        raise


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected, non-blocking stdlib socket (kept so that user threads can write
    to it directly; trio's stream wraps the very same object)."""
    try:  # an IP address needs no resolver (trio runs that in a thread)
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        infos: list[Any] = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    except ValueError:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, type_, proto, _name, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tsock = trio.socket.from_stdlib_socket(sock)
        try:
            await tsock.connect(addr)
        except OSError as exc:
            tsock.close()
            error = exc
            continue
        except BaseException:
            tsock.close()
            raise
        return sock
    raise error or OSError(f"no address for {host}")


async def _close_quietly(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(0.5):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
