"""The machinery of a stream connection: bind, connect, serve, heartbeats, close.

:class:`StreamLink` is what a :class:`~yoton_core._stream.StreamConnection`
owns and delegates to: the handshake, framing, batching, heartbeats,
timed-out detection, flush, back-pressure and a clean close that tells the
peer, identically for every byte-stream transport. It is a separate object,
not a base class of the plugin's class, so its many attributes live in a
namespace no plugin sees: a transport's own ``_reader`` or ``_outq`` can
never collide with them. It reaches the plugin only through the documented
hooks (``parse_address``, ``open_listener``, ``connect_once``, ...) and the
base-class methods every transport calls (``set_waiting``,
``set_established``, ``set_closed``, ...).

Threading model: the link's IO runs as tasks in the process-wide trio
engine. User threads append to ``_outq`` (a deque) and wake the sender task at
most once per batch -- or, when the link is idle and the stream a plain
socket, write the package themselves (``_stream_queue.py`` has the queue, the
direct path and its ownership protocol, back-pressure and flush); the receive
side (``_stream_receive.py``) decodes whole chunks and hands batches of
packages to the context.
"""

from __future__ import annotations

import collections
import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import trio

from ._decoder import FrameDecoder
from ._engine import LINK_ERRORS, get_engine
from ._errors import ONE_PEER_HINT, ConnectError, HandshakeError
from ._errors import TimeoutError as YotonTimeoutError
from ._handshake_io import HandshakeResult, handshake_timed_out
from ._log import endpoint
from ._poller import SocketReader, get_poller, in_io_role
from ._stream_queue import BATCH_ITEMS, DIRECT_BATCH, SENDER_DEFER, StreamQueue
from ._stream_receive import StreamReceiver, exc_text
from ._wire import CLOSE_BYTES, HEADER, HEADER_SIZE, HEARTBEAT_BYTES

if TYPE_CHECKING:
    from ._context import Context
    from ._stream import StreamConnection

__all__ = ["StreamLink"]

#: Send a heartbeat when nothing was sent for this long (2.x peers time out at 0.5 s).
HEARTBEAT_INTERVAL = 0.2
#: Bytes gathered into one write before it is handed to the OS.
BATCH_BYTES = 256 * 1024
#: Payloads at least this large are written on their own, without a join copy.
LARGE_PAYLOAD = 256 * 1024
#: A large payload on a plain socket is written without a trio round per
#: ``send``; the sender still yields to the other tasks after this many bytes.
YIELD_BYTES = 4 << 20
#: A sender round that moved at most this many packages stays awake for
#: :data:`SENDER_DEFER` before it sleeps (see _sender_loop).
LINGER_MOVED = 4
#: How long a graceful close may take to send what is queued plus CLOSE.
CLOSE_GRACE = 1.0
#: What a failed handshake raises, and what a lingering close may meet.
_HANDSHAKE_FAILURES: tuple[type[Exception], ...] = (HandshakeError, *LINK_ERRORS)
_LINGER_ERRORS: tuple[type[Exception], ...] = (*LINK_ERRORS, trio.BusyResourceError)


class StreamLink(StreamQueue, StreamReceiver):
    """The core-owned state and tasks of one :class:`StreamConnection`."""

    __slots__ = ()  # (all in LinkSlots)

    def __init__(self, conn: StreamConnection, context: Context) -> None:
        self._conn = conn
        self._log = conn.log
        self._context = context
        self._route = context._route  # (the receive path's hand-over, _stream_receive.py)
        self._route_run = context._route_run
        self._engine = get_engine()
        self._init_queue()  # outgoing queue and direct writes (_stream_queue.py)
        self._scope: trio.CancelScope | None = None
        self._graceful = False
        self._close_sent = False
        self._end_reason: str | None = None
        self._ended = False  # the link is gone (before conn.set_closed runs)
        self._last_rx = 0.0  # time.monotonic() of the last receive / send
        self._last_tx = 0.0
        self._timed_out = False
        self._decoder = FrameDecoder(context.max_message_size)
        self._reader: SocketReader | None = None  # while the poller reads us
        self._sock: socket.socket | None = None  # the plain socket under the stream, if any
        self._serve_scope: trio.CancelScope | None = None
        self._hb_due = False
        self._listening = True  # until listener_closed() was called (binds)

    def __repr__(self) -> str:
        return f"<link of {self._conn!r}>"

    # -- bind ----------------------------------------------------------------

    def bind(self, address: str, max_tries: int) -> None:
        conn = self._conn
        target = conn.parse_address(address)
        sock = conn.open_listener(target, max_tries)
        conn.set_waiting(*conn.listener_names(sock))
        self._engine.spawn(self._host, sock)

    async def _host(self, sock: socket.socket) -> None:
        conn = self._conn
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        winner: list[tuple[trio.abc.Stream, bytes]] = []  # (stream, leftover)
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._end_reason is not None:  # closed before we started
                    scope.cancel()  # not ``return``: set_closed() below must run
                async with trio.open_nursery() as nursery:
                    pending: collections.OrderedDict[int, trio.CancelScope] = (
                        collections.OrderedDict()
                    )
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:  # e.g. EMFILE: back off, keep serving
                            self._log.warning(
                                "accept failed at %s: %s", endpoint(conn.hostname1, conn.port1), exc
                            )
                            await trio.sleep(0.1)
                            continue
                        if len(pending) >= conn.max_pending_handshakes:
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
            self._listener_done()
        if not winner:
            self._ended = True
            conn.set_closed(self._end_reason or "Closed on command.")
            return
        await self._serve(*winner[0])  # (established in _host_handshake)

    def _listener_done(self) -> None:
        """Tell the transport (once) that the bind accepts no more peers."""
        if self._listening:
            self._listening = False
            try:
                self._conn.listener_closed()
            except Exception:  # a plugin's hook must not keep the link from going on
                self._log.exception("error in %r.listener_closed()", self._conn)

    async def _host_handshake(
        self,
        stream: trio.abc.Stream,
        hs_scope: trio.CancelScope,
        pending: dict[int, trio.CancelScope],
        winner: list[Any],
        host_scope: trio.CancelScope,
    ) -> None:
        conn = self._conn
        won = False
        reason = "Handshake cancelled: a newer peer arrived while too many were pending."
        try:
            with hs_scope:
                with trio.move_on_after(conn.handshake_timeout) as timer:
                    stream = await conn.wrap_server_stream(stream)
                    hello = await conn.handshake(stream, "bind")
                    if not winner:
                        winner.append((stream, hello.leftover))
                        won = True
                        # Registered before the peer hears the end of the handshake:
                        # once its connect() returns, what we route goes to it.
                        hostname2, port2 = conn.stream_peer(stream)
                        self._listener_done()  # one bind, one peer: it accepts no more
                        self._establish(hello, hosting=True, hostname2=hostname2, port2=port2)
                        await stream.send_all(hello.last)  # (if broken: _serve finds out)
                if timer.cancelled_caught:
                    reason = handshake_timed_out()  # in the waiting machine's words
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
        if not won and conn.is_waiting:
            self._log.warning(
                "handshake failed at %s: %s", endpoint(conn.hostname1, conn.port1), reason
            )

    # -- connect -------------------------------------------------------------

    def connect(self, address: str, timeout: float) -> None:
        target = self._conn.parse_address(address)
        self._engine.run(self._connect_async, target, max(float(timeout), 0.01))

    async def _connect_async(self, target: Any, timeout: float) -> None:
        conn = self._conn
        deadline = trio.current_time() + timeout
        retry = max(timeout / 100, 0.01)
        last_exc: OSError | None = None
        stream: trio.abc.Stream | None = None
        while stream is None:
            with trio.move_on_at(deadline):
                try:
                    stream = await conn.connect_once(target)
                except OSError as exc:
                    last_exc = exc
            if stream is None:
                if trio.current_time() + retry >= deadline:
                    raise _unreachable(conn.describe_target(target), last_exc, timeout)
                await trio.sleep(retry)
        try:
            with trio.fail_after(conn.handshake_timeout):
                hello = await conn.handshake(stream, "connect")
        except trio.TooSlowError:
            await trio.aclose_forcefully(stream)
            raise YotonTimeoutError(handshake_timed_out()) from None
        except _HANDSHAKE_FAILURES as exc:
            await trio.aclose_forcefully(stream)
            text = exc.reason if isinstance(exc, HandshakeError) else f"Handshake failed: {exc!r}"
            raise ConnectError(text) from exc
        hostname2, port2 = conn.target_names(target)
        sock = getattr(stream, "socket", None)
        try:
            name = sock.getsockname() if sock is not None else ""
        except OSError:
            name = ""
        if isinstance(name, tuple):
            hostname1, port1 = str(name[0]), int(name[1])
        else:
            hostname1, port1 = str(name), 0
        self._establish(
            hello,
            hosting=False,
            hostname1=hostname1,
            port1=port1,
            hostname2=hostname2,
            port2=port2,
        )
        self._engine.spawn(self._serve, stream, hello.leftover)

    # -- established phase ----------------------------------------------------

    def _establish(self, hello: HandshakeResult, **names: Any) -> None:
        """Become connected: register with the context (engine thread)."""
        now = time.monotonic()
        self._last_rx = self._last_tx = now
        self._send_event = trio.Event()
        if self._end_reason is None:
            self._context._joins_from_handshake(self._conn, hello.joins)
            self._conn.set_established(hello.peer_id, hello.peer_pid, **names)

    async def _serve(self, stream: trio.abc.Stream, leftover: bytes) -> None:
        conn = self._conn
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._graceful:  # close() came after connect() returned, before we ran
                    scope.deadline = trio.current_time() + CLOSE_GRACE
                elif self._end_reason is not None:  # closed while establishing
                    return
                self._engine.add_ticker(self._tick)
                plain = self._sock = self._plain_socket(stream)
                if plain is not None:
                    conn.tune_socket(plain)
                if not self._graceful:
                    self._enable_direct(plain if conn.direct_writes else None)
                async with trio.open_nursery() as nursery:
                    self._serve_scope = nursery.cancel_scope
                    if plain is None or not conn.poll_reads:
                        nursery.start_soon(
                            self._receiver_loop, stream, leftover, nursery.cancel_scope
                        )
                    elif not leftover or self._receive(leftover):
                        # From here on the poller thread, or a thread waiting
                        # for data, reads the socket (_poller.py).
                        poller = get_poller()
                        self._reader = SocketReader(self, plain, poller)
                        self._context._add_reader(self._reader)
                        poller.add(self._reader)
                    else:
                        nursery.cancel_scope.cancel()
                    await self._sender_loop(stream)
                    nursery.cancel_scope.cancel()
        finally:
            self._engine.remove_ticker(self._tick)
            self._enable_direct(None)  # no user thread may write from here on
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.stop()  # nor read: the socket is closed below
                self._context._remove_reader(reader)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_GRACE):
                    if self._close_sent:
                        await _linger(stream)
                    await stream.aclose()
            self._ended = True
            self._drop_queue()
            conn.set_closed(self._end_reason or "Connection ended.")

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

    def _end(self, reason: str) -> None:
        """First reason wins."""
        if self._end_reason is None:
            self._end_reason = reason

    async def _sender_loop(self, stream: trio.abc.Stream) -> None:
        try:
            while True:
                assert self._send_event is not None
                await self._send_event.wait()
                self._send_event = trio.Event()
                while True:  # rounds, until the queue stays empty
                    if self._pushed_now() != self._wake_pushed:
                        await self._defer_to_pusher()
                    self._wake_pushed = self._pushed_now()
                    moved = await self._drain(stream)
                    if self._graceful:
                        self._enable_direct(None)  # nothing may follow CLOSE
                        await stream.send_all(CLOSE_BYTES)
                        self._close_sent = True
                        self._end(self._end_reason or "Closed on command.")
                        return
                    if moved > LINGER_MOVED:
                        if self._stop_writing():
                            break
                        continue
                    # A round for a package or two: maybe a pusher that wakes us for
                    # each (its wake-up is a slow system call, our round is quick,
                    # so the queue is empty again at its next push). Stay awake a
                    # moment, the write side released: what it pushes meanwhile
                    # queues without waking us, or goes out in its own batches.
                    if not self._release_writing():
                        continue
                    await trio.sleep(SENDER_DEFER)
                    if self._pushed_now() == self._wake_pushed and self._stop_writing():
                        break
        except LINK_ERRORS as exc:
            self._end(f"Other end dropped the connection ({exc_text(exc)}).")

    async def _drain(self, stream: trio.abc.Stream) -> int:
        """Take the write side and write until the queue is empty; return the packages moved."""
        q = self._outq
        popleft = q.popleft
        moved = 0
        partial = self._start_writing()  # user threads stop writing directly
        if partial is not None:
            await stream.send_all(partial)
            self._partial_written()
        if not q and self._hb_due and not self._graceful:
            self._hb_due = False
            await stream.send_all(HEARTBEAT_BYTES)
            self._last_tx = time.monotonic()
        while q:
            k = len(q)
            items: list[Any] = []
            take = items.append
            try:
                for _ in range(k if k < BATCH_ITEMS else BATCH_ITEMS):
                    take(popleft())
            except IndexError:  # a full queue's discard policy took one meanwhile
                pass
            moved += len(items)
            try:
                # The common case: only small packages' finished frames.
                data = b"".join(items)
            except TypeError:  # a (header, payload) among them
                await self._write_items(stream, items)
            else:
                if data:
                    await stream.send_all(data)
                    self._written_batch(len(items), len(data))
        return moved

    async def _defer_to_pusher(self) -> None:
        """Packages came after the one that woke us: a stream. Leave it to the pusher.

        A pushing thread sends its own batches while we do not write
        (_stream_queue.py). We look again every :data:`SENDER_DEFER` and take
        the queue once the stream ended (nothing pushed since the last look)
        or the pusher stopped sending batches itself (a stream too slow to
        fill one: its packages must not wait), at once when something only we
        can write is pending or we are closing. Taking the queue while the
        pusher keeps the GIL busy would cost up to the interpreter's switch
        interval (5 ms) per write, with the queue ours and the socket idle.
        """
        batch = DIRECT_BATCH if self._direct_sock is not None else BATCH_ITEMS
        pushed = self._wake_pushed
        written = self._direct_written
        while (
            self._pushed_now() != pushed
            and len(self._outq) < batch
            and self._partial is None
            and not (self._graceful or self._hb_due or self._batch_blocked)
        ):
            pushed = self._pushed_now()
            await trio.sleep(SENDER_DEFER)
            if self._direct_written == written:
                return  # no batch of its own in that time: ours
            written = self._direct_written

    async def _write_items(self, stream: trio.abc.Stream, items: list[Any]) -> None:
        """Write queued items of both kinds: frames and ``(header, payload)``.

        Joined in batches of about :data:`BATCH_BYTES`; a large payload is
        written on its own, not copied into a batch.
        """
        pack = HEADER.pack
        parts: list[bytes] = []
        size = count = large = 0  # (large: the byte mark's share, _stream_queue "Counters")
        for item in items:
            count += 1
            if item.__class__ is bytes:  # a small package's frame
                parts.append(item)
                size += len(item)
            else:
                header, d = item
                parts.append(pack(*header))
                n = header[6]
                size += n + HEADER_SIZE
                large += n
                if n >= LARGE_PAYLOAD:
                    await stream.send_all(b"".join(parts))
                    await self._send_large(stream, d)
                    self._written_batch(count, size, large)
                    parts = []
                    size = count = large = 0
                    continue
                parts.append(d)
            if size >= BATCH_BYTES:
                await stream.send_all(b"".join(parts))
                self._written_batch(count, size, large)
                parts = []
                size = count = large = 0
        if parts:
            await stream.send_all(b"".join(parts))
            self._written_batch(count, size, large)

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

    def _tick(self, now: float) -> float | None:
        """Heartbeat and time-out; returns when they are next due (Engine._ticker).

        A direct write since the last tick only set ``_direct_tx`` (one store
        on the hot path), so the heartbeat due time is reckoned from the tick
        that saw it: on a busy link the ticker comes every HEARTBEAT_INTERVAL,
        on an idle one for each heartbeat, and never later than the time-out.
        """
        if self._send_event is None or not self._conn.is_connected:
            return None
        if self._direct_tx:  # user threads wrote directly since the last tick
            self._direct_tx = False
            self._last_tx = now
        if now - self._last_tx >= HEARTBEAT_INTERVAL and not self._outq:
            if self._heartbeat_direct():
                self._last_tx = now
            else:
                self._hb_due = True
                self._send_event.set()
        timeout = self._conn.timeout
        if not self._timed_out and now - self._last_rx >= timeout:
            self._timed_out = True
            self._conn.set_timed_out(True)
        due = self._last_tx + HEARTBEAT_INTERVAL  # (past while the sender owes it: soon)
        if not self._timed_out:
            due = min(due, self._last_rx + timeout)
        return due

    # -- close -------------------------------------------------------------

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        if notify_peer and self._send_event is not None:
            self._graceful = True  # before _end: a _serve starting now must still send CLOSE
        self._end(reason)
        if self._engine.in_engine_thread():
            self._close_in_engine(notify_peer)
        else:
            self._engine.run_sync_soon(self._close_in_engine, notify_peer)
            if not in_io_role():  # a thread that reads for us must not wait for us
                self._conn.wait_closed(CLOSE_GRACE + 1.0)

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
    except _LINGER_ERRORS:  # (Busy: the receive loop still reads)
        pass
