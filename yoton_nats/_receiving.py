"""The receiving half of a bus link: the server's events, in the engine or the poller.

A plain-TCP session's socket is read by the core
(``yoton.transport.engine().watch_socket``): by its poller thread, or by a user
thread of the context while it waits for yoton data, which so reads the reply
it waits for itself. Whichever thread read a chunk calls
:meth:`LinkReceiver.on_data`, and :meth:`LinkReceiver.handle` delivers the
chunk's packages to the context right there, passing what needs the engine
(PING, PONG, INFO, -ERR) to it with ``run_sync_soon``, in order. A TLS session
is read by a trio task (:meth:`LinkReceiver.reader`). Either way one thread at
a time reads a session, in order.

:class:`LinkReceiver` is a mixin of :class:`~yoton_nats._link.BusLink`.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from yoton.transport import engine

from ._busframe import MIN_MAX_PAYLOAD, BusDecoder
from ._client import RECEIVE_SIZE
from ._lost import Lost
from ._protocol import PING, PONG, Err, Info, Msg, NatsProtocolError, Ping, Pong

if TYPE_CHECKING:
    from ._client import ServerSession
    from ._connection import NatsConnection

__all__ = ["READ_SIZE", "LinkReceiver"]

logger = logging.getLogger("yoton")

#: Bytes the core asks for per read of a plain-TCP session (below glibc's mmap
#: threshold: a 256 KiB ``recv`` cost an mmap, mremap and munmap per chunk).
READ_SIZE = 65536


class LinkReceiver:
    """Receiving; mixed into :class:`~yoton_nats._link.BusLink`."""

    # Owned and initialised by BusLink.__init__.
    conn: NatsConnection
    prefix: str
    session: ServerSession | None
    max_payload: int
    ctrl: list[bytes]
    announced: list[tuple[str, int]]
    pong_waiters: collections.deque[trio.Event | None]
    decoder: BusDecoder
    lost_reported: int
    polled_session: ServerSession | None
    polled_error: str
    probe_sid: int
    probe_replies: list[Msg]
    last_rx: float
    ping_out: bool
    timed_out: bool
    resyncing: bool

    def kick(self) -> None:  # pragma: no cover - LinkSender's
        raise NotImplementedError

    def lose(self, reason: str) -> None:  # pragma: no cover - BusLink's
        raise NotImplementedError

    async def reader(self, session: ServerSession) -> None:
        stream = session.stream
        feed = session.reader.feed
        if session.backlog:
            backlog, session.backlog = session.backlog, []
            self.handle(backlog)
        while True:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise Lost(f"reading from the server failed: {exc}") from exc
            if not data:
                raise Lost("the server closed the connection")
            self.last_rx = time.monotonic()
            self.handle(feed(data))

    def handle(self, events: list[Any], in_engine: bool = True) -> None:
        """Act on the server's events; deliver their packages as one batch.

        From the poller thread (``in_engine`` false) what needs the engine
        (PING, PONG, INFO, -ERR) goes there with ``run_sync_soon``, in order.
        """
        flat: list[Any] = []
        control: list[Any] = []
        nbytes = 0
        feed = self.decoder.feed
        for ev in events:
            if ev.__class__ is Msg:
                if ev.sid == self.probe_sid:
                    self.probe_replies.append(ev)
                elif ev.payload:
                    nbytes += feed(ev.payload, flat)
            else:
                control.append(ev)
        if control:
            if in_engine:
                self._control(control)
            else:
                self.conn.engine_call(self._control_soon, control)
        if self.timed_out and self.session is not None and not self.resyncing:
            self.timed_out = False
            self.conn.set_timed_out(False)
        lost = self.decoder.dropped + self.decoder.garbage
        if lost != self.lost_reported:
            self.conn.count_dropped(lost - self.lost_reported)
            if not self.lost_reported:
                logger.warning(
                    "yoton: dropped a message on bus %s that was not a whole yoton package "
                    "(a lost piece of a large one, over max_message_size, or not yoton's); "
                    "counted in the connection's packages_dropped",
                    self.prefix,
                )
            self.lost_reported = lost
        if flat:
            self.conn.count_received(len(flat) >> 1, nbytes)
            self.conn.deliver(flat)

    def _control(self, events: list[Any]) -> None:
        """PING, PONG, INFO and -ERR (engine thread); raises Lost to end the session."""
        for ev in events:
            if ev.__class__ is Ping:
                self.ctrl.append(PONG)
                self.kick()
            elif ev.__class__ is Pong:
                self.ping_out = False
                if self.pong_waiters:
                    waiter = self.pong_waiters.popleft()
                    if waiter is not None:
                        waiter.set()
            elif ev.__class__ is Info:
                self.on_info(ev)
            elif ev.__class__ is Err:
                if ev.closes_connection:
                    raise Lost(f"the server said: {ev.message}")
                logger.warning("yoton: the NATS server said: %s", ev.message)

    def _control_soon(self, events: list[Any]) -> None:
        try:
            self._control(events)
        except Lost as exc:
            self.lose(str(exc))

    # -- reading outside trio (plain TCP) ---------------------------------------------

    def on_data(self, data: bytes) -> bool:
        """A chunk the core read (the poller thread, or a user thread waiting for data)."""
        self.last_rx = time.monotonic()
        session = self.polled_session
        if session is not None:
            try:
                events = session.reader.feed(data)
            except NatsProtocolError as exc:
                self.polled_error = f"the server broke the NATS protocol: {exc}"
                return False
            self.handle(events, in_engine=False)
        return True

    def on_ended(self, exc: BaseException | None) -> None:
        """Reading the session's socket ended by itself (the reading thread)."""
        if isinstance(exc, OSError):
            reason = f"reading from the server failed: {exc}"
        elif exc is not None:
            reason = str(exc) or repr(exc)
        else:
            reason = self.polled_error or "the server closed the connection"
        self.conn.engine_call(self.lose, reason)

    async def polled_reader(self, session: ServerSession) -> None:
        """Let the core read a plain-TCP session's socket (engine task).

        The core's poller thread reads it, or a user thread of our context
        while it waits for yoton data (a reply, a request, a message): that
        thread then reads what it waits for itself, with no hand-off between
        threads (``yoton.transport``, ``Engine.watch_socket``).
        """
        if session.backlog:
            backlog, session.backlog = session.backlog, []
            self.handle(backlog)
        assert session.sock is not None
        self.polled_session = session
        self.polled_error = ""
        watch = engine().watch_socket(
            self.conn, session.sock, self.on_data, self.on_ended, read_size=READ_SIZE
        )
        if watch is None:  # no epoll on this platform: read in trio
            self.polled_session = None
            await self.reader(session)
            return
        try:
            await trio.sleep_forever()  # until the session's scope is cancelled
        finally:
            # stop() waits for a chunk being handed over: not in the engine
            # thread, which that chunk's thread may be waiting for.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(watch.stop)
            self.polled_session = None

    def on_info(self, info: Info) -> None:
        if self.session is not None:
            self.session.info = info
        self.max_payload = max(info.max_payload, MIN_MAX_PAYLOAD)
        for url in info.connect_urls:
            host, _, port = url.rpartition(":")
            if port.isdigit() and (host, int(port)) not in self.announced:
                self.announced.append((host.strip("[]"), int(port)))
        if info.lame_duck:
            raise Lost("the server entered lame duck mode (it is shutting down)")

    async def ping(self, timeout: float) -> bool:
        """PING the server and wait for its PONG: everything sent before was processed."""
        session = self.session
        if session is None:
            return False
        waiter = trio.Event()
        self.pong_waiters.append(waiter)
        self.ctrl.append(PING)
        self.kick()
        with trio.move_on_after(timeout):
            await waiter.wait()
        return waiter.is_set() and self.session is session
