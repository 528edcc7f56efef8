"""The receiving half of a bus link: the server's events, in the engine or the poller.

A plain-TCP session is read by the poller thread (``_poller.py``): it calls
:meth:`LinkReceiver.on_data` with each chunk, and :meth:`LinkReceiver.handle`
delivers the chunk's packages to the context right there, passing what needs
the engine (PING, PONG, INFO, -ERR) to it with ``run_sync_soon``, in order. A
TLS session is read by a trio task (:meth:`LinkReceiver.reader`). Either way
one reader per session keeps the server's order.

:class:`LinkReceiver` is a mixin of :class:`~yoton_nats._link.BusLink`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from ._busframe import MIN_MAX_PAYLOAD, BusDecoder
from ._client import RECEIVE_SIZE
from ._lost import Lost
from ._poller import get_poller
from ._protocol import PING, PONG, Err, Info, Msg, Ping, Pong

if TYPE_CHECKING:
    from ._client import ServerSession
    from ._connection import NatsConnection

__all__ = ["LinkReceiver"]

logger = logging.getLogger("yoton")


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
    read_lock: threading.Lock
    polled_fd: int
    polled_sock: Any
    polled_session: ServerSession | None
    receive_size: int
    probe_sid: int
    probe_replies: list[Msg]
    last_rx: float
    ping_out: bool
    timed_out: bool

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
        if self.timed_out and self.session is not None:
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

    # -- reading in the poller thread (plain TCP) --------------------------------------

    def on_data(self, data: bytes) -> None:
        """A chunk the poller read (poller thread, ``read_lock`` held)."""
        self.last_rx = time.monotonic()
        session = self.polled_session
        if session is not None:
            self.handle(session.reader.feed(data), in_engine=False)

    def poll_lost(self, reason: str) -> None:
        """The poller saw the session end (poller thread)."""
        self.conn.engine_call(self.lose, reason)

    async def polled_reader(self, session: ServerSession) -> None:
        """Stands for the reader task while the poller reads (engine task)."""
        if session.backlog:
            backlog, session.backlog = session.backlog, []
            self.handle(backlog)
        poller = get_poller()
        self.polled_session = session
        self.polled_sock = session.sock
        poller.register(self, session.sock)
        try:
            await trio.sleep_forever()  # until the session's scope is cancelled
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(poller.unregister, self)
            self.polled_session = None
            self.polled_sock = None

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
