"""Yoton's event system: signals and timers, plus the event loop's public names.

Behaviour follows the 2.x ``yoton.events`` module (docs/events.md) with its
defects fixed (docs/protocol.md#differences-from-2x): timers never fire early (item 7, see
:mod:`yoton_core._timers`), the event queue never drops silently (item 8) and
handler exceptions are logged, not printed (item 22); see
:mod:`yoton_core._eventloop` for the queue itself.

A signal's ``emit`` posts one event per handler to the global queue; the
handlers run in whichever thread processes events. ``emit_now`` calls them
right away in the calling thread.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from ._block import check_timeout
from ._errors import InvalidArgumentError
from ._eventloop import (
    EventLoop,
    EventLoopStatistics,
    app,
    call_later,
    describe_callable,
    embed_event_loop,
    post_event,
    post_event_asap,
    process_events,
    run_event,
    start_event_loop,
    stop_event_loop,
)
from ._log import get_logger
from ._timers import TimerHandle, scheduler

__all__ = [
    "Signal",
    "Timer",
    "EventLoop",
    "EventLoopStatistics",
    "app",
    "call_later",
    "process_events",
    "start_event_loop",
    "stop_event_loop",
    "embed_event_loop",
    "post_event",
    "post_event_asap",
]

logger = get_logger("events")


# ---------------------------------------------------------------------------
# Signal


class _Handler:
    """A bound handler; calling it calls the handler (or nothing if it died)."""

    __slots__ = ()

    @property
    def alive(self) -> bool:
        return True

    def resolve(self) -> Callable[..., object] | None:
        raise NotImplementedError

    def matches(self, func: Callable[..., object]) -> bool:
        raise NotImplementedError

    def _yoton_name(self) -> str:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        func = self.resolve()
        if func is not None:
            func(*args, **kwargs)


class _StrongHandler(_Handler):
    """A plain function, lambda or other callable, held strongly."""

    __slots__ = ("_func",)

    def __init__(self, func: Callable[..., object]) -> None:
        self._func = func

    def resolve(self) -> Callable[..., object]:
        return self._func

    def matches(self, func: Callable[..., object]) -> bool:
        # Identity, plus == for method objects (a fresh one is made on every
        # attribute access; their == compares __self__ by identity, no user code).
        if self._func is func:
            return True
        method_types = (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)
        return isinstance(func, method_types) and self._func == func

    def _yoton_name(self) -> str:
        return describe_callable(self._func)


class _WeakMethodHandler(_Handler):
    """A bound method held as a weak reference to its object plus the method name.

    The method is looked up again at call time (as 2.x does), so binding a
    handler never keeps its object alive. When the name does not lead back to
    the same function (e.g. a method created with ``types.MethodType``), the
    function itself is re-bound instead.
    """

    __slots__ = ("_ref", "_func", "_name")

    def __init__(self, ref: weakref.ref[Any], func: Callable[..., object], name: str | None):
        self._ref = ref
        self._func = func
        self._name = name

    @property
    def alive(self) -> bool:
        return self._ref() is not None

    def resolve(self) -> Callable[..., object] | None:
        obj = self._ref()
        if obj is None:
            return None
        if self._name is not None:
            return getattr(obj, self._name)
        return types.MethodType(self._func, obj)

    def matches(self, func: Callable[..., object]) -> bool:
        return (
            isinstance(func, types.MethodType)
            and func.__func__ is self._func
            and func.__self__ is self._ref()
        )

    def _yoton_name(self) -> str:
        return describe_callable(self._func)


def _method_name(obj: object, method: types.MethodType) -> str | None:
    """The attribute name under which ``obj`` gives back ``method``, if any."""
    func = method.__func__
    name = getattr(func, "__name__", None)
    if not isinstance(name, str):
        return None
    candidates = [name]
    if name.startswith("__") and not name.endswith("__"):
        # A private method: the attribute is stored under its mangled name.
        parts = getattr(func, "__qualname__", "").split(".")
        owner = parts[-2].lstrip("_") if len(parts) >= 2 else ""
        if owner:
            candidates.insert(0, f"_{owner}{name}")
    for candidate in candidates:
        try:
            found = getattr(obj, candidate)
        except Exception:
            continue
        if getattr(found, "__func__", None) is func and getattr(found, "__self__", None) is obj:
            return candidate
    return None


def _make_handler(func: object) -> _Handler:
    if not callable(func):
        raise InvalidArgumentError(f"A signal handler must be callable, got {func!r}.")
    if isinstance(func, types.MethodType):
        obj = func.__self__
        try:
            ref = weakref.ref(obj)
        except TypeError:  # e.g. __slots__ without __weakref__: hold it strongly
            return _StrongHandler(func)
        return _WeakMethodHandler(ref, func.__func__, _method_name(obj, func))
    return _StrongHandler(func)


class Signal:
    """Something that can happen; handlers bound to it are called when it is emitted.

    Bound methods are held weakly (their object may be garbage collected while
    bound; the handler then silently disappears). Other callables are held
    strongly. All methods are thread-safe.
    """

    def __init__(self) -> None:
        # An immutable tuple, replaced under the lock on change, so emit() can
        # read it without locking.
        self._handlers: tuple[_Handler, ...] = ()
        self._handlers_lock = threading.Lock()

    @property
    def type(self) -> type:
        """The class of this signal (2.x compatibility)."""
        return type(self)

    @property
    def has_handlers(self) -> bool:
        """Whether any handler is bound (possibly a dead one); cheap, no locking."""
        return bool(self._handlers)

    def bind(self, func: Callable[..., object]) -> None:
        """Bind ``func`` as a handler.

        Binding a handler that is already bound is ignored (with a warning), so
        each handler runs at most once per emit.

        Raises:
            TypeError: ``func`` is not callable (also a ValueError, as in 2.x).
        """
        handler = _make_handler(func)
        with self._handlers_lock:
            handlers = tuple(h for h in self._handlers if h.alive)
            duplicate = any(h.matches(func) for h in handlers)
            self._handlers = handlers if duplicate else (*handlers, handler)
        if duplicate:
            logger.warning(
                "Handler %s is already bound to this signal; ignored.", describe_callable(func)
            )

    def unbind(self, func: Callable[..., object] | None = None) -> None:
        """Remove ``func`` (and any dead handlers); with no argument remove all handlers."""
        with self._handlers_lock:
            if func is None:
                self._handlers = ()
            else:
                self._handlers = tuple(h for h in self._handlers if h.alive and not h.matches(func))

    def emit(self, *args: Any, **kwargs: Any) -> None:
        """Post one event per live handler; they run in the thread that processes events.

        Safe to call from any thread. Each posted event resolves its handler
        again when it runs, so an object collected in between is not revived.
        """
        handlers = self._handlers
        if not handlers:
            return
        post = app.post_event
        dead = False
        for handler in handlers:
            if handler.alive:
                post(handler, *args, **kwargs)
            else:
                dead = True
        if dead:
            self._prune()

    def emit_now(self, *args: Any, **kwargs: Any) -> None:
        """Call every live handler right now, in the calling thread."""
        dead = False
        for handler in self._handlers:
            if handler.alive:
                run_event(handler, args, kwargs)
            else:
                dead = True
        if dead:
            self._prune()

    def _prune(self) -> None:
        with self._handlers_lock:
            self._handlers = tuple(h for h in self._handlers if h.alive)


# ---------------------------------------------------------------------------
# Timer


def _check_interval(value: object) -> float:
    return check_timeout(value, "Timer interval", above=True, finite=True)


class Timer(Signal):
    """A signal that emits itself after ``interval`` seconds, once or repeatedly.

    All timers share one daemon thread, started by the first ``start()``. On
    expiry the timer calls :meth:`emit` in that thread, which posts the handler
    events to the event queue. A running timer is kept alive by the scheduler
    until it is stopped (or, when oneshot, until it fires).

    Args:
        interval: Seconds between start and expiry (int or float > 0).
        oneshot: Fire once (True) or repeatedly (False). Repeating timers keep
            their phase (no drift) and skip ticks they were too late for.
    """

    def __init__(self, interval: float = 1.0, oneshot: bool = True) -> None:
        super().__init__()
        self._handle = TimerHandle(self._expired, _check_interval(interval), not oneshot)

    @property
    def interval(self) -> float:
        """Seconds until expiry; a change applies from the next (re)start or tick."""
        return self._handle.interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._handle.interval = _check_interval(value)

    @property
    def oneshot(self) -> bool:
        """Whether the timer stops after firing once."""
        return not self._handle.repeat

    @oneshot.setter
    def oneshot(self, value: bool) -> None:
        self._handle.repeat = not value

    @property
    def running(self) -> bool:
        """Whether the timer is scheduled to fire."""
        return self._handle.active

    def start(self, interval: float | None = None, oneshot: bool | None = None) -> None:
        """Start (or restart) the timer: it fires ``interval`` seconds from now.

        Restarting a running timer only moves its deadline; it never makes this
        or any other timer fire early.
        """
        if interval is not None:
            self.interval = interval
        if oneshot is not None:
            self.oneshot = oneshot
        scheduler.schedule(self._handle, self._handle.interval)

    def stop(self) -> None:
        """Stop the timer. Events it already posted still run."""
        scheduler.cancel(self._handle)

    def _expired(self) -> None:
        self.emit()
