"""ReqChannel: the requester side of request/reply.

Requests are made in user threads; everything after that runs on the IO side:
acknowledgements, replies and liveness answers are handled in the engine
thread as they arrive (completing Futures there), and resends, auto-cancel and
liveness checks run from an engine ticker. No user thread polls, and no event
is posted unless the user bound a callback. The protocol, including the direct
path between two new-style ends, is described in :mod:`yoton_core._reqrep_wire`.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from typing import Any

from ._block import check_timeout
from ._channels import BaseChannel
from ._engine import get_engine
from ._errors import BrokenConnectionError, ConnectionClosedError, InvalidArgumentError
from ._future import CANCELLED, FAILED, RUNNING, SUCCEEDED, Future
from ._log import get_logger
from ._message_types import OBJECT, encode_object
from ._reqrep_wire import (
    NEW_STYLE,
    REF,
    REP_GONE,
    REQ_ACK,
    REQ_ACK_NEW,
    REQ_ALIVE,
    REQ_DECLINE,
    REQ_DIRECT,
    REQ_OFFER,
    REQ_PING,
    REQ_RELEASE,
    REQ_UNKNOWN,
    decode_reply,
)
from ._wire import Package

__all__ = ["ReqChannel"]

logger = get_logger("reqrep")

#: Resend ``req?`` this often while no replier took the request (2.x).
RESEND_INTERVAL = 0.5
#: A direct offer with no answer for this long: the replier is gone.
DIRECT_ACK_TIMEOUT = 2.0
#: After a decline, do not offer directly to that replier for this long.
DECLINE_BACKOFF = 0.05
#: Ask a new-style replier about a running request after this much silence...
PING_INTERVAL = 2.0
#: ...and fail the request after this much silence.
PING_TIMEOUT = 10.0

#: Remote methods remembered per channel (so ``req.name`` is a plain lookup).
_MAX_CACHED_METHODS = 256

SEEKING = 0  # looking for a replier (Future pending)
OFFERED = 1  # sent directly to a replier, no word back yet (Future running)
ASSIGNED = 2  # a replier has it (Future running)


class _Item:
    """A request in flight (guarded by the channel lock)."""

    __slots__ = (
        "rid",
        "future",
        "payload",
        "name",
        "state",
        "start",
        "last_send",
        "replier",
        "replier_new",
        "offered_at",
        "last_contact",
        "ping_at",
    )

    def __init__(
        self, rid: int, future: Future, payload: bytes, name: str, now: float, target: int
    ) -> None:
        self.rid = rid
        self.future = future
        self.payload = payload
        self.name = name
        self.state = OFFERED if target else SEEKING
        self.start = now
        self.last_send = now
        self.replier = target
        self.replier_new = bool(target)
        self.offered_at = now if target else 0.0
        self.last_contact = now
        self.ping_at = 0.0


class _RemoteMethod:
    """``req.name``: calling it makes the request and returns a Future."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: ReqChannel, name: str) -> None:
        self._channel = channel
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Future:
        return self._channel._request(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name!r} of {self._channel!r}>"


#: (payload, dest_id, dest_seq) packages to send once the lock is released.
_Out = list[tuple[bytes, int, int]]
#: (future, state, result, exception) completions to apply once the lock is released.
_Finish = list[tuple[Future, int, Any, "BaseException | None"]]


class ReqChannel(BaseChannel):
    """Makes remote calls to the RepChannels on the same slot.

    Any public attribute that is not a real attribute of the channel is a
    remote method: ``req.add(1, 2)`` sends the request and returns a
    :class:`Future` at once. Arguments and results must be OBJECT types (None,
    bool, int, float, str, list, tuple, dict). When several repliers exist,
    each request goes to one free replier (load balancing). The channel's own
    attributes (``close``, ``pending``, ``direct_path``...) are not remote
    methods.

    Futures are completed by yoton's IO side: nobody has to poll or run an
    event loop for a reply to arrive (only done-callbacks need the loop).
    Between two contexts of this project a call takes two one-way trips (2.x
    peers: four); see docs/protocol.md#request-reply.

    Args:
        context: The context to send the requests from.
        slot_base: The slot name shared with the RepChannels (case-insensitive).
        default_future_timeout: Auto-cancel timeout (seconds) of new Futures:
            a request no replier takes within it is cancelled. None: never.
    """

    _pattern_out = "req-rep"
    _user_typed = False
    _pattern_in = "rep-req"

    direct_path = True
    """Send requests straight to repliers of this project (two trips, not four).

    A class-level switch, mainly for tests and benchmarks of the 2.x path
    between our own ends; leave it on.
    """

    def __init__(
        self, context: Any, slot_base: str, default_future_timeout: float | None = 10.0
    ) -> None:
        seconds = check_timeout(
            default_future_timeout, "ReqChannel() default_future_timeout", none=True, above=True
        )
        self._default_future_timeout = math.inf if seconds is None else seconds
        self._lock = threading.Lock()
        self._items: dict[int, _Item] = {}
        self._counter = itertools.count(1)
        self._incoming: deque[Package] = deque()
        self._fast: dict[int, float] = {}  # new-style replier id -> no direct offer before
        self._ticking = False
        self._n_cached = 0
        super().__init__(context, slot_base, OBJECT)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = _RemoteMethod(self, name)
        if self._n_cached < _MAX_CACHED_METHODS:  # later lookups skip __getattr__
            self._n_cached += 1
            self.__dict__[name] = method
        return method

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._items)} requests in flight"
        return f"<ReqChannel {self._slot_base!r} {state}>"

    # -- making requests (user threads) --------------------------------------------

    def _request(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future:
        if self._closed:
            raise self._closed_error("Cannot send a request")
        request = (name, tuple(args), dict(kwargs))
        try:
            payload = encode_object(request)
        except ValueError as exc:
            raise InvalidArgumentError(f"the arguments of {name}() cannot be sent: {exc}") from None
        if len(payload) + len(REQ_DIRECT) > self._max_message_size:
            raise InvalidArgumentError(
                f"the request {name}() is {len(payload)} bytes, more than the maximum message "
                f"size of {self._max_message_size} bytes (Context(max_message_size=...))"
            )
        now = time.monotonic()
        with self._lock:
            rid = NEW_STYLE | next(self._counter)
            future = Future(self, request, rid)
            target = self._pick_direct(now) if self._fast and self.direct_path else 0
            if target:  # straight to a known free replier: running at once
                future._status = RUNNING  # (nobody else sees the Future yet)
                future._replier_id = target
            self._items[rid] = _Item(rid, future, payload, name, now, target)
            start_ticking = not self._ticking
            self._ticking = True
        if start_ticking:
            get_engine().add_ticker(self._tick)
        if target:
            self._send_raw(REQ_DIRECT + payload, target, REF + rid)
        else:
            self._send_raw(REQ_OFFER, 0, REF + rid)
        return future

    def _pick_direct(self, now: float) -> int:
        """A known new-style replier with none of our requests in flight, or 0."""
        if not self._fast:
            return 0
        items = self._items
        busy = {it.replier for it in items.values() if it.state != SEEKING} if items else ()
        for replier, not_before in self._fast.items():
            if now >= not_before and replier not in busy:
                # Rotate, so that several free repliers share the work.
                del self._fast[replier]
                self._fast[replier] = not_before
                return replier
        return 0

    def _dispatch(self, out: _Out, finish: _Finish) -> None:
        for data, dest_id, dest_seq in out:
            self._send_raw(data, dest_id, dest_seq)
        for future, state, result, exc in finish:
            future._finish(state, result, exc, only_pending=state == CANCELLED)

    def _future_cancelled(self, future: Future) -> None:
        """Future.cancel() took effect: release the repliers that queued it."""
        with self._lock:
            item = self._items.pop(future._request_id, None)
        if item is not None:
            self._send_raw(REQ_RELEASE, 0, REF + item.rid)

    # -- receiving (engine thread, or the sender's thread for local delivery) ------

    def _deposit(self, pkg: Package) -> None:
        # Under the context lock: only queue it; _on_deposit does the work.
        self._incoming.append(pkg)

    def _notify(self) -> None:
        # Nobody waits on a ReqChannel's inbox: handle what came, and emit
        # ``received`` if someone bound it.
        self._on_deposit()
        if self.received._handlers:
            BaseChannel._notify_received(self)

    def _on_deposit(self) -> None:
        out: _Out = []
        finish: _Finish = []
        incoming = self._incoming
        items = self._items
        with self._lock:
            while incoming:
                try:
                    pkg = incoming.popleft()
                except IndexError:
                    break
                if not pkg.dest_id:
                    continue  # a broadcast (another requester's req?/req-): not for us
                seq = pkg.dest_seq
                if seq >= REF or not seq:
                    self._handle_control(pkg, out, finish)
                    continue
                # A reply (the common case, handled inline).
                item = items.get(seq)
                if item is None:
                    continue  # a late reply (cancelled, failed or unknown request)
                src = pkg.source_id
                if item.replier != src:
                    if item.state != SEEKING:
                        continue  # not from the replier that has it
                    # From a direct replier we gave up on too early: the reply
                    # is good; release whoever queued the request since.
                    out.append((REQ_RELEASE, 0, REF + seq))
                del items[seq]
                ok, value = decode_reply(pkg.data, item.replier_new, src)
                if ok:
                    finish.append((item.future, SUCCEEDED, value, None))
                else:
                    finish.append((item.future, FAILED, None, value))
        if out:
            self._dispatch(out, finish)
        elif finish:
            for future, state, result, exc in finish:
                future._finish(state, result, exc)

    def _handle_control(self, pkg: Package, out: _Out, finish: _Finish) -> None:
        src = pkg.source_id
        seq = pkg.dest_seq
        data = pkg.data
        if seq < REF:
            return  # dest_seq 0: not part of the protocol
        now = time.monotonic()
        rid = seq - REF  # (REP_GONE uses REF itself: it is about no request)
        item = self._items.get(rid)
        if data == REQ_ACK or data == REQ_ACK_NEW:
            self._on_ack(item, rid, src, data == REQ_ACK_NEW, now, out, finish)
        elif data == REQ_DECLINE:
            if item is not None and item.state == OFFERED and item.replier == src:
                self._fast[src] = now + DECLINE_BACKOFF
                self._back_to_broadcast(item, now, out)
        elif data == REQ_ALIVE:
            if item is not None and item.replier == src:
                item.last_contact = now
        elif data == REQ_UNKNOWN:
            if item is not None and item.replier == src and item.state != SEEKING:
                del self._items[rid]
                err = BrokenConnectionError(
                    f"The replier {src:#x} lost {item.name}() (request {rid:#x}): its "
                    "RepChannel was closed or restarted while the request was running."
                )
                finish.append((item.future, FAILED, None, err))
        elif data == REP_GONE:
            self._fast.pop(src, None)

    def _on_ack(
        self,
        item: _Item | None,
        rid: int,
        src: int,
        new: bool,
        now: float,
        out: _Out,
        finish: _Finish,
    ) -> None:
        if item is None:
            # Unknown or finished request (e.g. a stale req? that waited in the
            # start-up queue): release the replier now, not after its failsafe.
            out.append((REQ_RELEASE, src, REF + rid))
            return
        if item.state == SEEKING:
            if not item.future.set_running_or_notify_cancel():
                del self._items[rid]
                out.append((REQ_RELEASE, src, REF + rid))
                return
            item.state = ASSIGNED
            item.replier = src
            item.replier_new = new
            item.last_contact = now
            item.future._replier_id = src
            if new and self.direct_path:
                self._fast.setdefault(src, 0.0)
            out.append((item.payload, src, rid))
            out.append((REQ_RELEASE, 0, REF + rid))
        elif item.replier == src:
            item.state = ASSIGNED  # "running" notice of a direct request
            item.last_contact = now
        else:
            out.append((REQ_RELEASE, src, REF + rid))

    def _back_to_broadcast(self, item: _Item, now: float, out: _Out) -> None:
        if item.future._revert_to_pending():
            item.state = SEEKING
            item.replier = 0
            item.replier_new = False
            item.future._replier_id = 0
            item.last_send = now
            out.append((REQ_OFFER, 0, REF + item.rid))

    # -- timers (engine ticker) ---------------------------------------------------

    def _tick(self, _now: float) -> None:
        if not self._items:
            with self._lock:
                if not self._items:  # nothing to time until the next request (_request)
                    self._ticking = False
                    get_engine().remove_ticker(self._tick)
                    return
        now = time.monotonic()
        ctx = self._context
        can_resend = bool(ctx.connection_count) or self._slot_out in ctx._recv_channels
        out: _Out = []
        finish: _Finish = []
        with self._lock:
            for rid, item in list(self._items.items()):
                future = item.future
                if future._status >= CANCELLED:
                    del self._items[rid]
                elif item.state == SEEKING:
                    if now - item.start >= future._auto_cancel_timeout:
                        del self._items[rid]
                        finish.append((future, CANCELLED, None, None))
                        out.append((REQ_RELEASE, 0, REF + rid))
                    elif now - item.last_send >= RESEND_INTERVAL and can_resend:
                        item.last_send = now
                        out.append((REQ_OFFER, 0, REF + rid))
                elif item.state == OFFERED:
                    if now - item.offered_at >= DIRECT_ACK_TIMEOUT:
                        logger.info(
                            "replier %#x did not answer a direct request; asking all repliers",
                            item.replier,
                        )
                        self._fast.pop(item.replier, None)
                        self._back_to_broadcast(item, now, out)
                elif item.replier_new:
                    silent = now - item.last_contact
                    if silent >= PING_TIMEOUT:
                        del self._items[rid]
                        err = BrokenConnectionError(
                            f"The replier {item.replier:#x} handling {item.name}() stopped "
                            f"answering (silent for {silent:.1f} s)."
                        )
                        finish.append((future, FAILED, None, err))
                    elif silent >= PING_INTERVAL and now - item.ping_at >= PING_INTERVAL:
                        item.ping_at = now
                        out.append((REQ_PING, item.replier, REF + rid))
        if out or finish:
            self._dispatch(out, finish)

    # -- connections and closing ---------------------------------------------------

    def _on_connection_closed(self, conn: Any) -> None:
        """A connection of our context closed: fail requests its peer was running."""
        peer = conn.id2
        if not peer or self._linked_to(peer, excluding=conn):
            return
        finish: _Finish = []
        with self._lock:
            self._fast.pop(peer, None)
            for rid, item in list(self._items.items()):
                if item.replier == peer and item.state != SEEKING:
                    del self._items[rid]
                    err = BrokenConnectionError(
                        f"The replier {peer:#x} handling {item.name}() went away: its "
                        f"connection closed ({conn.close_reason})."
                    )
                    finish.append((item.future, FAILED, None, err))
        self._dispatch([], finish)

    def _on_close(self) -> None:
        get_engine().remove_ticker(self._tick)
        out: _Out = []
        finish: _Finish = []
        with self._lock:
            items, self._items = self._items, {}
            for rid, item in items.items():
                if item.state == SEEKING:
                    out.append((REQ_RELEASE, 0, REF + rid))
                    finish.append((item.future, CANCELLED, None, None))
                else:
                    err = ConnectionClosedError(
                        f"The ReqChannel was closed while {item.name}() was running."
                    )
                    finish.append((item.future, FAILED, None, err))
        self._dispatch(out, finish)
        super()._on_close()
