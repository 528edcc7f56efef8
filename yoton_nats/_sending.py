"""The sending half of a bus link: subjects, batching writes, direct writes, back-pressure.

User threads append ``(header, payload)`` to ``outq`` under their context
lock and wake the writer task at most once per batch (``NatsConnection.
send_package``); the writer turns what is queued into ``PUB`` commands,
consecutive packages for one subject packed into one NATS message
(``_busframe.pack_run``), and writes them in one ``send_all``. While the writer
is idle, a user thread may write one package of its own straight to a plain
socket (:meth:`LinkSender.send_direct`): waking the engine costs more than the
write. The writer holds ``wlock`` while it has data; whoever fails to take it
queues instead, so the two never interleave bytes.

:class:`LinkSender` is a mixin of :class:`~yoton_nats._link.BusLink`, which
owns the state it uses; it is its own module only to keep each module one
concept.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

import trio

from ._busframe import pack_run
from ._lost import Lost

if TYPE_CHECKING:
    from ._client import ServerSession
    from ._connection import NatsConnection

__all__ = ["BACKPRESSURE_TIMEOUT", "HIGH_WATER", "LinkSender", "MAX_RELAYED", "NEW_CONNECTION"]

#: Packages taken from the queue per write.
BATCH_ITEMS = 4096
#: Queue length above which sending threads wait for the writer (back-pressure).
HIGH_WATER = 4096
#: How long a sending thread waits for a congested link before it stops waiting.
BACKPRESSURE_TIMEOUT = 1.0
#: Contexts a relay subscribes to the direct subject of, at most.
MAX_RELAYED = 10000
#: The context message that announces a join (docs/protocol.md#context-messages).
NEW_CONNECTION = b"NEW_CONNECTION"


class LinkSender:
    """Sending; mixed into :class:`~yoton_nats._link.BusLink`."""

    # Owned and initialised by BusLink.__init__.
    conn: NatsConnection
    my_id: int
    prefix: str
    x_subject_b: bytes
    session: ServerSession | None
    max_payload: int
    outq: collections.deque[tuple[Any, bytes]]
    ctrl: list[bytes]
    wake_pending: bool
    _wake: trio.Event
    writing: bool
    wlock: threading.Lock
    partial: memoryview | None
    counter: int
    _subjects: dict[int, bytes]
    _direct: dict[int, bytes]
    cond: threading.Condition
    waiters: int
    relayed: set[int]
    joined_on: set[int]
    closing: bool

    def sync_subscriptions(self) -> None:  # pragma: no cover - BusLink's
        raise NotImplementedError

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
        is announced once per server session (a reconnect announces again). A
        StateChannel made after the join asks for the state on its own
        request slot, which holders listen on.
        """
        fresh = self.conn.sending() - self.joined_on
        self.joined_on |= fresh
        return [self.slot_subject(slot) for slot in sorted(fresh)]

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
                        raise Lost(f"writing to the server failed: {exc}") from exc
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

    async def _writer_locked(self, session: ServerSession) -> None:
        while not self.wlock.acquire(False):
            await trio.sleep(0)
        await self.writer(session)  # releases the lock when idle, and on the way out
