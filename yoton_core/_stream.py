"""The stream-connection base: everything a byte-stream transport needs.

A transport that moves bytes (TCP, Unix sockets, TLS, ...) subclasses
:class:`StreamConnection` and says only how to parse an address, listen and
connect. This class does the rest, identically for every such transport:
the handshake, framing, batching, heartbeats, timed-out detection, flush,
back-pressure and a clean close that tells the peer.

Threading model: the connection's IO runs as tasks in the process-wide trio
engine. User threads append to ``_outq`` (a deque) and wake the sender task at
most once per batch -- or, when the link is idle and the stream a plain
socket, write the package themselves (``_stream_queue.py`` has the queue, the
direct path and its ownership protocol, back-pressure and flush); the receive
task decodes whole chunks and hands batches of packages to the context.
"""

from __future__ import annotations

import collections
import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import trio

from ._auth import HELLO as AUTH_HELLO
from ._auth import NO_KEY_REASON, NO_KEY_REPLY, Authenticator, authenticate_stream, is_auth_message
from ._connection import (
    ONE_PEER_HINT,
    STATUS_CONNECTED,
    STATUS_HOSTING,
    STATUS_WAITING,
    Connection,
    endpoint,
)
from ._engine import LINK_ERRORS, get_engine
from ._errors import ConnectError, HandshakeError
from ._errors import TimeoutError as YotonTimeoutError
from ._handshake import Handshake
from ._log import get_logger
from ._poller import AVAILABLE as POLLER_AVAILABLE
from ._poller import SocketReader, get_poller, in_io_role
from ._stream_queue import StreamQueue
from ._stream_receive import StreamReceiver, exc_text
from ._wire import CLOSE_BYTES, HEADER, HEARTBEAT_BYTES, FrameDecoder

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["StreamConnection"]

logger = get_logger()

#: Send a heartbeat when nothing was sent for this long (2.x peers time out at 0.5 s).
HEARTBEAT_INTERVAL = 0.2
#: Bytes gathered into one write before it is handed to the OS.
BATCH_BYTES = 256 * 1024
#: Queued packages taken per write when they are all small frames (at most
#: 1024 x 4 KiB + header, ~4 MiB; 160 KiB for 100-byte messages).
BATCH_ITEMS = 1024
#: Payloads at least this large are written on their own, without a join copy.
LARGE_PAYLOAD = 256 * 1024
#: A large payload on a plain socket is written without a trio round per
#: ``send``; the sender still yields to the other tasks after this many bytes.
YIELD_BYTES = 4 << 20
#: How long a graceful close may take to send what is queued plus CLOSE.
CLOSE_GRACE = 1.0


class StreamConnection(StreamQueue, StreamReceiver, Connection):
    """Base class of connections that carry yoton's framed byte stream.

    Subclasses implement :meth:`_parse_address`, :meth:`_open_listener` and
    :meth:`_connect_once`; optionally :meth:`_wrap_server_stream`,
    :meth:`_stream_peer` and :meth:`_target_names`.
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
        self._engine = get_engine()
        self._init_queue()  # outgoing queue and direct writes (_stream_queue.py)
        self._scope: trio.CancelScope | None = None
        self._graceful = False
        self._close_sent = False
        self._end_reason: str | None = None
        self._last_rx = 0.0  # time.monotonic() of the last receive / send
        self._last_tx = 0.0
        self._timed_out = False
        self._decoder = FrameDecoder(context._max_message_size)
        self._reader: SocketReader | None = None  # while the poller reads us
        self._sock: socket.socket | None = None  # the plain socket under the stream, if any
        self._serve_scope: trio.CancelScope | None = None
        self._hb_due = False
        if context._handshake_timeout is not None:  # Context(handshake_timeout=...)
            self.handshake_timeout = context._handshake_timeout

    # -- what a stream transport implements ---------------------------------

    def _parse_address(self, address: str) -> Any:
        """Turn the address (scheme removed) into a transport target; ValueError if bad."""
        raise NotImplementedError

    def _open_listener(self, target: Any, max_tries: int) -> socket.socket:
        """Return a bound, listening stdlib socket for ``target`` (blocking call)."""
        raise NotImplementedError

    async def _connect_once(self, target: Any) -> trio.abc.Stream:
        """Make one attempt to open a stream to ``target``; raise OSError on failure."""
        raise NotImplementedError

    async def _wrap_server_stream(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        """Hook to wrap an accepted stream (e.g. in TLS) before the handshake."""
        return stream

    def _target_names(self, target: Any) -> tuple[str, int]:
        """(hostname, port) to report for a connect target."""
        if isinstance(target, tuple) and len(target) == 2:
            return str(target[0]), int(target[1])
        return str(target), 0

    def _describe_target(self, target: Any) -> str:
        """The target as a user reads it in an error message, e.g. ``127.0.0.1:5000``."""
        return endpoint(*self._target_names(target))

    def _plain_socket(self, stream: trio.abc.Stream) -> socket.socket | None:
        """The stdlib socket under ``stream`` if its bytes reach it unchanged, else None.

        Only a plain ``trio.SocketStream`` qualifies (TLS, for one, must encrypt
        in order in one place). Such a socket is read without trio's stream
        layers and, with ``direct_writes``, written by user threads while the
        connection is idle (see _stream_queue.py).
        """
        if type(stream) is not trio.SocketStream:
            return None
        sock = getattr(stream.socket, "_sock", None)  # trio's wrapped stdlib socket
        return sock if isinstance(sock, socket.socket) else None

    def _tune_socket(self, sock: socket.socket) -> None:
        """Hook: set options on an established plain socket (e.g. buffer sizes)."""

    def _stream_peer(self, stream: trio.abc.Stream) -> tuple[str, int]:
        """(hostname2, port2) of an accepted stream."""
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

    # -- bind ----------------------------------------------------------------

    def _bind(self, address: str, max_tries: int) -> None:
        target = self._parse_address(address)
        sock = self._open_listener(target, max_tries)
        name = sock.getsockname()
        if isinstance(name, tuple):
            self._hostname1, self._port1 = str(name[0]), int(name[1])
        else:
            self._hostname1, self._port1 = str(name), 0
        self._status = STATUS_WAITING
        self._engine.spawn(self._host, sock)

    async def _host(self, sock: socket.socket) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        winner: list[tuple[trio.abc.Stream, bytes]] = []  # (stream, leftover)
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._end_reason is not None:  # closed before we started
                    scope.cancel()  # not ``return``: _set_closed() below must run
                async with trio.open_nursery() as nursery:
                    pending: collections.OrderedDict[int, trio.CancelScope] = (
                        collections.OrderedDict()
                    )
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:  # e.g. EMFILE: back off, keep serving
                            self._log.warning(
                                "accept failed at %s: %s",
                                endpoint(self._hostname1, self._port1),
                                exc,
                            )
                            await trio.sleep(0.1)
                            continue
                        if len(pending) >= self.max_pending_handshakes:
                            _key, oldest = pending.popitem(last=False)
                            oldest.cancel()
                        hs_scope = trio.CancelScope()
                        pending[id(hs_scope)] = hs_scope
                        nursery.start_soon(
                            self._host_handshake, stream, hs_scope, pending, winner, scope
                        )
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
        if not winner:
            self._set_closed(self._end_reason or "Closed on command.")
            return
        await self._serve(*winner[0])  # (established in _host_handshake)

    async def _host_handshake(
        self,
        stream: trio.abc.Stream,
        hs_scope: trio.CancelScope,
        pending: dict[int, trio.CancelScope],
        winner: list[Any],
        host_scope: trio.CancelScope,
    ) -> None:
        won = False
        reason = "Handshake cancelled: a newer peer arrived while too many were pending."
        try:
            with hs_scope:
                with trio.move_on_after(self.handshake_timeout) as timer:
                    stream = await self._wrap_server_stream(stream)
                    peer_id, peer_pid, leftover, joins, last = await self._handshake(stream, "bind")
                    if not winner:
                        winner.append((stream, leftover))
                        won = True
                        # Registered before the peer hears the end of the handshake:
                        # once its connect() returns, what we route goes to it.
                        self._id2, self._pid2 = peer_id, peer_pid
                        self._set_joins(joins)
                        self._hostname2, self._port2 = self._stream_peer(stream)
                        self._establish(STATUS_HOSTING)
                        await stream.send_all(last)  # (if broken: _serve finds out)
                if timer.cancelled_caught:
                    reason = "Handshake timed out."
        except HandshakeError as exc:
            reason = exc.reason
        except LINK_ERRORS as exc:
            reason = f"Handshake failed: {exc!r}"
        finally:
            pending.pop(id(hs_scope), None)
            if won:
                host_scope.cancel()
            else:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        if not won and self._status == STATUS_WAITING:
            self._log.warning(
                "handshake failed at %s: %s", endpoint(self._hostname1, self._port1), reason
            )

    # -- connect -------------------------------------------------------------

    def _connect(self, address: str, timeout: float) -> None:
        target = self._parse_address(address)
        self._hostname2, self._port2 = self._target_names(target)
        self._engine.run(self._connect_async, target, max(float(timeout), 0.01))

    async def _connect_async(self, target: Any, timeout: float) -> None:
        deadline = trio.current_time() + timeout
        retry = max(timeout / 100, 0.01)
        last_exc: BaseException | None = None
        stream: trio.abc.Stream | None = None
        while stream is None:
            with trio.move_on_at(deadline):
                try:
                    stream = await self._connect_once(target)
                except OSError as exc:
                    last_exc = exc
            if stream is None:
                if trio.current_time() + retry >= deadline:
                    raise _unreachable(self._describe_target(target), last_exc, timeout)
                await trio.sleep(retry)
        try:
            with trio.fail_after(self.handshake_timeout):
                peer_id, peer_pid, leftover, joins, _ = await self._handshake(stream, "connect")
        except trio.TooSlowError:
            await trio.aclose_forcefully(stream)
            raise YotonTimeoutError("Handshake timed out.") from None
        except (HandshakeError, *LINK_ERRORS) as exc:
            await trio.aclose_forcefully(stream)
            text = exc.reason if isinstance(exc, HandshakeError) else f"Handshake failed: {exc!r}"
            raise ConnectError(text) from exc
        self._id2, self._pid2 = peer_id, peer_pid
        self._set_joins(joins)
        sock = getattr(stream, "socket", None)
        try:
            name = sock.getsockname() if sock is not None else ""
        except OSError:
            name = ""
        if isinstance(name, tuple):
            self._hostname1, self._port1 = str(name[0]), int(name[1])
        else:
            self._hostname1 = str(name)
        self._establish(STATUS_CONNECTED)
        self._engine.spawn(self._serve, stream, leftover)

    async def _handshake(
        self, stream: trio.abc.Stream, role: str
    ) -> tuple[int, int, bytes, tuple[bool, bool] | None, bytes]:
        """The 2.x handshake (and authentication): (peer id, pid, leftover, joins, last).

        ``last``: what a bind side still sends to finish (its line or its OK),
        held back to register its end first (_host_handshake); b"" to connect."""
        told = self._context._joins_for_handshake()
        hs = Handshake(role, self._context.id, os.getpid(), joins=told)  # type: ignore[arg-type]
        key = self._context._auth_key
        out = hs.initiate()
        if out and key is not None:  # a keyed connect side announces itself (_auth.py)
            out += AUTH_HELLO
        if out:
            await stream.send_all(out)
        while hs.state == Handshake.AWAITING:
            data = await stream.receive_some(4096)
            if not data:
                raise HandshakeError(
                    "Handshake failed: the peer closed the connection during the handshake."
                )
            out = hs.receive_data(data)
            if out and hs.state == Handshake.DONE and (key is not None or role == "bind"):
                break  # sent later: with the challenge (keyed), or as ``last``
            if out:
                await stream.send_all(out)
        if hs.state != Handshake.DONE:
            raise HandshakeError(hs.error or "Handshake failed.")
        assert hs.peer_id is not None and hs.peer_pid is not None
        # Join announcements on request (_joins.py): set by the handshake that
        # wins (a bind may handshake with several candidates at once).
        joins = (hs.peer_joins, told) if hs.peer_joins_cap else None
        leftover = hs.leftover
        last = out if role == "bind" else b""
        # -- authentication (_auth.py): after the 2.x lines, before any package
        if key is not None:
            auth = Authenticator(role, key, self._context.id, hs.peer_id)  # type: ignore[arg-type]
            leftover, last = await authenticate_stream(stream, auth, out, leftover, role == "bind")
        elif is_auth_message(leftover):  # we have no key; the peer has one
            with trio.move_on_after(0.5):
                await stream.send_all(last + NO_KEY_REPLY)
            raise HandshakeError(NO_KEY_REASON)
        # -- end of authentication
        return hs.peer_id, hs.peer_pid, leftover, joins, last

    # -- established phase ----------------------------------------------------

    def _establish(self, status: int) -> None:
        """Become connected: register with the context (engine thread)."""
        now = time.monotonic()
        self._last_rx = self._last_tx = now
        self._send_event = trio.Event()
        if self._end_reason is None:
            self._status = status
            self._context._connection_established(self)

    async def _serve(self, stream: trio.abc.Stream, leftover: bytes) -> None:
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._graceful:  # close() came after connect() returned, before we ran
                    scope.deadline = trio.current_time() + CLOSE_GRACE
                elif self._end_reason is not None:  # closed while establishing
                    return
                self._engine.add_ticker(self)
                plain = self._sock = self._plain_socket(stream)
                if plain is not None:
                    self._tune_socket(plain)
                if not self._graceful:
                    self._enable_direct(plain if self.direct_writes else None)
                async with trio.open_nursery() as nursery:
                    self._serve_scope = nursery.cancel_scope
                    if plain is None or not self.poll_reads:
                        nursery.start_soon(
                            self._receiver_loop, stream, leftover, nursery.cancel_scope
                        )
                    elif not leftover or self._receive(leftover):
                        # From here on the poller thread, or a thread waiting
                        # for data, reads the socket (_poller.py).
                        poller = get_poller()
                        self._reader = SocketReader(self, plain, poller)
                        poller.add(self._reader)
                    else:
                        nursery.cancel_scope.cancel()
                    await self._sender_loop(stream)
                    nursery.cancel_scope.cancel()
        finally:
            self._engine.remove_ticker(self)
            self._enable_direct(None)  # no user thread may write from here on
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.stop()  # nor read: the socket is closed below
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_GRACE):
                    if self._close_sent:
                        await _linger(stream)
                    await stream.aclose()
            self._drop_queue()
            self._set_closed(self._end_reason or "Connection ended.")

    def _end(self, reason: str) -> None:
        """First reason wins."""
        if self._end_reason is None:
            self._end_reason = reason

    async def _sender_loop(self, stream: trio.abc.Stream) -> None:
        q = self._outq
        popleft = q.popleft
        try:
            while True:
                assert self._send_event is not None
                await self._send_event.wait()
                self._send_event = trio.Event()
                self._wake_pending = False
                partial = self._start_writing()  # user threads stop writing directly
                if partial is not None:
                    await stream.send_all(partial)
                    self._partial_written()
                if not q and self._hb_due and not self._graceful:
                    self._hb_due = False
                    await stream.send_all(HEARTBEAT_BYTES)
                    self._last_tx = time.monotonic()
                while q or not (self._graceful or self._stop_writing()):
                    k = len(q)
                    items: list[Any] = []
                    take = items.append
                    try:
                        for _ in range(k if k < BATCH_ITEMS else BATCH_ITEMS):
                            take(popleft())
                    except IndexError:  # a full queue's discard policy took one meanwhile
                        pass
                    try:
                        # The common case: only small packages' finished frames.
                        data = b"".join(items)
                    except TypeError:  # a (header, payload) among them
                        await self._write_items(stream, items)
                    else:
                        if data:
                            await stream.send_all(data)
                            self._written_batch(len(items), len(data))
                if self._graceful:
                    self._enable_direct(None)  # nothing may follow CLOSE
                    await stream.send_all(CLOSE_BYTES)
                    self._close_sent = True
                    self._end(self._end_reason or "Closed on command.")
                    return
        except LINK_ERRORS as exc:
            self._end(f"Other end dropped the connection ({exc_text(exc)}).")

    async def _write_items(self, stream: trio.abc.Stream, items: list[Any]) -> None:
        """Write queued items of both kinds: frames and ``(header, payload)``.

        Joined in batches of about :data:`BATCH_BYTES`; a large payload is
        written on its own, not copied into a batch.
        """
        pack = HEADER.pack
        parts: list[bytes] = []
        size = count = 0
        for item in items:
            count += 1
            if item.__class__ is bytes:  # a small package's frame
                parts.append(item)
                size += len(item)
            else:
                header, d = item
                parts.append(pack(*header))
                n = header[6]
                size += n + 56
                if n >= LARGE_PAYLOAD:
                    await stream.send_all(b"".join(parts))
                    await self._send_large(stream, d)
                    self._written_batch(count, size)
                    parts = []
                    size = count = 0
                    continue
                parts.append(d)
            if size >= BATCH_BYTES:
                await stream.send_all(b"".join(parts))
                self._written_batch(count, size)
                parts = []
                size = count = 0
        if parts:
            await stream.send_all(b"".join(parts))
            self._written_batch(count, size)

    async def _send_large(self, stream: trio.abc.Stream, data: bytes) -> None:
        """Write a large payload, on a plain socket without a trio round per ``send``.

        ``SocketStream.send_all`` passes through the scheduler after every
        ``send``: a 16 MiB payload on a busy link took ~45 rounds, 2-3 ms of
        the sending process's CPU. Here the loop sends while the socket takes
        data, waits only when it is full, and yields every :data:`YIELD_BYTES`
        so that the other connections' tasks still run.
        """
        sock = self._sock
        if sock is None:
            await stream.send_all(data)
            return
        wait_writable = trio.lowlevel.wait_writable
        with memoryview(data) as view:
            total = len(view)
            sent = since = 0
            while sent < total:
                try:
                    k = sock.send(view[sent:])
                except (BlockingIOError, InterruptedError):
                    await wait_writable(sock)  # a checkpoint
                    since = 0
                    continue
                sent += k
                since += k
                if since >= YIELD_BYTES and sent < total:
                    await trio.lowlevel.checkpoint()
                    since = 0

    def _tick(self, now: float) -> None:
        if self._status < STATUS_HOSTING or self._send_event is None:
            return
        if self._direct_tx:  # user threads wrote directly since the last tick
            self._direct_tx = False
            self._last_tx = now
        if now - self._last_tx >= HEARTBEAT_INTERVAL and not self._outq:
            if self._heartbeat_direct():
                self._last_tx = now
            else:
                self._hb_due = True
                self._send_event.set()
        if not self._timed_out and now - self._last_rx >= self._timeout:
            self._timed_out = True
            self._log.warning(
                "nothing received for %.1f s (timed out): %s", self._timeout, self._describe_link()
            )
            self.timedout.emit(self, True)

    # -- close -------------------------------------------------------------

    def _request_close(self, reason: str, notify_peer: bool) -> None:
        if notify_peer and self._send_event is not None:
            self._graceful = True  # before _end: a _serve starting now must still send CLOSE
        self._end(reason)
        if self._engine.in_engine_thread():
            self._close_in_engine(notify_peer)
        else:
            self._engine.run_sync_soon(self._close_in_engine, notify_peer)
            if not in_io_role():  # a thread that reads for us must not wait for us
                self._closed_event.wait(CLOSE_GRACE + 1.0)

    def _close_in_engine(self, notify_peer: bool) -> None:
        scope = self._scope
        if scope is None:  # _serve has not started; it sees _end_reason / _graceful
            if self._graceful and self._send_event is not None:
                self._send_event.set()
            return
        if self._send_event is not None and notify_peer:
            # Established: let the sender write what is queued plus CLOSE.
            self._graceful = True
            self._send_event.set()
            scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_GRACE)
        else:
            scope.cancel()


def _unreachable(where: str, exc: OSError | None, timeout: float) -> ConnectError:
    """The error of a connect that found nobody at ``where`` (``exc``: the last attempt's)."""
    if exc is None:
        return ConnectError(f"Nothing answered at {where} within {timeout:g} s.")
    group = getattr(exc.__cause__, "exceptions", None)  # trio: one error per address tried
    if group and isinstance(group[0], OSError):
        exc = group[0]
    what = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
        text = f"Nothing is listening at {where} ({what}). {ONE_PEER_HINT}"
    else:
        text = f"{where} cannot be reached ({what})."
    error = ConnectError(text)
    error.errno = exc.errno
    error.__cause__ = exc
    return error


async def _linger(stream: trio.abc.Stream) -> None:
    """After CLOSE: half-close, drain until the peer closes (closing with unread
    data sends a reset, which can make the peer lose our CLOSE unread)."""
    try:
        send_eof = getattr(stream, "send_eof", None)
        if send_eof is not None:
            await send_eof()
        while await stream.receive_some(65536):
            pass
    except (*LINK_ERRORS, trio.BusyResourceError):  # Busy: the receive loop still reads
        pass
