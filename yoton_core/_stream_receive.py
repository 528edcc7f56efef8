"""The receive side of a stream connection: bytes in, packages routed.

:class:`StreamReceiver` is mixed into :class:`~yoton_core._stream.StreamConnection`
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
from typing import TYPE_CHECKING

import trio

from ._engine import LINK_ERRORS
from ._errors import FrameError
from ._joins import JOINS_OFF, JOINS_ON
from ._poller import CHUNK, MAX_CHUNK
from ._wire import CloseRequest, ConnectionMessage

if TYPE_CHECKING:
    import logging
    import socket

    from ._context import Context
    from ._engine import Engine
    from ._events import Signal
    from ._wire import FrameDecoder

__all__ = ["StreamReceiver", "exc_text"]


class StreamReceiver:
    """Decode what the stream delivers and route it (mixin, see the module doc)."""

    _context: Context
    _engine: Engine
    _decoder: FrameDecoder
    _last_rx: float
    _timed_out: bool
    _log: logging.Logger  # Connection's, like _describe_link below

    if TYPE_CHECKING:  # (only declared: the real one is Connection's, later in the MRO)

        def _describe_link(self) -> str: ...

    _serve_scope: trio.CancelScope | None
    _b_recv: int
    _n_recv: int
    timedout: Signal

    _sock: socket.socket | None  # the plain socket under the stream (StreamConnection._serve)

    if TYPE_CHECKING:  # provided by StreamConnection

        def _end(self, reason: str) -> None: ...

    def _receive(self, data: bytes) -> bool:
        """Decode and route one chunk read from the stream.

        Called by one thread at a time: trio's receive loop, or whichever
        thread holds the socket reader's lock (_poller.py).

        Returns:
            False when the connection must end (the reason is set).
        """
        self._note_rx(len(data))
        try:
            flat = self._decoder.feed_raw(data)
        except FrameError as exc:
            # Packages decoded before the bad bytes in the same chunk are valid:
            # deliver them, then close with the reason.
            good = exc.raw
            if good:
                self._n_recv += len(good) >> 1
                self._context._route(self, good)
            self._end(exc.reason)
            return False
        return self._dispatch(flat)

    def _receive_filled(self, n: int) -> bool:
        """``n`` bytes were read into the decoder's ``recv_buffer()``: route what completed.

        Same caller rules and result as :meth:`_receive`.
        """
        self._note_rx(n)
        return self._dispatch(self._decoder.filled(n))

    def _note_rx(self, n: int) -> None:
        self._last_rx = time.monotonic()
        if self._timed_out:
            self._timed_out = False
            self._log.info("receiving again: %s", self._describe_link())
            self.timedout.emit(self, False)
        self._b_recv += n

    def _dispatch(self, flat: list) -> bool:
        """Route decoded packages, acting on the connection-level items between them."""
        decoder = self._decoder
        if decoder.controls:  # heartbeats, close requests, connection messages
            for pos, item in decoder.controls:
                if item.__class__ is CloseRequest:
                    del flat[pos:]  # the peer sent nothing after it
                    if flat:
                        self._n_recv += len(flat) >> 1
                        self._context._route(self, flat)
                    self._end("Closed from other end.")
                    return False
                if item.__class__ is ConnectionMessage:
                    self._on_connection_message(item.payload)
        if flat:
            self._n_recv += len(flat) >> 1
            self._context._route(self, flat)
        return True

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
                    data = await stream.receive_some(self._read_size())
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
            self._context._peer_joins_changed(self, payload == JOINS_ON)  # type: ignore[arg-type]


def exc_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)) and cause:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}"
