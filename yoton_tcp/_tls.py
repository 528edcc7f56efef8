"""TCP with TLS (scheme ``tls``), using the stdlib :mod:`ssl` module.

Why a scheme of its own rather than an option of ``tcp``: whether a link is
encrypted is visible in the address (and in logs and configuration), a
``tls://`` address can never silently fall back to plain text, and a plain
``tcp://`` peer (or a yoton 2.x one) is refused at the TLS handshake instead
of being half-understood. Everything else (framing, the yoton handshake,
``auth_key``, heartbeats, flush, close) is :class:`TcpConnection`'s::

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain("server.pem")
    ctx.bind("tls://0.0.0.0:5000", ssl_context=server)

    client = ssl.create_default_context(cafile="ca.pem")
    ctx.connect("tls://myhost:5000", ssl_context=client)

The client checks the server's certificate against the host name written in
the address (``localhost`` included, before it is resolved), or against
``server_hostname=``. Client certificates: give the server context
``verify_mode = ssl.CERT_REQUIRED`` and a CA (``load_verify_locations``), and
the client context ``load_cert_chain``. The TLS handshake counts toward the
connection's handshake timeout and its bound on pending handshakes.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import trio

from yoton import InvalidArgumentError
from yoton.transport import HandshakeError, HandshakeResult, hookimpl

from . import TcpConnection

__all__ = ["TlsConnection"]


def _tls_cause(exc: BaseException) -> str | None:
    """The ssl error behind a trio stream error, as text; None if not TLS."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            text = str(seen)
            verify = getattr(seen, "verify_message", None)
            if verify and verify not in text:
                text = f"{text} ({verify})"
            return f"{type(seen).__name__}: {re.sub(r' [(]_ssl[.]c:[0-9]+[)]', '', text)}"
        seen = seen.__cause__ or seen.__context__
    return None


class TlsConnection(TcpConnection):
    """A TCP connection wrapped in TLS: ``tls://host:port``.

    Options (keywords of :meth:`Context.bind` / :meth:`Context.connect`):

    * ``ssl_context``: an :class:`ssl.SSLContext`. Required to bind (it holds
      the server certificate). When connecting, it defaults to
      :func:`ssl.create_default_context` (system CAs, host name checked).
    * ``server_hostname``: (connect only) the name the server certificate must
      carry, when it differs from the host in the address.
    """

    scheme = "tls"
    _ssl_context: ssl.SSLContext | None = None
    _server_hostname: str | None = None
    _tls_host: str = ""

    def configure(
        self,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Any,
    ) -> None:
        super().configure(**options)  # (refuses any other option, naming it)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgumentError(
                f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}"
            )
        if server_hostname is not None and (
            not isinstance(server_hostname, str) or not server_hostname
        ):
            raise InvalidArgumentError(
                f"server_hostname must be a non-empty str, got {server_hostname!r}"
            )
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname

    def open_listener(self, target: tuple[str, int], max_tries: int) -> socket.socket:
        if self._ssl_context is None:
            raise InvalidArgumentError(
                "binding a tls:// address needs ssl_context=: an ssl.SSLContext with the "
                "server certificate, e.g. ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) "
                "followed by .load_cert_chain('server.pem')"
            )
        if self._server_hostname is not None:
            raise InvalidArgumentError(
                "server_hostname= is a connect option; bind does not take it"
            )
        return super().open_listener(target, max_tries)

    def parse_address(self, address: str) -> tuple[str, int]:
        # Remember the host as written: certificates name "localhost" or
        # "myhost.example.com", not the address it resolves to.
        self._tls_host = address.partition(":")[0]
        return super().parse_address(address)

    async def wrap_server_stream(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        assert self._ssl_context is not None
        return trio.SSLStream(stream, self._ssl_context, server_side=True)

    async def connect_once(self, target: tuple[str, int]) -> trio.abc.Stream:
        tcp = await super().connect_once(target)
        ssl_ctx = self._ssl_context
        if ssl_ctx is None:
            ssl_ctx = self._ssl_context = ssl.create_default_context()
        hostname = self._server_hostname or self._tls_host or target[0]
        # The TLS handshake runs in handshake(), not here: a certificate
        # problem is final and must not be retried until the connect timeout.
        return trio.SSLStream(tcp, ssl_ctx, server_hostname=hostname)

    async def handshake(self, stream: trio.abc.Stream, role: str) -> HandshakeResult:
        if isinstance(stream, trio.SSLStream):
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                cause = _tls_cause(exc) or f"{type(exc.__cause__).__name__}: {exc.__cause__}"
                raise HandshakeError(f"TLS handshake failed: {cause}") from None
        # TLS 1.3 reports a refused client certificate only after the
        # handshake, on the first read, often as a bare EOF: say what it means.
        hint = (
            " (the server ended the TLS session: does it require a client certificate? "
            "Load one into the client's ssl_context with load_cert_chain())"
            if role == "connect"
            else ""
        )
        try:
            return await super().handshake(stream, role)
        except trio.BrokenResourceError as exc:
            refused = _tls_cause(exc)
            if refused is None:
                raise
            raise HandshakeError(
                f"TLS handshake failed: the peer refused us: {refused}{hint}"
            ) from None
        except HandshakeError as exc:
            if "closed the connection" not in exc.reason:
                raise
            raise HandshakeError(f"{exc.reason}{hint}") from None


@hookimpl
def yoton_connection_types() -> Iterable[type[Any]]:
    return [TlsConnection]
