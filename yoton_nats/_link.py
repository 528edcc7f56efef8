"""The IO of one context on one bus: a server session, its reader and writer,
subscriptions, keep-alive and reconnects (trio tasks in yoton's IO engine).

Sending is :class:`~yoton_nats._sending.LinkSender` (a writer task, and direct
writes by user threads), receiving :class:`~yoton_nats._receiving.LinkReceiver`
(the core's poller or a thread waiting for data, or a trio task for TLS); this
module ties them to server sessions. One connection, read by one thread at a
time, keeps one publisher's packages in the order it sent them, across
subjects: a NATS server delivers one client's messages to a subscriber in the
order it read them, across cluster routes too (one route connection per
account between two servers).

Subjects of bus ``B`` (token ``T``, see ``_address.bus_token``):

* ``yoton.T.s.<slot hex>`` -- broadcast packages of one slot; a context
  subscribes to the slots its channels receive on (``s.*`` while it also has
  other links: it relays for them, and cannot know what they listen to);
* ``yoton.T.c.<context id hex>`` -- packages for one context only; a relay
  also subscribes to the ids of the contexts it relays for (before it
  publishes their first package, so the way back exists when they are heard);
* ``yoton.T.x`` -- context messages and the probe of a bind to port 0; a
  context's own "I joined" goes to the subjects of the slots it sends on
  (``LinkSender.join_subjects`` says why).

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

from ._busframe import BusDecoder
from ._client import LoginRefused, ServerSession, SessionError, open_session
from ._lost import Lost
from ._protocol import PING, Msg, sub_command, unsub_command
from ._receiving import LinkReceiver
from ._sending import LinkSender

if TYPE_CHECKING:
    from ._connection import NatsConnection

__all__ = ["BusLink", "LinkSettings"]

logger = logging.getLogger("yoton")

#: The keep-alive check runs this often (one task for every link of the process).
TICK = 0.1
#: Pause between rounds of reconnect attempts: starts here, doubles up to the maximum.
RECONNECT_PAUSE = (0.02, 0.5)
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


class BusLink(LinkSender, LinkReceiver):
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
        # -- receiving (a plain-TCP session: whichever thread the core lets read it)
        self.decoder = BusDecoder(conn.max_message_size)
        self.lost_reported = 0  # decoder drops already counted in the stats
        self.polled_session: ServerSession | None = None
        self.polled_error = ""
        self.probe_sid = 0
        self.probe_replies: list[Msg] = []
        # -- keep-alive and life cycle
        self.last_rx = time.monotonic()
        self.ping_out = False
        self.timed_out = False
        # A new session until the server confirmed our subscriptions: data that
        # arrives meanwhile (INFO, a PING) must not report the link alive yet.
        self.resyncing = False
        self.closing = False
        self.close_reason = ""
        self.serve_scope: trio.CancelScope | None = None
        self.run_scope: trio.CancelScope | None = None
        self.lost_reason = ""
        self.done = trio.Event()

    # -- subjects ------------------------------------------------------------------------

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

    # -- life cycle ----------------------------------------------------------------------

    def start_session(self, session: ServerSession) -> None:
        self.session = session
        try:
            self.on_info(session.info)
        except Lost:  # lame duck already: use it until it goes, then reconnect
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
            self.resyncing = True
            self.start_session(fresh)
            self._resubscribe()
            self.conn.engine_spawn(self._after_reconnect, fresh)

    async def _after_reconnect(self, session: ServerSession) -> None:
        """Report the link alive once the server confirmed our subscriptions
        (its PONG after them): traffic sent after ``timedout(False)`` reaches us."""
        confirmed = await self.ping(max(self.conn.timeout, 2.0))
        if self.session is not session:
            return
        self.resyncing = False
        if confirmed:
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
                polled = session.sock is not None and self.conn.poll_reads
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
        except Lost as exc:
            self.lost_reason = self.lost_reason or str(exc)
        except Exception as exc:  # a bug must not leave the link half-alive
            logger.exception("yoton: error in the NATS link %r", self.conn)
            self.lost_reason = self.lost_reason or f"internal error: {exc!r}"
        scope.cancel()

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
