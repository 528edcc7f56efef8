"""The in-process transport: contexts of one process connected by name.

Why a separate transport and not TCP over loopback: contexts in one process
(tests, GUIs with worker threads, plugins) should not pay for sockets,
framing and copies. An :class:`InprocConnection` hands :class:`Package`
objects to the peer context by reference: the payload bytes object that was
sent is the very object the receiver gets.

Design:

* A process-wide registry maps a name to the bound connection waiting for a
  peer. ``connect`` takes it out of the registry and pairs the two.
* ``send_package`` (any thread) appends to a list and schedules at most one
  delivery per batch in the IO engine's thread, where the peer context routes
  the whole batch. Delivery never runs in the sender's thread, so a sender
  holding its context lock never runs another context's routing, and the
  order of one connection's packages is the order they were pushed.
* Packages travel as the core passes them around: a header tuple and the
  payload object (``yoton.transport.Header``), handed to the peer with
  :meth:`Connection.deliver` as if they had been decoded from a stream, so no
  object is made per package and the payload is never copied. The outgoing
  queue is flat too (header, payload, header, payload...), already in the
  form ``deliver`` takes: a ``(header, payload)`` tuple per package was the
  one container object the path made, and with thousands of them queued the
  cyclic garbage collector cost ~15 % of the CPU per message (see
  :meth:`InprocConnection.send_package`).
* Pairing, delivery and closing all run in the engine thread, so they never
  race each other. There are no heartbeats: a peer in the same process cannot
  vanish without its connection being closed, so ``timedout`` never fires.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import random
import threading
import time
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from yoton import InvalidArgumentError
from yoton.transport import (
    ONE_PEER_HINT,
    BrokenConnectionError,
    ConnectError,
    Connection,
    ConnectionClosedError,
    Header,
    bind_port_offsets,
    engine,
    pairing_refusal,
    parse_host_port,
)
from yoton.transport import TimeoutError as YotonTimeoutError

if TYPE_CHECKING:
    from yoton.transport import Context

__all__ = ["InprocConnection", "bound_names"]

logger = logging.getLogger("yoton.inproc")

#: Packages handed to the peer context in one routing call.
MAX_BATCH = 8192
#: Outgoing-queue level above which sending threads wait for delivery.
HIGH_WATER_PACKAGES = 4096
#: How long a sending thread waits for a congested peer before it stops waiting.
BACKPRESSURE_TIMEOUT = 1.0
#: How long ``close()`` waits for the engine to finish the close.
CLOSE_WAIT = 2.0

_LENGTH_OF = itemgetter(6)  # a header's payload length

_registry: dict[str, InprocConnection] = {}
_registry_cond = threading.Condition(threading.Lock())


def bound_names() -> list[str]:
    """The names at which inproc connections of this process wait for a peer."""
    with _registry_cond:
        return sorted(_registry)


def _after_fork_in_child() -> None:
    # Names belong to the process that bound them; a child starts empty (and
    # with a fresh lock, in case another thread held it during the fork).
    global _registry_cond
    _registry.clear()
    _registry_cond = threading.Condition(threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _parse(address: str) -> tuple[str, str, int, bool]:
    """``(key, host, port, is_host_port)`` for an inproc address (scheme removed).

    ``host:port`` is parsed exactly like TCP does (so ``localhost:chat`` and
    ``127.0.0.1:<hash of chat>`` are the same place); anything without a colon
    is a plain name.
    """
    if not isinstance(address, str):
        raise InvalidArgumentError(
            f"address must be a str like 'inproc://name', got {type(address).__name__}"
        )
    if ":" in address:
        host, port = parse_host_port(address)
        return f"{host}:{port}", host, port, True
    if not address or address != address.strip():
        raise InvalidArgumentError(
            f"Invalid inproc address {address!r}: expected 'inproc://name' (a non-empty "
            "name without surrounding spaces) or 'host:port'."
        )
    return address, address, 0, False


class InprocConnection(Connection):
    """A connection to a context in the same process: ``inproc://name`` or ``host:port``.

    No socket or file descriptor is used; packages move by reference. With
    the ``host:port`` form, ``port1`` reports the port (a free one is picked
    for port 0) so programs written for TCP run unchanged.
    """

    scheme = "inproc"

    # Slots, not the instance dict: with the base class's attributes an
    # InprocConnection had 41, and from 31 on CPython (3.11) turns the
    # instance's values into a real dict, after which a method call on it
    # (``conn.send_package(...)``, the context's hot path) is no longer
    # specialized: ~250 instructions more per call (callgrind).
    __slots__ = (
        "_engine",
        "_key",
        "_peer",
        "_outq",
        "_taken_flat",
        "_taken_pos",
        "_head_lock",
        "_wake_pending",
        "_end_reason",
        "_finished",
        "_queue_limit",
        "_discard_old",
        "_crowded_at",
        "_taken",
        "_discarded",
        "_retired",
        "_cond",
        "_waiters",
        "_noted",
        "_gave_up",
    )

    def __init__(self, context: Context, name: str = "") -> None:
        super().__init__(context, name)
        self._engine = engine()
        self._key = ""
        self._peer: InprocConnection | None = None
        # Flat: header, payload, header, payload... (see send_package).
        self._outq: list[Header | bytes] = []
        # What the engine took from it and routes MAX_BATCH packages at a
        # time, from _taken_pos on (engine thread only; see _deliver_batch).
        # Like bytes a socket accepted, taken packages are past the queue
        # limit's reach; there are more than MAX_BATCH only after senders
        # stopped waiting for a stalled peer (wait_writable).
        self._taken_flat: list[Header | bytes] = []
        self._taken_pos = 0
        # Taken by whoever pops from the queue's head (the engine delivering,
        # a sender discarding the oldest package), so that a pair is never
        # split; appending (the hot path) needs no lock.
        self._head_lock = threading.Lock()
        self._wake_pending = False
        self._end_reason: str | None = None
        self._finished = False  # set_closed is done or under way
        # The context's queue_params, read when paired and once per delivered
        # batch (not per package: send_package is the hot path).
        self._queue_limit, self._discard_old = _limits(context)
        self._crowded_at = _crowded_at(self._queue_limit)
        # Packages that left the queue's head, counted under _head_lock:
        # taken by the engine (to deliver, or dropped at close) and discarded
        # by a sender at the queue limit. With what is queued they make what
        # was ever queued, so the hot path counts nothing (see flush).
        self._taken = 0
        self._discarded = 0
        # Taken packages the peer routed (or dropped): the engine thread only.
        self._retired = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._noted = False  # reported congested (set_congested)
        self._gave_up = False  # a sender waited in vain: no waiting until it drains

    # -- bind / connect ---------------------------------------------------------

    def open_bind(self, address: str, max_tries: int) -> None:
        offsets = bind_port_offsets(max_tries)
        key, host, port, host_port = _parse(address)
        with _registry_cond:
            if host_port and port == 0:
                port = _free_port(host)
                key = f"{host}:{port}"
            elif host_port and len(offsets) > 1:
                for offset in offsets:
                    if port + offset <= 65535 and f"{host}:{port + offset}" not in _registry:
                        port += offset
                        key = f"{host}:{port}"
                        break
                else:
                    raise OSError(
                        errno.EADDRINUSE,
                        f"Could not bind to any of the {len(offsets)} ports tried, "
                        f"starting with {port}.",
                    )
            if key in _registry:
                raise OSError(
                    errno.EADDRINUSE,
                    f"address in use: an inproc context is already bound at {key!r}",
                )
            _registry[key] = self
            self._key = key
            self.set_waiting(host, port)
            _registry_cond.notify_all()

    def open_connect(self, address: str, timeout: float) -> None:
        key, host, port, _ = _parse(address)
        in_engine = self._engine.in_engine_thread()  # e.g. from an IO-side hook
        timeout = 0.0 if in_engine else max(float(timeout), 0.01)
        deadline = time.monotonic() + timeout
        with _registry_cond:
            while True:
                peer = _registry.get(key)
                if peer is not None:
                    if peer.context is self.context:
                        raise ConnectError("Handshake failed (context cannot connect to self).")
                    # -- auth_key: same rule and reasons as the stream handshake
                    problem = pairing_refusal(self.context, peer.context)
                    if problem is not None:
                        self.log.warning("handshake failed at %s: %s", key, problem[1])
                        raise ConnectError(problem[0])
                    # -- end of auth_key
                    del _registry[key]
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = ", ".join(sorted(_registry)) or "none"
                    raise ConnectError(
                        f"No inproc context is bound at {key!r} (waited {timeout:g} s; "
                        f"bound names: {names}). {ONE_PEER_HINT}"
                    )
                _registry_cond.wait(remaining)
        self._key = key
        if in_engine:
            self._pair(peer, host, port)
        else:
            self._engine.run(self._pair_async, peer, host, port)

    async def _pair_async(self, peer: InprocConnection, host: str, port: int) -> None:
        self._pair(peer, host, port)

    def _pair(self, peer: InprocConnection, host: str, port: int) -> None:
        """Join ``self`` (connecting to ``host:port``) and ``peer`` (bound); engine thread."""
        if not peer.is_waiting or peer._end_reason is not None:
            raise ConnectError(f"The connection bound at {self._key!r} closed meanwhile.")
        pid = os.getpid()
        self._peer, peer._peer = peer, self
        self._set_limits()
        peer._set_limits()
        peer.set_established(self.context.id, pid, hosting=True, hostname2=peer.hostname1, port2=0)
        self.set_established(
            peer.context.id, pid, hosting=False, hostname1=host, port1=0, hostname2=host, port2=port
        )

    # -- moving packages --------------------------------------------------------

    def _set_limits(self) -> None:
        self._queue_limit, self._discard_old = _limits(self.context)
        self._crowded_at = _crowded_at(self._queue_limit)

    def send_package(self, header: Header, data: bytes) -> None:
        # Called under our context's lock (one sender at a time); the engine
        # may take from the head concurrently. The header and the payload go
        # in as two items, never as a (header, payload) tuple: that tuple is
        # a container the garbage collector tracks, and thousands of them
        # queued made its collections cost ~0.17 us per message. (The
        # header is a tuple of ints, which the collector stops tracking the
        # first time it sees it.) Below the queue limit and the high-water
        # mark -- one comparison -- this is all a package costs.
        q = self._outq
        if len(q) >= self._crowded_at:
            if not self._send_crowded(header, data):
                return
        else:
            q += (header, data)  # (one call; the tuple dies at once, unseen by the GC)
        if not self._wake_pending:
            self._wake_pending = True
            self._engine.run_sync_soon(self._deliver)

    def _send_crowded(self, header: Header, data: bytes) -> bool:
        """``send_package`` at the queue limit or the high-water mark; False: dropped."""
        q = self._outq
        if len(q) >= 2 * self._queue_limit:  # (two items a package)
            if not self._discard_old:
                self.count_dropped()
                return False
            with self._head_lock:  # (the engine may have taken the head meanwhile)
                full = len(q) >= 2 * self._queue_limit
                if full:
                    del q[:2]
                    self._discarded += 1
            if full:
                self.count_dropped()
        q += (header, data)
        if len(q) >= 2 * HIGH_WATER_PACKAGES and not (self._noted or self._gave_up):
            self.set_congested(True)  # (told first, as it is cleared: see _after_drain)
            self._noted = True
        return True

    def _deliver(self) -> None:
        """Hand one batch to the peer context (engine thread)."""
        self._wake_pending = False
        self._set_limits()
        try:
            self._deliver_batch()
        except Exception as exc:  # a routing bug must not kill the engine
            logger.exception("inproc delivery failed on %r", self)
            self._end_reason = self._end_reason or f"Error while delivering packages: {exc!r}"
            self._close_in_engine(notify_peer=False)
            return
        if self._has_work() and not self._wake_pending:
            self._wake_pending = True
            self._engine.run_sync_soon(self._deliver)

    def _has_work(self) -> bool:
        """A whole package is queued, or taken and not routed yet."""
        return len(self._outq) >= 2 or self._taken_pos < len(self._taken_flat)

    def _deliver_batch(self) -> None:
        """Route the next (at most MAX_BATCH) packages in the peer context."""
        if not self._has_work():  # (or a header whose payload is on its way)
            return
        peer = self._peer
        if peer is None or self._finished or peer._finished:
            self._drop_queue()
            return
        flat = self._taken_flat
        pos = self._taken_pos
        if pos >= len(flat):  # take every whole package queued
            q = self._outq
            with self._head_lock:
                # Two steps in C, a copy and a cut of the head, ~20 ns a
                # package less than two deque.popleft() calls. Senders only
                # append meanwhile, and taking all leaves little to move.
                m = len(q) & ~1  # (a sender may be between header and payload)
                flat = q[:m]
                del q[:m]
                self._taken += m >> 1
            pos = 0
        end = pos + 2 * MAX_BATCH
        if pos == 0 and len(flat) <= end:  # all of it (the usual case): no copy
            batch: list[Any] = flat
            self._taken_flat, self._taken_pos = [], 0
        else:
            batch = flat[pos:end]
            self._taken_flat, self._taken_pos = flat, end
            if end >= len(flat):
                self._taken_flat, self._taken_pos = [], 0
        n = len(batch) >> 1
        nbytes = sum(map(_LENGTH_OF, batch[0::2]))
        try:
            peer.deliver(batch)
        finally:
            self.count_sent(n, nbytes)
            peer.count_received(n, nbytes)
            self._retired += n
            self._after_drain()

    def _after_drain(self) -> None:
        if len(self._outq) <= HIGH_WATER_PACKAGES:  # (half the mark: two items a package)
            self._gave_up = False
            if self._noted:
                self.set_congested(False)  # (told first: a sender may report again)
                self._noted = False
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def _drop_queue(self) -> None:
        with self._head_lock:
            n = len(self._outq) >> 1
            del self._outq[: 2 * n]
            self._taken += n
        n += (len(self._taken_flat) - self._taken_pos) >> 1
        self._taken_flat, self._taken_pos = [], 0
        self._retired += n
        if self._noted:
            self.set_congested(False)
            self._noted = False
        with self._cond:
            self._cond.notify_all()

    def queued_count(self) -> int:
        return (len(self._outq) + len(self._taken_flat) - self._taken_pos) >> 1

    def wait_writable(self) -> None:
        q = self._outq
        if len(q) < 2 * HIGH_WATER_PACKAGES or self._gave_up:
            return
        if not self.is_connected or self._engine.in_io_thread():
            return
        ok = self._wait(lambda: not self._noted or not self.is_connected, BACKPRESSURE_TIMEOUT)
        if not ok:  # the peer is stalled: stop making senders wait until it drains
            self._gave_up = True
            if self._noted:
                self.set_congested(False)  # (told first: a sender may report again)
                self._noted = False

    def _wait(self, predicate: object, timeout: float | None) -> bool:
        with self._cond:
            self._waiters += 1
            try:
                return self._cond.wait_for(predicate, timeout)  # type: ignore[arg-type]
            finally:
                self._waiters -= 1

    # -- flush and close --------------------------------------------------------

    def flush(self, timeout: float = 3.0) -> None:
        """Block until the peer context has routed everything queued so far.

        Raises:
            yoton.TimeoutError: if that takes longer than ``timeout`` seconds.
            ConnectionClosedError / BrokenConnectionError: if the connection
                closes before the packages were delivered.
        """
        if self.is_waiting:
            return
        if self._engine.in_engine_thread():
            raise RuntimeError("flush() cannot be called from the engine thread")
        with self._head_lock:  # everything queued so far (nothing in between)
            target = self._taken + self._discarded + (len(self._outq) >> 1)
        ok = self._wait(lambda: self._done() >= target or self._finished, timeout)
        closed = self._finished
        if closed and self._done() < target:
            raise BrokenConnectionError(
                f"Connection closed before its data was delivered: {self._end_reason}"
            )
        if not ok:
            raise YotonTimeoutError(
                f"Delivering the packages timed out after {timeout} s "
                f"({len(self._outq) >> 1} packages still queued)."
            )
        if closed and target == 0:
            raise ConnectionClosedError(f"Connection is closed: {self._end_reason}")

    def _done(self) -> int:
        """Packages no longer queued: delivered, dropped or discarded."""
        return self._retired + self._discarded

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        if self._end_reason is None:
            self._end_reason = reason
        if self._engine.in_engine_thread():
            self._close_in_engine(notify_peer)
        else:
            self._engine.run_sync_soon(self._close_in_engine, notify_peer)
            self.wait_closed(CLOSE_WAIT)

    def _close_in_engine(self, notify_peer: bool) -> None:
        if self._finished:
            return
        reason = self._end_reason or "Closed on command."
        peer = self._peer
        if peer is None:
            with _registry_cond:
                if _registry.get(self._key) is self:
                    del _registry[self._key]
            self._finish(reason)
            return
        if notify_peer:
            # A graceful close delivers what is queued, then tells the peer.
            try:
                while self._has_work() and not peer._finished:
                    self._deliver_batch()
            except Exception:  # never let a routing bug escape into the engine
                logger.exception("inproc delivery failed while closing %r", self)
        self._finish(reason)
        if notify_peer:
            peer._finish("Closed from other end.")
        else:
            peer._finish("Other end dropped the connection.")

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        if self._end_reason is None:
            self._end_reason = reason
        self._drop_queue()
        self.set_closed(reason)


def _limits(context: Context) -> tuple[int, bool]:
    """``(queue size, discard the oldest)`` from the context's ``queue_params``."""
    n, mode = context.queue_params
    return n, mode == "old"


def _crowded_at(queue_limit: int) -> int:
    """The queue length (two items a package) from which ``send_package`` looks closer."""
    return 2 * min(queue_limit, HIGH_WATER_PACKAGES)


def _free_port(host: str) -> int:
    """A port number not bound for ``host`` (caller holds the registry lock)."""
    start = random.randrange(49152, 65536)
    for port in itertools.chain(range(start, 65536), range(1024, start)):
        if f"{host}:{port}" not in _registry:
            return port
    raise OSError(errno.EADDRINUSE, f"every inproc port of host {host!r} is bound")
