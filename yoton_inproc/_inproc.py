"""The in-process transport: contexts of one process connected by name.

Why a separate transport and not TCP over loopback: contexts in one process
(tests, GUIs with worker threads, plugins) should not pay for sockets,
framing and copies. An :class:`InprocConnection` hands :class:`Package`
objects to the peer context by reference: the payload bytes object that was
sent is the very object the receiver gets.

Design:

* A process-wide registry maps a name to the bound connection waiting for a
  peer. ``connect`` takes it out of the registry and pairs the two.
* ``_push`` (any thread) appends to a deque and schedules at most one
  delivery per batch in the IO engine's thread, where the peer context routes
  the whole batch. Delivery never runs in the sender's thread, so a sender
  holding its context lock never runs another context's routing, and the
  order of one connection's packages is the order they were pushed.
* Packages travel as the core passes them around: a header tuple and the
  payload object (``_wire.Header``), routed by the peer context with
  :meth:`Context._route` as if they had been decoded from a stream, so no
  object is made per package and the payload is never copied.
* Pairing, delivery and closing all run in the engine thread, so they never
  race each other. There are no heartbeats: a peer in the same process cannot
  vanish without its connection being closed, so ``timedout`` never fires.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING

from yoton_core import (
    BrokenConnectionError,
    ConnectError,
    Connection,
    ConnectionClosedError,
    InvalidArgumentError,
    Package,
)
from yoton_core import TimeoutError as YotonTimeoutError
from yoton_core._address import bind_port_offsets, parse_host_port
from yoton_core._auth import pairing_problem
from yoton_core._connection import (
    ONE_PEER_HINT,
    STATUS_CONNECTED,
    STATUS_HOSTING,
    STATUS_WAITING,
)
from yoton_core._engine import get_engine
from yoton_core._wire import Header, package_header

if TYPE_CHECKING:
    from yoton_core import Context

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

    def __init__(self, context: Context, name: str = "") -> None:
        super().__init__(context, name)
        self._engine = get_engine()
        self._key = ""
        self._peer: InprocConnection | None = None
        self._outq: collections.deque[tuple[Header, bytes]] = collections.deque()
        self._wake_pending = False
        self._end_reason: str | None = None
        # Counted on the sending side (always under our context's lock) ...
        self._pushed = 0
        self._discarded = 0
        # ... and in the engine thread only, so no update is ever lost.
        self._retired = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._congested = False

    # -- bind / connect ---------------------------------------------------------

    def _bind(self, address: str, max_tries: int) -> None:
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
            self._hostname1, self._port1 = host, port
            self._status = STATUS_WAITING
            _registry_cond.notify_all()

    def _connect(self, address: str, timeout: float) -> None:
        key, host, port, _ = _parse(address)
        self._hostname2, self._port2 = host, port
        in_engine = self._engine.in_engine_thread()  # e.g. from an IO-side hook
        timeout = 0.0 if in_engine else max(float(timeout), 0.01)
        deadline = time.monotonic() + timeout
        with _registry_cond:
            while True:
                peer = _registry.get(key)
                if peer is not None:
                    if peer._context is self._context:
                        raise ConnectError("Handshake failed (context cannot connect to self).")
                    # -- auth_key: same rule and reasons as the stream handshake (_auth.py)
                    problem = pairing_problem(self._context._auth_key, peer._context._auth_key)
                    if problem is not None:
                        self._log.warning("handshake failed at %s: %s", key, problem[1])
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
            self._pair(peer)
        else:
            self._engine.run(self._pair_async, peer)

    async def _pair_async(self, peer: InprocConnection) -> None:
        self._pair(peer)

    def _pair(self, peer: InprocConnection) -> None:
        """Join ``self`` (connecting) and ``peer`` (bound); engine thread."""
        if peer._status != STATUS_WAITING or peer._end_reason is not None:
            raise ConnectError(f"The connection bound at {self._key!r} closed meanwhile.")
        pid = os.getpid()
        self._peer, peer._peer = peer, self
        self._id2, self._pid2 = peer._context.id, pid
        peer._id2, peer._pid2 = self._context.id, pid
        self._hostname1, self._port1 = self._hostname2, 0
        peer._hostname2, peer._port2 = peer._hostname1, 0
        peer._status = STATUS_HOSTING
        self._status = STATUS_CONNECTED
        peer._context._connection_established(peer)
        self._context._connection_established(self)

    # -- moving packages --------------------------------------------------------

    def _push(self, package: Package) -> None:
        self._push_raw(package_header(package), package.data)

    def _push_raw(self, header: Header, data: bytes) -> None:
        # Called under our context's lock; the engine may pop concurrently.
        q = self._outq
        if len(q) >= self._context._queue_n:
            self._n_dropped += 1
            if not self._context._queue_discard_old:
                return
            try:
                q.popleft()
                self._discarded += 1
            except IndexError:  # the engine just emptied it
                pass
        q.append((header, data))
        self._pushed += 1
        if len(q) >= HIGH_WATER_PACKAGES:
            self._note_congestion()
        if not self._wake_pending:
            self._wake_pending = True
            self._engine.run_sync_soon(self._deliver)

    def _deliver(self) -> None:
        """Hand one batch to the peer context (engine thread)."""
        self._wake_pending = False
        try:
            self._deliver_batch()
        except Exception as exc:  # a routing bug must not kill the engine
            logger.exception("inproc delivery failed on %r", self)
            self._end_reason = self._end_reason or f"Error while delivering packages: {exc!r}"
            self._close_in_engine(notify_peer=False)
            return
        if self._outq and not self._wake_pending:
            self._wake_pending = True
            self._engine.run_sync_soon(self._deliver)

    def _deliver_batch(self) -> None:
        q = self._outq
        if not q:
            return
        peer = self._peer
        if peer is None or self._closed_event.is_set() or peer._closed_event.is_set():
            self._drop_queue()
            return
        pop = q.popleft
        flat: list[object] = []
        append = flat.append
        nbytes = 0
        for _ in range(min(len(q), MAX_BATCH)):
            header, data = pop()
            nbytes += header[6]
            append(header)
            append(data)
        n = len(flat) >> 1
        try:
            peer._context._route(peer, flat)
        finally:
            self._n_sent += n
            self._b_sent += nbytes
            peer._n_recv += n
            peer._b_recv += nbytes
            self._retired += n
            self._after_drain()

    def _after_drain(self) -> None:
        if len(self._outq) <= HIGH_WATER_PACKAGES // 2:
            self._congestion_check = False
            self._congested = False
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def _drop_queue(self) -> None:
        n = len(self._outq)
        self._outq.clear()
        self._retired += n
        self._congestion_check = False
        with self._cond:
            self._cond.notify_all()

    def _queued_count(self) -> int:
        return len(self._outq)

    def _wait_writable(self) -> None:
        q = self._outq
        if len(q) < HIGH_WATER_PACKAGES or self._congested:
            return
        if self._status < STATUS_HOSTING or self._engine.in_io_thread():
            return
        ok = self._wait(
            lambda: not self._congestion_check or self._status < STATUS_HOSTING,
            BACKPRESSURE_TIMEOUT,
        )
        if not ok:
            self._congested = True

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
        if self._status == STATUS_WAITING:
            return
        if self._engine.in_engine_thread():
            raise RuntimeError("flush() cannot be called from the engine thread")
        target = self._pushed
        ok = self._wait(lambda: self._done() >= target or self._closed_event.is_set(), timeout)
        closed = self._closed_event.is_set()
        if closed and self._done() < target:
            raise BrokenConnectionError(
                f"Connection closed before its data was delivered: {self._close_reason}"
            )
        if not ok:
            raise YotonTimeoutError(
                f"Delivering the packages timed out after {timeout} s "
                f"({len(self._outq)} packages still queued)."
            )
        if closed and target == 0:
            raise ConnectionClosedError(f"Connection is closed: {self._close_reason}")

    def _done(self) -> int:
        """Packages no longer queued: delivered, dropped or discarded."""
        return self._retired + self._discarded

    def _request_close(self, reason: str, notify_peer: bool) -> None:
        if self._end_reason is None:
            self._end_reason = reason
        if self._engine.in_engine_thread():
            self._close_in_engine(notify_peer)
        else:
            self._engine.run_sync_soon(self._close_in_engine, notify_peer)
            self._closed_event.wait(CLOSE_WAIT)

    def _close_in_engine(self, notify_peer: bool) -> None:
        if self._closed_event.is_set():
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
                while self._outq and not peer._closed_event.is_set():
                    self._deliver_batch()
            except Exception:  # never let a routing bug escape into the engine
                logger.exception("inproc delivery failed while closing %r", self)
        self._finish(reason)
        if notify_peer:
            peer._finish("Closed from other end.")
        else:
            peer._finish("Other end dropped the connection.")

    def _finish(self, reason: str) -> None:
        if self._closed_event.is_set():
            return
        if self._end_reason is None:
            self._end_reason = reason
        self._drop_queue()
        self._set_closed(reason)


def _free_port(host: str) -> int:
    """A port number not bound for ``host`` (caller holds the registry lock)."""
    start = random.randrange(49152, 65536)
    for port in itertools.chain(range(start, 65536), range(1024, start)):
        if f"{host}:{port}" not in _registry:
            return port
    raise OSError(errno.EADDRINUSE, f"every inproc port of host {host!r} is bound")
