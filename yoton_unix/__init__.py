"""The Unix-socket transport (scheme ``unix``).

Addresses: ``unix:///abs/path.sock``, ``unix://name`` and the ``host:port``
form, both mapped into a private runtime directory (see
:mod:`yoton_unix._paths`). Framing, handshake, heartbeats, flush and close come
from :class:`yoton.transport.StreamConnection`, exactly as for TCP; the socket file is
mode 0600 and is removed when the listener is done with it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import trio

from yoton.transport import StreamConnection, hookimpl

from ._paths import (
    UnixTarget,
    file_identity,
    open_unix_listener,
    parse_unix_address,
    remove_if_ours,
    runtime_dir,
)

__all__ = ["UnixConnection", "runtime_dir"]

if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows
    raise ImportError("the yoton 'unix' transport needs socket.AF_UNIX, absent on this platform")


#: Socket buffer size asked for (the kernel caps it at net.core.wmem_max/rmem_max).
UNIX_BUFFER = 4 << 20


class UnixConnection(StreamConnection):
    """A connection over a Unix domain socket.

    ``hostname1`` (bind side) and ``hostname2`` (connect side) are the socket
    path; ``port1``/``port2`` are the port number of a ``host:port`` address
    and 0 for paths and names.
    """

    scheme = "unix"
    _socket_file: tuple[str, tuple[int, int] | None] | None = None
    _bound_port: int = 0

    def parse_address(self, address: str) -> UnixTarget:
        return parse_unix_address(address)

    def open_listener(self, target: UnixTarget, max_tries: int) -> socket.socket:
        sock, path, port = open_unix_listener(target, max_tries, self.max_pending_handshakes)
        self._socket_file = (path, file_identity(path))
        self._bound_port = port
        return sock

    def listener_names(self, sock: socket.socket) -> tuple[str, int]:
        return str(sock.getsockname()), self._bound_port

    async def connect_once(self, target: UnixTarget) -> trio.abc.Stream:
        if target.path is None:
            raise ConnectionRefusedError("cannot connect to port 0: name the port to connect to")
        return await trio.open_unix_socket(target.path)

    def tune_socket(self, sock: socket.socket) -> None:
        # Unix sockets do not grow their buffers as TCP does: the default
        # (about 200 KiB) splits the sender's batches into partial writes.
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UNIX_BUFFER)
            except OSError:  # pragma: no cover - the OS keeps its default
                pass

    def target_names(self, target: UnixTarget) -> tuple[str, int]:
        return target.path or target.host, target.port

    def describe_target(self, target: UnixTarget) -> str:
        return target.path or f"{target.host}:{target.port}"

    def listener_closed(self) -> None:
        # A peer came or the bind was closed: the file goes with the listener.
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        entry, self._socket_file = self._socket_file, None
        if entry is not None:
            remove_if_ours(*entry)


@hookimpl
def yoton_connection_types() -> Iterable[type[StreamConnection]]:
    return [UnixConnection]
