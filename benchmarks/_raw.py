"""The raw-socket loop: the physical reference every library is compared with.

Length-prefixed frames over one TCP connection, small frames batched into
>= 64 KiB writes and large frames received straight into their own buffer, so
the figures show what the machine can do with the least Python per message.
Made by ``_pubsub.receiver('raw')`` / ``sender('raw')`` for the pub/sub scenarios.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

_LEN = struct.Struct("<I")


class RawReceiver:
    """Length-prefixed frames; every frame becomes its own bytes-like object."""

    def __init__(self) -> None:
        import collections

        self.frames: collections.deque[bytes | bytearray] = collections.deque()
        self.buf = b""

    def bind(self) -> int:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        return int(self.listener.getsockname()[1])

    def _fill_big(self, head: bytes, size: int) -> bytearray:
        """Receive a frame larger than one chunk straight into its own buffer."""
        out = bytearray(size)
        view = memoryview(out)
        view[: len(head)] = head
        got = len(head)
        recv_into = self.sock.recv_into
        while got < size:
            k = recv_into(view[got:], size - got)
            if not k:
                raise ConnectionError("raw peer closed mid-frame")
            got += k
        return out

    def reader(self, timeout: float) -> tuple[Any, tuple[type[BaseException], ...]]:
        """The counting loop's receive call (see ``_pubsub.Receiver``)."""
        return functools.partial(self.recv, timeout), ()

    def recv(self, timeout: float) -> bytes | bytearray | None:
        frames = self.frames
        if frames:
            return frames.popleft()
        if not hasattr(self, "sock"):
            self.listener.settimeout(timeout)
            try:
                self.sock, _ = self.listener.accept()
            except TimeoutError:
                return None
        self.sock.settimeout(timeout)
        while not frames:
            try:
                chunk = self.sock.recv(262144)
            except TimeoutError:
                return None
            if not chunk:
                return None
            buf = self.buf + chunk if self.buf else chunk
            off, n = 0, len(buf)
            unpack = _LEN.unpack_from
            append = frames.append
            while n - off >= 4:
                (size,) = unpack(buf, off)
                end = off + 4 + size
                if end > n:
                    if size > 262144:
                        append(self._fill_big(buf[off + 4 :], size))
                        off = n
                    break
                append(buf[off + 4 : end])
                off = end
            self.buf = buf[off:]
        return frames.popleft()

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close()
        self.listener.close()


class RawSender:
    """Small frames batched into >= 64 KiB writes; large ones written as they are."""

    def __init__(self) -> None:
        self.out = bytearray()

    def connect(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        out = self.out
        if len(data) >= 65536:
            out += _LEN.pack(len(data))
            self.sock.sendall(out)
            out.clear()
            self.sock.sendall(data)
            return
        out += _LEN.pack(len(data))
        out += data
        if len(out) >= 65536:
            self.sock.sendall(out)
            out.clear()

    def flush(self) -> None:
        if self.out:
            self.sock.sendall(self.out)
            self.out.clear()

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.flush()
        self.sock.close()
