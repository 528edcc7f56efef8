"""RepChannel: the replier side of request/reply.

Protocol work (queueing pre-requests, acknowledging, accepting or declining
direct requests, answering liveness checks) runs on the IO side, in the engine
thread, as packages arrive; only the user's handler methods run in the mode's
thread: the event loop (mode ``event``) or a worker thread (mode ``thread``).
The protocol itself is described in :mod:`yoton_core._reqrep_wire`.

Compared with 2.x (docs/protocol.md#differences-from-2x, items 9, 10, 11, 13): only the
public methods of the subclass (and ``echo``) can be called remotely; every
request gets a reply, also when the result cannot be encoded; requests are
served first come, first served (a resent ``req?`` keeps its place); a
``req-`` or an actual request only clears the pre-request it belongs to; and
the modes can be switched back and forth any number of times.
"""

from __future__ import annotations

import reprlib
import threading
import time
from collections import deque
from typing import Any

from ._borrow import borrow_wait
from ._channels import BaseChannel
from ._compat2x import RepChannel2x
from ._engine import get_engine
from ._errors import ConnectionClosedError, InvalidArgumentError
from ._eventloop import post_event
from ._log import get_logger
from ._machinery import refuse_clashes
from ._message_types import OBJECT, decode_object, encode_object
from ._reqrep_wire import (
    DIRECT_ACK_DELAY,
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
    encode_error,
)
from ._wire import Package

__all__ = ["RepChannel"]

logger = get_logger("reqrep")

MODE_OFF = 0
MODE_EVENT = 1
MODE_THREAD = 2
_MODES = {
    "off": MODE_OFF,
    "event": MODE_EVENT,
    "event-driven": MODE_EVENT,
    "thread": MODE_THREAD,
    "thread-driven": MODE_THREAD,
}
_MODE_NAMES = {MODE_OFF: "off", MODE_EVENT: "event", MODE_THREAD: "thread"}

#: Forget an acknowledged pre-request whose requester stays silent this long (2.x).
PRE_REQUEST_FAILSAFE = 10.0
#: The same for new-style requesters, which answer from their IO thread at once
#: and resend ``req?`` every 0.5 s while waiting: a queued pre-request not
#: refreshed for this long, or an acknowledgement not answered, is from a
#: requester that went away (e.g. behind a relay), and must not hold up others.
NEW_STYLE_STALE = 2.0
#: How many new-style requesters to tell when the channel closes.
MAX_KNOWN_REQUESTERS = 256

_Key = tuple[int, int]  # (requester context id, request id)
_Out = list[tuple[bytes, int, int]]


class _Work:
    """An actual request to run (guarded by the channel lock)."""

    __slots__ = ("requester", "rid", "payload", "direct", "accepted", "acked")

    def __init__(self, requester: int, rid: int, payload: bytes, direct: bool, now: float):
        self.requester = requester
        self.rid = rid
        self.payload = payload
        self.direct = direct
        self.accepted = now
        self.acked = not direct

    @property
    def new_style(self) -> bool:
        return bool(self.rid & NEW_STYLE)


#: Names of RepChannel a subclass may define itself (see __init_subclass__).
_OVERRIDABLE = frozenset({"echo", "close"})


class RepChannel(RepChannel2x, BaseChannel):
    """Answers the requests of ReqChannels on the same slot.

    Subclass it and add methods; each public method of the subclass can be
    called remotely, plus the built-in :meth:`echo`::

        class Calc(yoton.RepChannel):
            def add(self, a, b):
                return a + b

        Calc(ctx, "calc").set_mode("thread")

    Private names and the channel's own machinery (``close``, ``set_mode``,
    ...) are refused with a ``PermissionError`` at the requester; a subclass
    that defines a method named like the machinery (other than ``echo`` and
    ``close``) is refused with a ``TypeError`` when the class is made.
    Arguments and results are OBJECT types. An exception in a handler goes
    back to the requester (as :class:`RemoteError`, also of the builtin type);
    so does a result that cannot be encoded (as a ``TypeError``).

    The channel starts in mode ``off``; call :meth:`set_mode` with ``"event"``
    (handlers run in the yoton event loop) or ``"thread"`` (handlers run in a
    worker thread of this channel). A replier runs one request at a time and
    takes a new one only when free, which is how several repliers on one slot
    share the load.

    Args:
        context: The context to serve from.
        slot_base: The slot name shared with the ReqChannels (case-insensitive).
    """

    _pattern_out = "rep-req"
    _user_typed = False
    _pattern_in = "req-rep"

    def __init__(self, context: Any, slot_base: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._mode = MODE_OFF
        self._mode_gen = 0
        self._pre: dict[_Key, float] = {}  # queued pre-requests, in arrival order
        self._current: _Key | None = None  # the pre-request we acknowledged
        self._current_since = 0.0
        self._work: deque[_Work] = deque()
        self._running: list[_Work] = []
        self._work_keys: set[_Key] = set()
        self._event_posted = False
        self._incoming: deque[Package] = deque()
        self._requesters: dict[int, None] = {}  # new-style requesters (ordered, bounded)
        self._served = self._served_names()
        self._ticking = False
        self._sleeping = 0  # workers waiting on the condition (not borrowing)
        super().__init__(context, slot_base, OBJECT)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass that would replace the channel's own machinery.

        A handler called ``pending`` or ``_deposit`` would not be served (it is
        machinery, see :meth:`_resolve`) and would silently break the channel
        that calls it; and ``self._queue = []`` or ``self._cond = ...`` in a
        subclass would replace the state the channel's threads use, so that
        requests hang with no error anywhere (:mod:`._machinery` says how both
        are found). Say so when the class is defined instead. ``echo``
        and ``close`` may be overridden (``close`` must call ``super().close()``).
        """
        super().__init_subclass__(**kwargs)
        refuse_clashes(cls, RepChannel, _OVERRIDABLE)

    @classmethod
    def _served_names(cls) -> frozenset[str]:
        """Public methods defined by subclasses, plus ``echo``."""
        names = {"echo"}
        machinery = set(dir(RepChannel))
        for klass in cls.__mro__:
            if klass is RepChannel:
                break
            for name, value in vars(klass).items():
                if name.startswith("_") or name in machinery:
                    continue
                if callable(value) or isinstance(value, (staticmethod, classmethod)):
                    names.add(name)
        return frozenset(names)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"mode {_MODE_NAMES[self._mode]}"
        return f"<{type(self).__name__} {self._slot_base!r} {state}>"

    # -- the built-in method ------------------------------------------------------

    def echo(self, arg1: Any, sleep: float = 0.0) -> tuple[Any, str]:
        """Return ``(arg1, hex(context id))`` after sleeping ``sleep`` seconds.

        Every replier has it (2.x's too): ``req.echo("hi").result()`` checks
        that a replier is there and which context answers, and ``sleep`` makes
        a slow request for trying out load balancing and timeouts.
        """
        if sleep:
            time.sleep(float(sleep))
        return (arg1, hex(self._context.id))

    # -- modes --------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The current mode: "off", "event" or "thread"."""
        return _MODE_NAMES[self._mode]

    def set_mode(self, mode: int | str) -> None:
        """Choose how requests are handled; may be called any number of times.

        Args:
            mode: ``0``/``"off"`` (requests wait, unanswered), ``1``/``"event"``
                (handlers run in the yoton event loop), or ``2``/``"thread"``
                (handlers run in a worker thread). Case-insensitive.

        Raises:
            ValueError: an unknown mode.
        """
        if isinstance(mode, str):
            m = _MODES.get(mode.lower())
        elif isinstance(mode, int) and not isinstance(mode, bool) and mode in _MODE_NAMES:
            m = mode
        else:
            m = None
        if m is None:
            raise InvalidArgumentError(
                f"mode must be 0/'off', 1/'event' or 2/'thread', got {mode!r}"
            )
        out: _Out = []
        with self._cond:
            self._mode = m
            self._mode_gen += 1
            gen = self._mode_gen
            self._cond.notify_all()  # workers of the previous thread mode exit
            self._wake_borrowers()
            self._pump_locked(time.monotonic(), out)
            post = self._wake_locked()
        if m == MODE_THREAD and not self._closed:
            threading.Thread(
                target=self._worker,
                args=(gen,),
                name=f"yoton-rep-{self._slot_base}",
                daemon=True,
            ).start()
        if post:
            post_event(self._run_one_event)
        self._send_all(out)

    def _wake_locked(self) -> bool:
        """Get pending work going; True if the caller must post the event."""
        if not self._work or self._closed:
            return False
        if self._mode == MODE_THREAD:
            if self._sleeping:
                self._cond.notify_all()
            if self._wakers:
                self._wake_borrowers()
        elif self._mode == MODE_EVENT and not self._event_posted:
            self._event_posted = True
            return True
        return False

    def _worker(self, gen: int) -> None:
        cond = self._cond

        def ready() -> bool:
            return bool(self._work) or gen != self._mode_gen or self._closed

        while True:
            if not ready():
                # Idle: read the network ourselves if we can, so that a request
                # is routed, and then run, in this thread (_poller.py).
                borrow_wait(self._context, self._wakers, ready, 5.0)
            with cond:
                while gen == self._mode_gen and not self._closed and not self._work:
                    self._sleeping += 1
                    try:
                        cond.wait(5.0)
                    finally:
                        self._sleeping -= 1
                if gen != self._mode_gen or self._closed:
                    return
                work = self._work.popleft()
                self._running.append(work)
            try:
                self._execute(work)
            except BaseException:  # SystemExit & co. in a handler: keep serving
                logger.exception("a handler raised in the worker thread")

    def _serve_queued(self) -> None:
        """Run the queued requests in the calling thread, then take the next one.

        What a 2.x program that keeps its RepChannel ``off`` calls now and then
        (as ``_process_events_local``, see ``_compat2x.py``): the requests that
        arrived run here, and the oldest waiting pre-request is acknowledged
        (which mode ``off`` otherwise never does), so its request arrives for
        the next call.
        """
        while True:
            out: _Out = []
            with self._cond:
                work = None
                if self._work and not self._closed:
                    work = self._work.popleft()
                    self._running.append(work)
                else:
                    self._pump_locked(time.monotonic(), out, even_off=True)
            self._send_all(out)
            if work is None:
                return
            self._execute(work)

    def _run_one_event(self) -> None:
        with self._cond:
            self._event_posted = False
            if self._mode != MODE_EVENT or self._closed or not self._work:
                return
            work = self._work.popleft()
            self._running.append(work)
        self._execute(work)

    # -- handling a request (mode thread) --------------------------------------------

    def _resolve(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError(f"the method name of a request must be a str, got {name!r}")
        if name in self._served:
            return getattr(self, name)
        served = ", ".join(sorted(self._served))
        cls = type(self).__name__
        if name.startswith("_") or hasattr(type(self), name) or name in vars(self):
            raise PermissionError(
                f"{cls} refuses to run {name!r} for a remote caller: private names, "
                f"attributes and channel machinery are not served (it serves: {served})."
            )
        raise NotImplementedError(
            f"Method {name!r} not implemented by {cls} (it serves: {served})."
        )

    def _call(self, payload: bytes) -> Any:
        request = decode_object(payload)
        if not (
            type(request) is tuple
            and len(request) == 3
            and isinstance(request[1], (tuple, list))
            and isinstance(request[2], dict)
        ):
            raise TypeError(
                f"malformed request (expected (name, args, kwargs)): {reprlib.repr(request)}"
            )
        name, args, kwargs = request
        method = self._resolve(name)
        if kwargs:
            if not all(isinstance(k, str) for k in kwargs):
                raise TypeError(f"keyword argument names of {name}() must be str")
            result = method(*args, **kwargs)
        else:
            result = method(*args)
        try:
            reply = encode_object(result)
        except ValueError as exc:
            raise TypeError(
                f"the result of {name}() cannot be sent: {exc} (results must be None, bool, "
                "int, float, str, list, tuple or dict, nested)"
            ) from None
        limit = self._max_message_size
        if len(reply) > limit:
            raise ValueError(
                f"the result of {name}() is {len(reply)} bytes, more than the maximum message "
                f"size of {limit} bytes"
            )
        return reply

    def _execute(self, work: _Work) -> None:
        try:
            reply = self._call(work.payload)
        except BaseException as exc:
            reply = encode_error(exc, work.new_style)
            if not isinstance(exc, Exception):  # e.g. KeyboardInterrupt: answer, then go on
                self._done(work, reply)
                raise
            logger.info("error handling request: %s: %s", type(exc).__name__, exc)
        self._done(work, reply)

    def _done(self, work: _Work, reply: bytes) -> None:
        work.acked = True  # the reply makes a "running" notice pointless
        # Reply first, then forget the request: a liveness check in between
        # must still hear "alive", not "unknown".
        self._send_raw(reply, work.requester, work.rid)
        out: _Out = []
        with self._cond:
            try:
                self._running.remove(work)
            except ValueError:  # the channel closed or switched modes meanwhile
                pass
            self._work_keys.discard((work.requester, work.rid))
            if self._pre or self._current is not None:
                self._pump_locked(time.monotonic(), out)
            post = self._wake_locked() if self._mode == MODE_EVENT else False
        if out:
            self._send_all(out)
        if post:
            post_event(self._run_one_event)

    # -- protocol (engine thread, or a local sender's thread) --------------------------

    def _send_all(self, out: _Out) -> None:
        for data, dest_id, dest_seq in out:
            self._send_raw(data, dest_id, dest_seq)

    def _deposit(self, pkg: Package) -> None:
        # Under the context lock: only queue it; _on_deposit does the work.
        self._incoming.append(pkg)

    def _on_deposit(self) -> None:
        out: _Out = []
        now = time.monotonic()
        incoming = self._incoming
        with self._cond:
            while incoming:
                try:
                    pkg = incoming.popleft()
                except IndexError:
                    break
                self._handle(pkg, now, out)
            if self._pre or self._current is not None:
                self._pump_locked(now, out)
            post = self._wake_locked()
            # Timers are needed while there is work; _tick stops them when
            # there is none. Both decide under _cond, so none is lost.
            start_ticking = not self._ticking and not self._idle_locked()
            if start_ticking:
                self._ticking = True
        if start_ticking:
            get_engine().add_ticker(self._tick)
        if out:
            self._send_all(out)
        if post:
            post_event(self._run_one_event)

    def _remember(self, requester: int) -> None:
        known = self._requesters
        if requester not in known:
            if len(known) >= MAX_KNOWN_REQUESTERS:
                del known[next(iter(known))]
            known[requester] = None

    def _handle(self, pkg: Package, now: float, out: _Out) -> None:
        src = pkg.source_id
        seq = pkg.dest_seq
        data = pkg.data
        if seq > REF:
            key = (src, seq - REF)
            if data[:4] == REQ_DIRECT:  # first: the usual package between our own ends
                if key in self._work_keys:
                    return
                if (  # free: nothing running, queued or acknowledged
                    self._mode != MODE_OFF
                    and not self._closed
                    and not self._running
                    and not self._work
                    and self._current is None
                    and not self._pre
                ):
                    self._work.append(_Work(src, key[1], data[4:], True, now))
                    self._work_keys.add(key)
                    self._remember(src)
                else:
                    out.append((REQ_DECLINE, src, seq))
            elif data == REQ_OFFER:
                if key in self._pre:
                    self._pre[key] = now  # a resend: refreshed, but keeps its place
                elif key != self._current and key not in self._work_keys:
                    if len(self._pre) < self._context._queue_n:  # bounded (docs/security.md#limits)
                        self._pre[key] = now
                    else:
                        self._n_dropped += 1  # the requester offers again later
            elif data == REQ_RELEASE:
                self._pre.pop(key, None)
                if self._current == key:
                    self._current = None
            elif data == REQ_PING:
                out.append((REQ_ALIVE if key in self._work_keys else REQ_UNKNOWN, src, seq))
        elif seq:
            key = (src, seq)
            if self._current == key:
                self._current = None
            self._pre.pop(key, None)
            if key in self._work_keys:
                return  # a duplicate (after a direct request that was slow to confirm)
            if len(self._work) >= self._context._queue_n:
                # Bounded (docs/security.md#limits): a flood of unsolicited requests is
                # dropped and counted; a requester's ping then learns "unknown".
                self._n_dropped += 1
                return
            self._work.append(_Work(src, seq, data, False, now))
            self._work_keys.add(key)
            if seq & NEW_STYLE:
                self._remember(src)

    def _pump_locked(self, now: float, out: _Out, even_off: bool = False) -> None:
        """Acknowledge the oldest pre-request if we are free to take it.

        In mode ``off`` only when ``even_off`` (:meth:`_serve_queued`).
        """
        current = self._current
        if current is not None:
            limit = NEW_STYLE_STALE if current[1] & NEW_STYLE else PRE_REQUEST_FAILSAFE
            if now - self._current_since > limit:
                self._current = None
        if (
            (self._mode == MODE_OFF and not even_off)
            or self._closed
            or self._current is not None
            or self._running
            or self._work
            or not self._pre
        ):
            return
        key = next(iter(self._pre))
        del self._pre[key]
        self._current = key
        self._current_since = now
        requester, rid = key
        out.append((REQ_ACK_NEW if rid & NEW_STYLE else REQ_ACK, requester, REF + rid))

    def _idle_locked(self) -> bool:
        return self._current is None and not self._running and not self._work and not self._pre

    def _tick(self, _now: float) -> None:
        if self._idle_locked():
            with self._cond:
                if self._idle_locked():  # nothing to time until a request comes (_on_deposit)
                    self._ticking = False
                    get_engine().remove_ticker(self._tick)
                    return
        now = time.monotonic()
        out: _Out = []
        with self._cond:
            stale = [
                key
                for key, seen in self._pre.items()
                if key[1] & NEW_STYLE and now - seen > NEW_STYLE_STALE
            ]
            for key in stale:
                del self._pre[key]
            for work in (*self._running, *self._work):
                if not work.acked and now - work.accepted >= DIRECT_ACK_DELAY:
                    work.acked = True
                    out.append((REQ_ACK_NEW, work.requester, REF + work.rid))
            self._pump_locked(now, out)
        self._send_all(out)

    # -- connections and closing ---------------------------------------------------

    def _on_connection_closed(self, conn: Any) -> None:
        """Forget what a requester that went away asked for (direct peers only)."""
        peer = conn.id2
        if not peer or self._linked_to(peer, excluding=conn):
            return
        out: _Out = []
        with self._cond:
            for key in [k for k in self._pre if k[0] == peer]:
                del self._pre[key]
            if self._current is not None and self._current[0] == peer:
                self._current = None
            for work in [w for w in self._work if w.requester == peer]:
                self._work.remove(work)
                self._work_keys.discard((work.requester, work.rid))
            self._requesters.pop(peer, None)
            self._pump_locked(time.monotonic(), out)
        self._send_all(out)

    def _on_close(self) -> None:
        get_engine().remove_ticker(self._tick)
        with self._cond:
            self._mode_gen += 1
            self._cond.notify_all()
            self._wake_borrowers()
            queued, self._work = list(self._work), deque()
            for work in queued:
                self._work_keys.discard((work.requester, work.rid))
            self._pre.clear()
            self._current = None
            requesters = list(self._requesters)
        for work in queued:
            err = ConnectionClosedError("The RepChannel was closed before it handled the request.")
            self._send_raw(encode_error(err, work.new_style), work.requester, work.rid)
        for requester in requesters:
            self._send_raw(REP_GONE, requester, REF)
        super()._on_close()
