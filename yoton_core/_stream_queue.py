"""The outgoing side of a stream connection: queue, direct writes, back-pressure, flush.

User threads hand packages to a connection with its ``send_package``
(:func:`send_package` here), always under
their context's lock (so packages of one context enter every queue in sequence
order). Three ways lead from there to the socket:

* **The engine path.** The package is appended to ``_outq`` and the sender
  task in the IO engine is woken (at most once per batch); it packs whole
  batches into one write.
* **The direct path.** When the connection is idle -- nothing queued, no
  partial write pending, and the sender task not writing -- the pushing thread
  writes header and payload to the socket itself with one non-blocking
  ``send``. A request/reply round trip then no longer waits for the engine
  thread to be scheduled and to take the GIL, twice per round trip. Only
  streams whose bytes go to the socket unchanged can do this (a plain
  ``trio.SocketStream``, not TLS); see :meth:`StreamLink._plain_socket`.
* **The pusher's batches.** A thread that pushes a stream of packages sends
  the queued frames itself, :data:`DIRECT_BATCH` at a time, in one ``send``,
  whenever the sender task is not writing; the sender task, woken by the first
  package of the stream, leaves the queue to it for a moment
  (:data:`SENDER_DEFER`) when more packages came since. Waking the engine
  costs the pushing thread a system call that gives the GIL away, and the
  engine needs the GIL back to write: with the engine writing a stream, the
  two threads passed the GIL back and forth for every package or two
  (measured: a third of a 100-byte pub/sub run went on ~35 µs rounds that
  moved one package each), or the engine waited out the interpreter's 5 ms
  switch interval while the queue filled and the socket stood idle. Now a
  stream costs the engine about one wake-up per batch that the pusher left,
  and the data leaves as it is produced.

**The fan-out path** (``_fan.py``): when every link of a context is a stream
queue of ours, ``Context._send`` appends a small package's frame itself to
each queue that is streaming; every other case goes through ``send_package``.

Ownership protocol of the socket's write side: ``_wlock`` guards ``_writing``,
``_partial`` and ``_direct_sock``. The sender task sets ``_writing`` (under the
lock) before it takes anything from the queue and clears it only when the queue
is empty; a pushing thread writes only while holding the lock (taken without
blocking: a busy lock means "use the queue"), with ``_writing`` clear, so the
engine and a user thread never write at the same time and bytes leave in push
order (a direct write also needs the queue empty; a pusher's batch takes the
queue from its head). What a pushing thread's ``send`` could not write (socket
buffer full, or an error) becomes ``_partial``, which the sender writes before
anything else. Closing clears ``_direct_sock`` under the lock before the CLOSE
package or the socket's close, so nothing is written after either.

Wake-ups: ``_wake_pending`` is set by whoever asks the engine to wake the
sender, and stays set while the sender task writes: pushers do not wake it
then, as its loop looks at the queue again before it stops; it clears the flag
just before that last look (:meth:`StreamQueue._stop_writing`).

Counters: pushers (under the context lock) own "pushed"/"discarded", the engine
owns "written", and pushers writing themselves (under ``_wlock``) own "direct
written", so no counter is ever updated from two threads. The fan-out path's
appends are counted from each link's ``_fan_base`` (``_fan.py``), not one by
one: ``_pushed_now()`` is the whole count, exact under the context lock, where
``flush`` reads it (the sender task's heuristics need no exact count). The
byte counters, which the byte high-water mark (:data:`HIGH_WATER_BYTES`)
reads, count the payloads of large packages only (over :data:`FRAME_MAX`, queued as ``(header,
payload)``): small frames are held to the package mark, which caps them at
:data:`HIGH_WATER_PACKAGES` x 4 KiB, the byte mark itself. Not counting them
spares the hottest line of all, the fan-out path's append, one addition per
link and message (~340 instructions).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from logging import DEBUG
from typing import TYPE_CHECKING, Any

import trio

from ._errors import BrokenConnectionError, ConnectionClosedError
from ._errors import TimeoutError as YotonTimeoutError
from ._link_slots import LinkSlots
from ._wire import HEADER, HEADER_SIZE, HEARTBEAT_BYTES

if TYPE_CHECKING:
    import logging

    from ._context import Context
    from ._engine import Engine
    from ._stream import StreamConnection
    from ._wire import Header

__all__ = [
    "BATCH_ITEMS",
    "DIRECT_BATCH",
    "FRAME_MAX",
    "SENDER_DEFER",
    "StreamQueue",
    "send_package",
]

#: Outgoing-queue levels for user-thread back-pressure.
HIGH_WATER_PACKAGES = 4096
HIGH_WATER_BYTES = 16 * 1024 * 1024
#: How long a user thread waits for a congested peer before it stops waiting.
BACKPRESSURE_TIMEOUT = 1.0
#: Payloads up to this size are queued as finished frames (see send_package).
FRAME_MAX = 4096
#: Packages larger than this never take the direct path (they would block the
#: pushing thread's context lock for a long copy, and the engine batches them
#: as well anyway).
DIRECT_MAX = 64 * 1024
#: A package takes the direct path only if the previous push that found the
#: queue empty was at least this long ago, or the link received something
#: since. A stream of packages (pub/sub) then goes through the engine, which
#: writes whole batches with one system call, while request/reply traffic,
#: which comes in ones, is written at once: a request follows the previous
#: reply, a reply its request. (The time rule alone queued the next request
#: after every round trip shorter than this, for ~100-270 us of engine wake-up.)
DIRECT_QUIET = 50e-6
#: A pusher that finds this many small frames queued while the sender task is
#: not writing sends them itself, in one ``send`` (~40 KiB of 100-byte messages).
DIRECT_BATCH = 256
#: Queued packages taken per write (by the sender task or a pushing thread)
#: when they are all small frames (at most 1024 x 4 KiB + header, ~4 MiB;
#: 160 KiB for 100-byte messages).
BATCH_ITEMS = 1024

#: How long the sender task, woken by the first package of a stream, leaves the
#: queue to the pushing thread when more packages came since (one trio timer;
#: epoll waits in whole milliseconds).
SENDER_DEFER = 0.001

_monotonic = time.monotonic
_pack = HEADER.pack


def _large_bytes(count: int, payload: int) -> int:
    """Of ``count`` packages written together (``payload`` bytes), the bytes the mark counts.

    Written together means one package of a direct write or a pusher's batch
    of frames, which are all small: so only one package over :data:`FRAME_MAX`.
    """
    return payload if count == 1 and payload > FRAME_MAX else 0


class StreamQueue(LinkSlots):
    """Mixin of :class:`~._stream_link.StreamLink`: between ``send_package`` and the socket."""

    __slots__ = ()  # (all in LinkSlots)

    _conn: StreamConnection
    _context: Context
    _engine: Engine
    _last_tx: float
    _last_rx: float  # time.monotonic() of the last chunk received (StreamReceiver)
    _end_reason: str | None
    _ended: bool
    _log: logging.Logger  # the connection's (Connection.log)

    def _init_queue(self) -> None:
        # Per package: the whole frame (header and payload) as bytes when the
        # payload is small, else (header tuple, payload); see send_package.
        self._outq: collections.deque[bytes | tuple[Header, bytes]] = collections.deque()
        self._pushed = 0
        # While this link is in its context's fan (Context._fan_out): the
        # context's _send_seq up to which _pushed counts the fan-out path's
        # appends; -1 outside it (see "Counters" in the module doc).
        self._fan_base = -1
        self._bytes_pushed = 0
        self._discarded = 0
        self._bytes_discarded = 0
        self._written = 0
        self._bytes_written = 0
        self._direct_written = 0
        self._direct_bytes = 0
        self._wake_pending = False
        self._send_event: trio.Event | None = None
        self._flush_cond = threading.Condition(threading.Lock())
        self._flush_waiters = 0
        self._drain_waiters = 0
        # Reported congested (conn.set_congested): the context makes senders wait.
        self._congestion_check = False
        # A sender waited in vain: the peer is stalled. Senders stop waiting
        # (the discard policy applies) until the queue drains.
        self._gave_up = False
        # The direct path (see the module docstring).
        self._wlock = threading.Lock()
        self._writing = False
        self._partial: bytes | None = None
        self._partial_bytes = 0
        self._partial_count = 1  # packages in _partial (a pusher's batch: many)
        # The pusher's batches (see the module docstring): ``_pushed`` when the
        # last wake-up was asked for, and whether a large package in the queue
        # leaves the writing to the sender task until it is empty.
        self._wake_pushed = 0
        self._batch_blocked = False
        self._direct_sock: socket.socket | None = None
        self._direct_tx = False  # a direct write happened since the last tick
        self._last_idle_push = 0.0

    # -- accounting ------------------------------------------------------------

    @property
    def _queued_bytes(self) -> int:
        """Payload bytes of the large packages queued (see "Counters" in the module doc)."""
        return self._bytes_pushed - self._bytes_discarded - self._bytes_written - self._direct_bytes

    def _pushed_now(self) -> int:
        """Packages pushed so far, the fan-out path's appends included.

        Exact under the context lock; from another thread an estimate, off by
        the appends of a concurrent settlement (see "Counters").
        """
        base = self._fan_base
        if base < 0:
            return self._pushed
        return self._pushed + self._context._send_seq - base

    def _retired(self) -> int:
        """Packages that left the queue: written to the OS or discarded."""
        return self._written + self._direct_written + self._discarded

    def queued_count(self) -> int:
        return len(self._outq) + (self._partial is not None)

    # -- pushing (user threads and engine, under the context lock) -------------

    def _discard(self, n: int) -> bool:
        """The queue is full: apply the discard policy; True if the new package goes."""
        self._conn.count_dropped()
        if not self._context._queue_discard_old:
            self._discarded += 1
            if n > FRAME_MAX:
                self._bytes_discarded += n
            return True
        try:
            old = self._outq.popleft()
        except IndexError:  # the sender emptied the queue meanwhile
            pass
        else:
            self._discarded += 1
            if not isinstance(old, bytes):  # (a small package's frame counts no bytes)
                self._bytes_discarded += old[0][6]
        return False

    def _congest(self) -> None:
        """The queue passed its high-water mark: the context makes senders wait.

        Once per episode: not again while reported, nor while senders have
        given up waiting for a stalled peer.
        """
        if self._congestion_check or self._gave_up:
            return
        self._conn.set_congested(True)  # (told first, as it is cleared: see _after_drain)
        self._congestion_check = True

    def _over_bytes(self) -> bool:
        return self._queued_bytes >= HIGH_WATER_BYTES

    def _write_direct(self, sock: socket.socket, header: Header, data: bytes) -> None:
        """Write one package from the pushing thread (``_wlock`` held, link idle)."""
        self._send_frames(sock, _pack(*header) + data, 1, header[6])

    def _send_frames(self, sock: socket.socket, data: bytes, count: int, payload: int) -> None:
        """Send ``count`` whole frames (``payload`` bytes of it theirs) from the
        pushing thread, ``_wlock`` held; count what went out, and leave what
        the socket did not take to the sender task as ``_partial``, ahead of
        anything queued later (it counts those packages once all is out)."""
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the sender task meets the error too and ends the connection
        self._direct_tx = True
        if sent == len(data):
            self._direct_written += count
            self._direct_bytes += _large_bytes(count, payload)
            self._conn.count_sent(count, len(data))
            if self._flush_waiters:
                with self._flush_cond:
                    self._flush_cond.notify_all()
            return
        self._partial = data[sent:] if sent else data
        self._partial_bytes = payload
        self._partial_count = count
        self._request_wake()

    def _write_batch(self) -> None:
        """Send the queued frames from the pushing thread, in one ``send``.

        Called by :func:`send_package` (under the context lock) when
        :data:`DIRECT_BATCH` frames wait and the sender task is not writing. A
        remainder the socket did not take becomes ``_partial``, for the sender.
        """
        if not self._wlock.acquire(False):
            return
        try:
            sock = self._direct_sock
            if sock is None or self._writing or self._partial is not None:
                return
            q = self._outq
            count = len(q)
            # Joined where they lie, then cleared: nothing else changes the
            # queue meanwhile (pushers hold the context lock, as we do, and
            # the sender task takes from it only while ``_writing``).
            items: Any = q
            if count > BATCH_ITEMS:
                popleft = q.popleft
                items = [popleft() for _ in range(BATCH_ITEMS)]
                count = BATCH_ITEMS
            try:
                data = b"".join(items)
            except TypeError:  # a large package's (header, payload): the sender's work
                if items is not q:
                    q.extendleft(reversed(items))
                self._batch_blocked = True
                self._request_wake()
                return
            if items is q:
                q.clear()
            self._send_frames(sock, data, count, len(data) - HEADER_SIZE * count)
            # A stream, not a quiet link: the push that finds the queue empty
            # after this batch queues its package (the "quiet" rule of
            # send_package), where a direct write would spend a system call
            # on one package per batch.
            self._last_idle_push = _monotonic()
        finally:
            self._wlock.release()

    def _request_wake(self) -> None:
        """Wake the sender task unless a wake-up is on its way (any thread)."""
        if not self._wake_pending and self._send_event is not None:
            self._wake_pending = True
            self._wake_pushed = self._pushed_now()
            if self._engine.in_engine_thread():
                self._send_event.set()
            else:
                self._engine.run_sync_soon(self._wake)

    def _heartbeat_direct(self) -> bool:
        """Write a heartbeat from the ticker (engine thread) if the link is idle.

        Through the sender task a heartbeat costs a trio wake-up and a
        ``send_all`` round, ~50 us: with a thousand idle links (5 heartbeats a
        second each) that was most of a hub's CPU. Here it is one ``send``.
        Returns False when the task must do it (not a plain socket, or busy).
        """
        if self._direct_sock is None or not self._wlock.acquire(False):
            return False
        try:
            sock = self._direct_sock
            if sock is None or self._writing or self._outq or self._partial is not None:
                return False
            try:
                sent = sock.send(HEARTBEAT_BYTES)
            except OSError:  # full, or broken (the sender task meets that too)
                return False
            if 0 < sent < HEADER_SIZE:  # the rest before anything else, not counted
                self._partial = HEARTBEAT_BYTES[sent:]
                self._partial_bytes = -1
                self._send_event.set()  # type: ignore[union-attr]  # (established)
            return sent > 0
        finally:
            self._wlock.release()

    def _wake(self) -> None:
        if self._send_event is not None:
            self._send_event.set()

    def _enable_direct(self, sock: socket.socket | None) -> None:
        """Allow (a socket) or forbid (None) direct writes; engine thread."""
        with self._wlock:
            self._direct_sock = sock

    def _start_writing(self) -> bytes | None:
        """The sender task takes the write side; returns a pending partial frame."""
        with self._wlock:
            self._writing = True
            partial, self._partial = self._partial, None
        return partial

    def _release_writing(self) -> bool:
        """The sender task gives the write side back if nothing is left, staying awake.

        Unlike :meth:`_stop_writing` it keeps ``_wake_pending``: pushers do not
        wake it meanwhile (it looks at the queue again soon). True if it did.
        """
        with self._wlock:
            if self._outq or self._partial is not None:
                return False
            self._writing = False
            self._batch_blocked = False
            return True

    def _stop_writing(self) -> bool:
        """The sender task gives the write side back if nothing is left; True if it did."""
        # Pushers do not wake the sender while it writes: cleared before the
        # last look at the queue, so a package pushed after it wakes it again.
        self._wake_pending = False
        with self._wlock:
            if self._outq or self._partial is not None:
                self._wake_pending = True
                return False
            self._writing = False
            self._batch_blocked = False
            return True

    def _partial_written(self) -> None:
        """The sender finished writing a direct write's remainder (engine)."""
        if self._partial_bytes >= 0:  # (-1: a heartbeat's, which is no package)
            k = self._partial_count
            payload = self._partial_bytes
            self._written_batch(k, payload + HEADER_SIZE * k, _large_bytes(k, payload))

    def _written_batch(self, count: int, size: int, large: int = 0) -> None:
        """The sender wrote ``count`` packages, ``size`` bytes on the wire (engine).

        ``large``: the payload bytes of the large packages among them, which
        the byte mark counts (see "Counters" in the module doc).
        """
        if large:
            self._bytes_written += large
        self._conn.count_sent(count, size)
        self._written += count
        self._last_tx = time.monotonic()
        if self._log.isEnabledFor(DEBUG):  # once per batch
            self._log.debug("wrote %d packages, %d bytes", count, size)
        self._after_drain()

    # -- back-pressure -----------------------------------------------------------

    def _after_drain(self) -> None:
        q = self._outq
        if len(q) <= HIGH_WATER_PACKAGES // 2 and self._queued_bytes <= HIGH_WATER_BYTES // 2:
            self._gave_up = False
            if self._congestion_check:  # (told first: a pusher may report again meanwhile)
                self._conn.set_congested(False)
                self._congestion_check = False
            if self._drain_waiters:
                with self._flush_cond:
                    self._flush_cond.notify_all()
        if self._flush_waiters:
            with self._flush_cond:
                self._flush_cond.notify_all()

    def wait_writable(self) -> None:
        q = self._outq
        if len(q) < HIGH_WATER_PACKAGES and self._queued_bytes < HIGH_WATER_BYTES:
            return
        conn = self._conn
        if self._gave_up or not conn.is_connected or self._engine.in_io_thread():
            return
        with self._flush_cond:
            self._drain_waiters += 1
            try:
                ok = self._flush_cond.wait_for(
                    lambda: not self._congestion_check or not conn.is_connected,
                    BACKPRESSURE_TIMEOUT,
                )
            finally:
                self._drain_waiters -= 1
        if not ok:  # the peer is stalled: stop making senders wait until it drains
            self._gave_up = True
            if self._congestion_check:
                conn.set_congested(False)
                self._congestion_check = False

    def _drop_queue(self) -> None:
        """The link is gone: forget the queue and wake flush() waiters (engine)."""
        self._enable_direct(None)
        self._outq.clear()
        with self._flush_cond:
            self._flush_cond.notify_all()

    # -- flush ---------------------------------------------------------------------

    def flush(self, timeout: float = 3.0) -> None:
        """Block until everything queued so far was handed to the OS.

        Raises:
            yoton.TimeoutError: if that takes longer than ``timeout`` seconds.
            ConnectionClosedError / BrokenConnectionError: if the connection
                closes before the data went out.
        """
        if self._conn.is_waiting:
            return
        if self._engine.in_engine_thread():
            raise RuntimeError("flush() cannot be called from the engine thread")
        # The count is exact only under the context lock (the fan-out path's
        # appends are settled there); it is held for a moment, not while waiting.
        lock_wait = -1.0 if timeout is None else max(float(timeout), 0.0)  # (None: no limit)
        if not self._context._lock.acquire(timeout=lock_wait):
            raise YotonTimeoutError(f"Flushing timed out after {timeout} s (context busy).")
        try:
            target = self._pushed_now()
        finally:
            self._context._lock.release()
        with self._flush_cond:
            self._flush_waiters += 1
            try:
                ok = self._flush_cond.wait_for(
                    lambda: self._retired() >= target or self._ended,
                    timeout,
                )
            finally:
                self._flush_waiters -= 1
        if self._ended and self._retired() < target:
            raise BrokenConnectionError(
                f"Connection closed before its data was flushed: {self._end_reason}"
            )
        if not ok:
            raise YotonTimeoutError(
                f"Sending the packages timed out after {timeout} s "
                f"({self.queued_count()} packages still queued)."
            )
        if self._ended and target == 0:
            raise ConnectionClosedError(f"Connection is closed: {self._end_reason}")


def send_package(self: StreamConnection, header: Header, payload: bytes) -> None:
    """Queue (or write) one package: :class:`StreamConnection`'s ``send_package``.

    A function the connection class takes as its method, so that the
    context's call lands here directly; ``link`` is the connection's link
    (its mangled attribute: one load more than a method of the link itself;
    an instance attribute bound to the link's method cost ~300 instructions
    per call, for the unspecialised attribute lookup).
    """
    link: StreamQueue = self._StreamConnection__link  # type: ignore[attr-defined]
    q = link._outq
    n = header[6]
    link._pushed += 1
    if n > FRAME_MAX:  # (the byte mark counts large packages only)
        link._bytes_pushed += n
    nq = len(q)
    if nq:  # the streaming case
        ctx = link._context
        if nq >= ctx._queue_n and link._discard(n):
            return
        # A small package is queued as its finished frame: packed here,
        # where its header is hot in this core's cache, the sender (often
        # on the other core) touches one object per package, not ten.
        if n <= FRAME_MAX:
            # A broadcast pushes one header object to every link, under
            # the context's lock: the frame is packed once for all of them.
            if ctx._frame_of is header:
                q.append(ctx._frame)
            else:
                frame = _pack(*header) + payload
                ctx._frame_of = header
                ctx._frame = frame
                q.append(frame)
        else:
            q.append((header, payload))
        if nq >= DIRECT_BATCH and not link._writing and link._direct_sock is not None:
            if not link._batch_blocked:  # send them ourselves (see the module docstring)
                link._write_batch()
                nq = len(q)
        if nq >= HIGH_WATER_PACKAGES or (n > 4096 or not nq & 63) and link._over_bytes():
            link._congest()
    else:
        if link._direct_sock is not None:
            # The link looks idle. Write the package ourselves, unless
            # packages come in a stream (two pushes that found the queue
            # empty in quick succession): those are for the engine to batch.
            now = _monotonic()
            last = link._last_idle_push
            quiet = now - last >= DIRECT_QUIET or link._last_rx > last
            link._last_idle_push = now
            if quiet and n <= DIRECT_MAX and link._wlock.acquire(False):
                try:
                    sock = link._direct_sock
                    if sock is not None and not link._writing and not q and link._partial is None:
                        link._write_direct(sock, header, payload)
                        return
                finally:
                    link._wlock.release()
        q.append(_pack(*header) + payload if n <= FRAME_MAX else (header, payload))
        if n > HIGH_WATER_BYTES:
            link._congest()
    # Wake the sender unless a wake-up is on its way (it may also have
    # emptied the queue and gone to sleep since len(q) was read).
    if not link._wake_pending and link._send_event is not None:
        link._wake_pending = True
        link._wake_pushed = link._pushed_now()
        if link._engine.in_engine_thread():
            link._send_event.set()
        else:
            link._engine.run_sync_soon(link._wake)
