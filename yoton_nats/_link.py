"""The IO of one context on one bus: a server session, its reader and writer,
subscriptions, keep-alive and reconnects (trio tasks in yoton's IO engine).

Threading model (as the core's stream connections): user threads append
``(header, payload)`` to :attr:`BusLink.outq` under their context lock and wake
the writer task at most once per batch; the writer turns what is queued into
``PUB`` commands, consecutive packages for one subject packed into one NATS
message (``_busframe.py``), and writes them in one ``send_all``. One reader
task parses what the server sends and hands each chunk's packages to the
context in one batch. One connection and one reader keep one publisher's
packages in the order it sent them, across subjects: a NATS server delivers
one client's messages to a subscriber in the order it read them, across
cluster routes too (one route connection per account between two servers).

Subjects of bus ``B`` (token ``T``, see ``_address.bus_token``):

* ``yoton.T.s.<slot hex>`` -- broadcast packages of one slot; a context
  subscribes to the slots its channels receive on (``s.*`` while it also has
  other links: it relays for them, and cannot know what they listen to);
* ``yoton.T.c.<context id hex>`` -- packages for one context only; a relay
  also subscribes to the ids of the contexts it relays for (before it
  publishes their first package, so the way back exists when they are heard);
* ``yoton.T.x`` -- context messages (a context joined) and the probe of a bind
  to port 0.

Faults: a lost server (EOF, error, or silence past the stale limit) reports
``timedout(conn, True)``, then the link tries the servers it knows (those of
the address and those the cluster announced) until one accepts; there it
subscribes again, sends what was queued meanwhile, reports
``timedout(conn, False)`` and announces the context again (so states are
re-sent to it). After ``reconnect_timeout`` it gives up: ``closed`` with the
reason.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from ._busframe import MIN_MAX_PAYLOAD, BusDecoder, pack_run
from ._client import RECEIVE_SIZE, LoginRefused, ServerSession, SessionError, open_session
from ._poller import AVAILABLE as POLLER_AVAILABLE
from ._poller import get_poller
from ._protocol import PING, PONG, Err, Info, Msg, Ping, Pong, sub_command, unsub_command

if TYPE_CHECKING:
    from ._connection import NatsConnection

__all__ = ["BusLink", "LinkSettings"]

logger = logging.getLogger("yoton")

#: Packages taken from the queue per write.
BATCH_ITEMS = 4096
#: Queue length above which sending threads wait for the writer (back-pressure).
HIGH_WATER = 4096
#: How long a sending thread waits for a congested link before it stops waiting.
BACKPRESSURE_TIMEOUT = 1.0
#: Contexts a relay subscribes to the direct subject of, at most.
MAX_RELAYED = 10000
#: The keep-alive check runs this often (one task for every link of the process).
TICK = 0.1
#: Pause between rounds of reconnect attempts: starts here, doubles up to the maximum.
RECONNECT_PAUSE = (0.02, 0.5)
#: The context message that announces a join (PROTOCOL.md section 5.4).
NEW_CONNECTION = b"NEW_CONNECTION"
#: Largest message accepted from a server (sanity bound of the parser).
MAX_PAYLOAD_IN = 64 << 20


class LinkSettings:
    """Options of a link (``bind``/``connect`` keywords; see ``NatsConnection``)."""

    def __init__(self) -> None:
        self.ssl_context: Any = None
        self.handshake_first = False
        self.reconnect_timeout = 60.0
        self.user = ""
        self.password = ""
        self.token = ""


class _Lost(Exception):
    """The server session ended (the message says why)."""


class BusLink:
    """The IO side of a :class:`~yoton_nats._connection.NatsConnection`."""

    def __init__(self, conn: NatsConnection, prefix: str, servers: list[tuple[str, int]]) -> None:
        self.conn = conn
        self.context = conn.context
        self.my_id: int = conn.context.id
        self.prefix = prefix
        self.x_subject = prefix + "x"
        self.x_subject_b = self.x_subject.encode()
        self.servers = list(servers)
        self.announced: list[tuple[str, int]] = []
        self.settings: LinkSettings = conn.settings
        self.session: ServerSession | None = None
        self.max_payload = 1 << 20
        # -- sending (outq: any thread under the context lock; the rest: engine thread)
        self.outq: collections.deque[tuple[Any, bytes]] = collections.deque()
        self.ctrl: list[bytes] = []
        self.wake_pending = False
        self._wake = trio.Event()
        self.writing = False
        # Held by the writer task while it has something to write, and by a user
        # thread writing one package directly to an idle plain socket (never
        # waited for: whoever fails to take it queues instead).
        self.wlock = threading.Lock()
        self.partial: memoryview | None = None  # the unsent rest of a direct write
        self.counter = 0  # fragmented frames sent
        self._subjects: dict[int, bytes] = {}  # slot -> subject
        self._direct: dict[int, bytes] = {}  # context id -> subject
        self.cond = threading.Condition(threading.Lock())
        self.waiters = 0
        # -- subscriptions: subject -> sid (what the server should have)
        self.subs: dict[str, int] = {}
        self.next_sid = 1
        self.relayed: set[int] = set()
        self.joined_on: set[int] = set()  # sent slots our join was announced on
        self.bridging = False
        self.pong_waiters: collections.deque[trio.Event | None] = collections.deque()
        # -- receiving (the poller thread's part: read_lock held while it reads)
        self.decoder = BusDecoder(conn.max_message_size)
        self.lost_reported = 0  # decoder drops already counted in the stats
        self.read_lock = threading.Lock()
        self.polled_fd = -1
        self.polled_sock: Any = None
        self.polled_session: ServerSession | None = None
        self.receive_size = RECEIVE_SIZE
        self.probe_sid = 0
        self.probe_replies: list[Msg] = []
        # -- keep-alive and life cycle
        self.last_rx = time.monotonic()
        self.ping_out = False
        self.timed_out = False
        self.closing = False
        self.close_reason = ""
        self.serve_scope: trio.CancelScope | None = None
        self.run_scope: trio.CancelScope | None = None
        self.lost_reason = ""
        self.done = trio.Event()

    # -- subjects ------------------------------------------------------------------------

    def slot_subject(self, slot: int) -> bytes:
        subj = self._subjects.get(slot)
        if subj is None:
            subj = self._subjects[slot] = f"{self.prefix}s.{slot:x}".encode()
        return subj

    def direct_subject(self, context_id: int) -> bytes:
        subj = self._direct.get(context_id)
        if subj is None:
            if len(self._direct) > 4 * MAX_RELAYED:
                self._direct.clear()
            subj = self._direct[context_id] = f"{self.prefix}c.{context_id:x}".encode()
        return subj

    def join_subjects(self) -> list[bytes]:
        """Where our "a context joined" goes: the subjects of the slots we send on.

        Who acts on it listens there: a holder of a state on that slot (it
        re-sends the state to us), a sync-mode subscriber of what we publish
        (it repeats "full" to us), a relay (it listens to every slot). Sent on
        the common subject instead, every join would reach every context of
        the bus, and joining N contexts would cost N x N deliveries. Each slot
        is announced once per server session: a channel made after the join
        announces its slot then (``NatsConnection.slots_changed``), so holders
        of its state re-send it.
        """
        fresh = self.conn.sending() - self.joined_on
        self.joined_on |= fresh
        return [self.slot_subject(slot) for slot in sorted(fresh)]

    def wanted(self) -> set[str]:
        """The subjects this context should be subscribed to now."""
        p = self.prefix
        want = {self.x_subject, f"{p}c.{self.my_id:x}"}
        if self.bridging:
            want.add(f"{p}s.*")
        else:
            want.update(f"{p}s.{slot:x}" for slot in self.conn.listened())
        want.update(f"{p}c.{sid:x}" for sid in self.relayed)
        return want

    def sync_subscriptions(self) -> None:
        """Bring :attr:`subs` in line with :meth:`wanted` (engine thread): new ones
        first, so a subject moving to a wildcard is never missed (a duplicate is
        dropped by the core's sequence check)."""
        want = self.wanted()
        out = self.ctrl
        for subject in sorted(want - self.subs.keys()):
            sid = self.next_sid
            self.next_sid += 1
            self.subs[subject] = sid
            out.append(sub_command(subject, sid))
        for subject in [s for s in self.subs if s not in want]:
            out.append(unsub_command(self.subs.pop(subject)))
        self.kick()

    # -- the sending side ------------------------------------------------------------------

    def kick(self) -> None:
        """Wake the writer (engine thread)."""
        self.wake_pending = False
        self._wake.set()

    def compose(self) -> tuple[list[Any], int, int]:
        """Take what is queued and turn it into bytes to write (engine thread).

        Returns:
            ``(parts, packages, payload bytes)``.
        """
        self.wake_pending = False
        out: list[Any] = []
        q = self.outq
        n = min(len(q), BATCH_ITEMS)
        if not n:
            if self.ctrl:
                out, self.ctrl = self.ctrl, []
            return out, 0, 0
        pop = q.popleft
        items = [pop() for _ in range(n)]
        my_id = self.my_id
        relayed = self.relayed
        nbytes = 0
        new_sources = False
        for header, _data in items:
            nbytes += header[6]
            sid = header[2]
            if sid != my_id and sid not in relayed and len(relayed) < MAX_RELAYED:
                relayed.add(sid)  # we relay for sid: hear what is sent to it
                new_sources = True
        if new_sources:
            self.sync_subscriptions()
        if self.ctrl:
            out, self.ctrl = self.ctrl, []
        run: list[tuple[Any, bytes]] = []
        run_subject = b""
        max_payload = self.max_payload
        for item in items:
            header = item[0]
            dest = header[4]
            if dest:
                subject = self.direct_subject(dest)
            elif header[1] == 2:  # SLOT_CONTEXT: context messages
                if item[1] == NEW_CONNECTION and header[2] == my_id:
                    if run:
                        self.counter = pack_run(
                            out, run_subject, run, max_payload, my_id, self.counter
                        )
                        run, run_subject = [], b""
                    for subj in self.join_subjects():
                        pack_run(out, subj, [item], max_payload, my_id, 0)
                    continue
                subject = self.x_subject_b
            else:
                subject = self.slot_subject(header[1])
            if subject != run_subject and run:
                self.counter = pack_run(out, run_subject, run, max_payload, my_id, self.counter)
                run = []
            run_subject = subject
            run.append(item)
        if run:
            self.counter = pack_run(out, run_subject, run, max_payload, my_id, self.counter)
        return out, n, nbytes

    async def writer(self, session: ServerSession) -> None:
        stream = session.stream
        wlock = self.wlock
        held = True  # the caller took the lock
        try:
            while True:
                if not self.outq and not self.ctrl and self.partial is None:
                    self.writing = False
                    wlock.release()
                    held = False
                    self._after_drain()
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while not wlock.acquire(False):  # a thread is writing one package
                        await trio.sleep(0)
                    held = True
                self.writing = True
                parts, n, nbytes = self.compose()
                if self.partial is not None:
                    parts.insert(0, self.partial)
                    self.partial = None
                if parts:
                    try:
                        await stream.send_all(b"".join(parts))
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        self.conn.count_dropped(n)
                        raise _Lost(f"writing to the server failed: {exc}") from exc
                    if n:
                        self.conn.count_sent(n, nbytes)
                if len(self.outq) < HIGH_WATER // 2 and self.waiters:
                    self._after_drain()
                await trio.lowlevel.checkpoint()
        finally:
            self.writing = False
            if held:
                wlock.release()

    def send_direct(self, header: Any, data: bytes) -> bool:
        """Write one package of ours straight to an idle plain socket (a user
        thread, under the context lock): no wake-up of the IO engine, which
        costs more than the write. False when the writer task must do it."""
        session = self.session
        if session is None or session.sock is None or self.outq or not self.wlock.acquire(False):
            return False
        try:
            if self.outq or self.partial is not None or self.session is not session:
                return False
            size = len(data) + 56
            if size > self.max_payload or header[1] == 2:
                return False
            out: list[Any] = []
            dest = header[4]
            if dest:
                subject = self.direct_subject(dest)
            elif header[1] == 2:
                subject = self.x_subject_b
            else:
                subject = self.slot_subject(header[1])
            pack_run(out, subject, [(header, data)], self.max_payload, self.my_id, 0)
            wire = b"".join(out)
            try:
                sent = session.sock.send(wire)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False  # the reader sees the broken socket; the queue keeps it
            if sent < len(wire):
                self.partial = memoryview(wire)[sent:]
                self.wake_pending = True
                self.conn.engine_kick(self)
            self.conn.count_sent(1, len(data))
            return True
        finally:
            self.wlock.release()

    def _after_drain(self) -> None:
        if len(self.outq) < HIGH_WATER // 2:
            self.conn.set_congested(False)
        if self.waiters:
            with self.cond:
                self.cond.notify_all()

    def wait_writable(self) -> None:
        """Block a user thread while the queue is long (back-pressure)."""
        if len(self.outq) < HIGH_WATER or self.session is None:
            return
        with self.cond:
            self.waiters += 1
            try:
                self.cond.wait_for(
                    lambda: len(self.outq) < HIGH_WATER // 2 or self.closing or not self.session,
                    BACKPRESSURE_TIMEOUT,
                )
            finally:
                self.waiters -= 1

    # -- the receiving side ------------------------------------------------------------------

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
                raise _Lost(f"reading from the server failed: {exc}") from exc
            if not data:
                raise _Lost("the server closed the connection")
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
        """PING, PONG, INFO and -ERR (engine thread); raises _Lost to end the session."""
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
                    raise _Lost(f"the server said: {ev.message}")
                logger.warning("yoton: the NATS server said: %s", ev.message)

    def _control_soon(self, events: list[Any]) -> None:
        try:
            self._control(events)
        except _Lost as exc:
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
            raise _Lost("the server entered lame duck mode (it is shutting down)")

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

    # -- life cycle -----------------------------------------------------------------------------

    def start_session(self, session: ServerSession) -> None:
        self.session = session
        try:
            self.on_info(session.info)
        except _Lost:  # lame duck already: use it until it goes, then reconnect
            pass
        self.last_rx = time.monotonic()
        self.ping_out = False

    async def run(self) -> None:
        """Serve sessions until closed or given up (an engine task)."""
        _keepalive.add(self)
        try:
            with trio.CancelScope() as self.run_scope:
                await self._run_sessions()
        finally:
            _keepalive.discard(self)
            self.session = None
            self._wake_pongs()
            self.done.set()
            self.conn.forget_bus()
            self.conn.set_closed(self.close_reason or self.lost_reason or "Closed on command.")

    async def _run_sessions(self) -> None:
        if self.closing:
            return
        while True:
            session = self.session
            assert session is not None
            await self._serve(session)
            self.session = None
            self._wake_pongs()
            self.decoder.forget()
            if self.closing:
                break
            reason = self.lost_reason
            logger.info("yoton: lost the NATS server %s:%s: %s", session.host, session.port, reason)
            if not self.timed_out:
                self.timed_out = True
                self.conn.set_timed_out(True)
            with self.cond:
                self.cond.notify_all()
            fresh = await self._reconnect(reason, avoid=(session.host, session.port))
            if fresh is None:
                break
            self.start_session(fresh)
            self._resubscribe()
            self.conn.engine_spawn(self._after_reconnect, fresh)

    async def _after_reconnect(self, session: ServerSession) -> None:
        if await self.ping(max(self.conn.timeout, 2.0)) and self.session is session:
            if self.timed_out:
                self.timed_out = False
                self.conn.set_timed_out(False)
            self.conn.announce()

    def _resubscribe(self) -> None:
        """A new session: the server knows none of our subscriptions (engine thread)."""
        self.joined_on.clear()
        self.ctrl[:0] = [sub_command(s, sid) for s, sid in self.subs.items()]
        self.sync_subscriptions()

    async def _serve(self, session: ServerSession) -> None:
        self.lost_reason = ""
        try:
            async with trio.open_nursery() as nursery:
                self.serve_scope = nursery.cancel_scope
                polled = session.sock is not None and POLLER_AVAILABLE and self.conn.poll_reads
                reader = self.polled_reader if polled else self.reader
                nursery.start_soon(self._guard, reader, session, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._writer_locked, session, nursery.cancel_scope)
        finally:
            self.serve_scope = None
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                try:
                    await session.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _guard(self, fn: Any, session: ServerSession, scope: trio.CancelScope) -> None:
        try:
            await fn(session)
        except _Lost as exc:
            self.lost_reason = self.lost_reason or str(exc)
        except Exception as exc:  # a bug must not leave the link half-alive
            logger.exception("yoton: error in the NATS link %r", self.conn)
            self.lost_reason = self.lost_reason or f"internal error: {exc!r}"
        scope.cancel()

    async def _writer_locked(self, session: ServerSession) -> None:
        while not self.wlock.acquire(False):
            await trio.sleep(0)
        await self.writer(session)  # releases the lock when idle, and on the way out

    def lose(self, reason: str) -> None:
        """Drop the current session (engine thread); the run loop reconnects."""
        self.lost_reason = self.lost_reason or reason
        if self.serve_scope is not None:
            self.serve_scope.cancel()

    def _wake_pongs(self) -> None:
        while self.pong_waiters:
            waiter = self.pong_waiters.popleft()
            if waiter is not None:
                waiter.set()

    def candidates(self, avoid: tuple[str, int] | None) -> list[tuple[str, int]]:
        """Servers to try: ours first, then the announced ones; ``avoid`` last."""
        seen: list[tuple[str, int]] = []
        for server in [*self.servers, *self.announced]:
            if server not in seen:
                seen.append(server)
        if avoid in seen and len(seen) > 1:
            seen.remove(avoid)
            seen.append(avoid)
        return seen

    async def open(
        self, avoid: tuple[str, int] | None, deadline: float, subscribe: bytes = b""
    ) -> ServerSession:
        """Open a session with the first server that accepts before ``deadline``
        (``subscribe``: SUB commands to send with the login).

        Raises:
            LoginRefused / SessionError: the last reason, when none accepted.
        """
        s = self.settings
        options: dict[str, Any] = {"name": self.conn.client_name()}
        if s.user:
            options.update(user=s.user, **{"pass": s.password})
        elif s.token:
            options["auth_token"] = s.token
        error: SessionError | None = None
        for host, port in self.candidates(avoid):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                with trio.fail_after(left):
                    return await open_session(
                        host,
                        port,
                        options=options,
                        ssl_context=s.ssl_context,
                        handshake_first=s.handshake_first,
                        max_payload_in=MAX_PAYLOAD_IN,
                        subscribe=subscribe,
                    )
            except LoginRefused:
                raise
            except SessionError as exc:
                error = exc
            except trio.TooSlowError:
                error = SessionError(f"the NATS server at {host}:{port} did not answer in time")
        raise error or SessionError("no NATS server to try")

    async def _reconnect(self, reason: str, avoid: tuple[str, int]) -> ServerSession | None:
        limit = self.settings.reconnect_timeout
        deadline = time.monotonic() + limit
        pause = RECONNECT_PAUSE[0]
        last = reason
        while not self.closing:
            try:
                return await self.open(avoid, deadline)
            except SessionError as exc:
                last = str(exc)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await trio.sleep(min(left, pause * random.uniform(0.8, 1.2)))
            pause = min(pause * 2, RECONNECT_PAUSE[1])
        if not self.closing:
            servers = ", ".join(f"{h}:{p}" for h, p in self.candidates(None))
            self.close_reason = (
                f"Lost the NATS server ({reason}) and none of {servers} accepted us again "
                f"within {limit:g} s (last: {last})."
            )
        return None

    # -- keep-alive (every TICK, engine thread) -------------------------------------------------

    def tick(self, now: float) -> None:
        if self.session is None or self.closing:
            return
        timeout = self.conn.timeout
        idle = now - self.last_rx
        if idle >= timeout / 2 and not self.ping_out:
            self.ping_out = True
            self.pong_waiters.append(None)
            self.ctrl.append(PING)
            self.kick()
        if idle >= timeout and not self.timed_out:
            self.timed_out = True
            self.conn.set_timed_out(True)
        if idle >= max(3 * timeout, 2.0):
            self.lose(f"the server sent nothing for {idle:.1f} s")


class _Keepalive:
    """One task that ticks every link of the process (not one timer per context)."""

    def __init__(self) -> None:
        self.links: set[BusLink] = set()
        self.running = False

    def add(self, link: BusLink) -> None:
        self.links.add(link)
        if not self.running:
            self.running = True
            link.conn.engine_spawn(self._run)

    def discard(self, link: BusLink) -> None:
        self.links.discard(link)

    async def _run(self) -> None:
        try:
            while self.links:
                await trio.sleep(TICK)
                now = time.monotonic()
                for link in list(self.links):
                    try:
                        link.tick(now)
                    except Exception:  # pragma: no cover - defensive
                        logger.exception("yoton: keep-alive of %r failed", link.conn)
        finally:
            self.running = False


_keepalive = _Keepalive()


def _after_fork_in_child() -> None:
    # The parent's links and engine do not exist in a child (its contexts get a
    # fresh engine): start with no keep-alive task and no links.
    global _keepalive
    _keepalive = _Keepalive()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
