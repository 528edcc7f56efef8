"""The receive side of a stream connection: bytes in, packages routed.

:class:`StreamReceiver` is mixed into :class:`~yoton_core._stream_link.StreamLink`
(as :class:`~yoton_core._stream_queue.StreamQueue` is for the send side). A chunk
read from the stream is decoded in one go and its packages are handed to the
context as one batch. Who reads depends on the stream: a plain socket is read
outside trio, by the poller thread or by a user thread that waits for the data
(``_poller.py``); any other stream (TLS, or no epoll) by :meth:`_receiver_loop`
in trio. Either way one thread at a time calls :meth:`_receive` (or, when a
socket reader wrote the rest of a large payload straight into its ``bytes``
object, :meth:`_receive_filled`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ._decoder import Run
from ._engine import LINK_ERRORS
from ._errors import FrameError
from ._joins import JOINS_OFF, JOINS_ON
from ._link_slots import LinkSlots
from ._poller import CHUNK, MAX_CHUNK
from ._wire import CloseRequest, ConnectionMessage

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from ._decoder import FrameDecoder
    from ._engine import Engine
    from ._stream import StreamConnection

__all__ = ["StreamReceiver", "exc_text"]


class StreamReceiver(LinkSlots):
    """Decode what the stream delivers and route it (mixin, see the module doc)."""

    __slots__ = ()  # (all in LinkSlots)

    _conn: StreamConnection
    _route: Callable[[StreamConnection, list[Any]], None]  # Context._route
    _route_run: Callable[[StreamConnection, Run, list[bytes]], None]  # Context._route_run
    _engine: Engine
    _decoder: FrameDecoder
    _last_rx: float
    _timed_out: bool
    _serve_scope: trio.CancelScope | None

    _sock: socket.socket | None  # the plain socket under the stream (StreamConnection._serve)

    if TYPE_CHECKING:  # provided by StreamLink

        def _end(self, reason: str) -> None: ...

    def _receive(self, data: bytes) -> bool:
        """Decode and route one chunk read from the stream.

        Called by one thread at a time: trio's receive loop, or whichever
        thread holds the socket reader's lock (_poller.py).

        Returns:
            False when the connection must end (the reason is set).
        """
        self._note_rx()
        try:
            flat = self._decoder.feed_runs(data)
        except FrameError as exc:
            # Packages decoded before the bad bytes in the same chunk are valid:
            # deliver them, then close with the reason.
            good = exc.raw
            self._conn.count_received(self._packages(good), len(data))
            if good:
                self._deliver(good)
            self._end(exc.reason)
            return False
        return self._dispatch(flat, len(data))

    def _receive_filled(self, n: int) -> bool:
        """``n`` bytes were read into the decoder's ``recv_buffer()``: route what completed.

        Same caller rules and result as :meth:`_receive`.
        """
        self._note_rx()
        return self._dispatch(self._decoder.filled(n), n)

    def _note_rx(self) -> None:
        self._last_rx = time.monotonic()
        if self._timed_out:
            self._timed_out = False
            self._conn.set_timed_out(False)

    def _dispatch(self, flat: list[Any], nbytes: int) -> bool:
        """Route decoded packages, acting on the connection-level items between them."""
        decoder = self._decoder
        conn = self._conn
        if decoder.controls:  # heartbeats, close requests, connection messages
            for pos, item in decoder.controls:
                if item.__class__ is CloseRequest:
                    del flat[pos:]  # the peer sent nothing after it
                    conn.count_received(self._packages(flat), nbytes)
                    if flat:
                        self._deliver(flat)
                    self._end("Closed from other end.")
                    return False
                if item.__class__ is ConnectionMessage:
                    self._on_connection_message(item.payload)
        conn.count_received(self._packages(flat), nbytes)
        if flat:
            self._deliver(flat)
        return True

    def _packages(self, flat: list[Any]) -> int:
        """How many packages ``flat`` (the decoder's last, runs included) holds.

        (A close request, which cuts ``flat`` short, comes after the run.)
        """
        return (len(flat) >> 1) + self._decoder.run_extra

    def _deliver(self, flat: list[Any]) -> None:
        """Hand ``flat`` to the context: runs on their own, in stream order."""
        if not self._decoder.run_extra:
            self._route(self._conn, flat)
            return
        if len(flat) == 2:  # one run: the usual chunk of a publisher's stream
            self._route_run(self._conn, flat[0], flat[1])
            return
        route = self._route
        conn = self._conn
        start = 0
        for i in range(0, len(flat), 2):
            if flat[i].__class__ is Run:
                if i > start:
                    route(conn, flat[start:i])
                self._route_run(conn, flat[i], flat[i + 1])
                start = i + 2
        if start < len(flat):
            route(conn, flat[start:])

    def _read_size(self) -> int:
        """How many bytes to ask for in the next read."""
        wanted = self._decoder.wanted
        if wanted <= CHUNK:
            return CHUNK
        # A large payload: read as much of it as the OS has in one call.
        return wanted if wanted < MAX_CHUNK else MAX_CHUNK

    def _receive_end(self, exc: BaseException | None, eof: bool) -> None:
        """Reading stopped (the reader's thread): end the connection."""
        if eof:
            try:
                self._decoder.eof()
            except FrameError as err:  # e.g. the peer closed inside a package
                self._end(err.reason)
            else:
                self._end("Other end dropped the connection.")
        elif isinstance(exc, OSError):
            self._end(f"Other end dropped the connection ({exc_text(exc)}).")
        elif exc is not None:
            self._end(f"Error while receiving: {exc_text(exc)}")
        self._engine.run_sync_soon(self._cancel_serve)

    def _cancel_serve(self) -> None:
        scope = self._serve_scope
        if scope is not None:
            scope.cancel()

    async def _receiver_loop(
        self, stream: trio.abc.Stream, leftover: bytes, scope: trio.CancelScope
    ) -> None:
        """Receive in trio (streams that are not a plain socket, or no epoll)."""
        # A plain socket is read directly: trio's SocketStream layers cost
        # ~10 us per wake-up.
        sock = self._sock
        wait_readable = trio.lowlevel.wait_readable
        try:
            data = leftover
            while True:
                if data and not self._receive(data):
                    return
                if sock is None:
                    data = bytes(await stream.receive_some(self._read_size()))
                else:
                    await wait_readable(sock)  # the checkpoint (trio's receive_some has one too)
                    view = self._decoder.recv_buffer()
                    data = b""
                    try:
                        if view is None:
                            data = sock.recv(self._read_size())
                        else:  # a large payload: straight into its own bytes object
                            n = sock.recv_into(view)
                            if n:
                                if not self._receive_filled(n):
                                    return
                                continue
                    except (BlockingIOError, InterruptedError):
                        continue
                if not data:
                    self._receive_end(None, eof=True)
                    return
        except LINK_ERRORS as exc:
            self._end(f"Other end dropped the connection ({exc_text(exc)}).")
        finally:
            scope.cancel()

    def _on_connection_message(self, payload: bytes) -> None:
        """A connection-level message from a new-style peer (others are ignored)."""
        if payload == JOINS_ON or payload == JOINS_OFF:  # join announcements (_joins.py)
            self._conn.context._peer_joins_changed(self._conn, payload == JOINS_ON)


def exc_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)) and cause:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}"
