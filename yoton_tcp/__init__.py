"""The TCP transport (scheme ``tcp``), yoton's default and 2.x wire compatible.

Everything but listening and connecting comes from
:class:`yoton.transport.StreamConnection`.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterable

import trio

from yoton.transport import StreamConnection, bind_port_offsets, hookimpl, parse_host_port

__all__ = ["TcpConnection"]


class TcpConnection(StreamConnection):
    """A connection over TCP: ``tcp://host:port`` or plain ``host:port``."""

    scheme = "tcp"

    def parse_address(self, address: str) -> tuple[str, int]:
        return parse_host_port(address)

    def open_listener(self, target: tuple[str, int], max_tries: int) -> socket.socket:
        host, port = target
        offsets = [0] if port == 0 else bind_port_offsets(max_tries)
        for offset in offsets:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if sys.platform != "win32":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port + offset))
                sock.listen(self.max_pending_handshakes)
                return sock
            except OSError as exc:
                sock.close()
                if len(offsets) == 1:
                    raise OSError(exc.errno, f"{host}:{port}: {exc.strerror}.") from None
        raise OSError(
            errno.EADDRINUSE,
            f"Could not bind to any of the {len(offsets)} ports tried, starting with {port}.",
        )

    async def connect_once(self, target: tuple[str, int]) -> trio.abc.Stream:
        host, port = target
        stream = await trio.open_tcp_stream(host, port)
        try:
            _refuse_self_connect(stream.socket)
        except ConnectionRefusedError:
            await trio.aclose_forcefully(stream)
            raise
        return stream


def _refuse_self_connect(sock: trio.socket.SocketType | socket.socket) -> None:
    """Raise ConnectionRefusedError if ``sock`` is connected to itself.

    Where nothing listens on a port of the ephemeral range, a connect can be
    given that very port as its own source, and TCP's simultaneous open then
    connects the socket to itself (Linux does this about once in the range's
    size of attempts). The handshake would report "cannot connect to self",
    which is not what happened: nobody is listening there, and the retry loop
    should go on as for a refusal.
    """
    if sock.getsockname() == sock.getpeername():
        raise ConnectionRefusedError(
            errno.ECONNREFUSED,
            "Connection refused (nothing listens there: the connect reached its own socket)",
        )


@hookimpl
def yoton_connection_types() -> Iterable[type[StreamConnection]]:
    return [TcpConnection]
