"""The process-wide event queue and the loop that runs it (2.x's ``yoton.app``).

Anything may be posted from any thread (the core posts from its IO thread,
timers from the timer thread); events run in whichever thread calls
``process_events`` / ``start_event_loop``, or in another framework's loop via
``embed_event_loop``. Posting is O(1): a deque append under a lock, plus a
notify only when some thread is actually waiting.

Defects of 2.x fixed here (docs/protocol.md#differences-from-2x): the queue never drops silently
(item 8: unbounded by default; a bounded loop counts drops and warns once),
``process_events`` accepts ints (item 9), and handler exceptions are logged on
the ``"yoton"`` logger, never printed or stored in ``sys.last_*`` (item 22).

Public names are re-exported by :mod:`yoton_core._events`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ._block import check_timeout, normalize_block
from ._errors import InvalidArgumentError
from ._log import get_logger
from ._timers import TimerHandle, scheduler

__all__ = [
    "EventLoop",
    "EventLoopStatistics",
    "InvalidArgumentError",
    "app",
    "call_later",
    "describe_callable",
    "embed_event_loop",
    "post_event",
    "post_event_asap",
    "process_events",
    "run_event",
    "start_event_loop",
    "stop_event_loop",
]

logger = get_logger("events")

# Longest single Condition.wait() of a blocking wait. Waiting forever in one
# call is not interruptible by Ctrl+C on Windows; a wake-up every few seconds of
# an idle loop costs nothing measurable.
_WAIT_CHUNK = 5.0


def describe_callable(func: object) -> str:
    """A short human-readable name for a handler, for log messages."""
    name_of = getattr(type(func), "_yoton_name", None)
    if name_of is not None:  # a Signal handler wrapper names what it wraps
        return str(name_of(func))
    if isinstance(func, functools.partial):
        return describe_callable(func.func)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else repr(func)


def run_event(func: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run one event; an Exception is logged and swallowed so the loop goes on."""
    try:
        func(*args, **kwargs)
    except Exception:
        logger.exception("Exception while handling event (in %s)", describe_callable(func))


@dataclasses.dataclass(frozen=True)
class EventLoopStatistics:
    """A snapshot of the event queue's counters.

    Attributes:
        queued: Events waiting to be processed.
        processed: Events taken from the queue and run since the loop was made.
        dropped: Events discarded because a bounded queue was full.
    """

    queued: int
    processed: int
    dropped: int


def _block_timeout(block: object) -> float | None:
    """Map process_events' ``block`` to a timeout: 0.0 = don't wait, None = forever."""
    try:
        return normalize_block(block)
    except TypeError:
        raise InvalidArgumentError(
            f"block must be True, False, None or a number of seconds, got {block!r}."
        ) from None


_Event = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


class EventLoop:
    """The event queue plus the machinery to run it (2.x's ``yoton.app``).

    Posting is O(1) and cheap: a deque append under a lock, plus a notify only
    when a thread is actually waiting for events.

    Args:
        max_queue: None (default) for an unbounded queue. Otherwise the maximum
            number of queued events; further events are dropped, counted in
            :meth:`statistics` and reported by one logged warning.
    """

    def __init__(self, max_queue: int | None = None) -> None:
        if max_queue is not None and (
            isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1
        ):
            raise InvalidArgumentError(f"max_queue must be None or an int >= 1, got {max_queue!r}.")
        self._max_queue = max_queue
        self._queue: deque[_Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._processed = 0
        self._dropped = 0
        self._embed_callback: Callable[[], object] | None = None
        self._embed_armed = False
        self._loop_running = False
        self._loop_ident: int | None = None
        self._stop_requested = False
        self._fork_ident: int | None = None

    # -- posting ------------------------------------------------------------

    def post_event(self, func: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """Append ``func(*args, **kwargs)`` to the queue. Thread-safe."""
        self._post((func, args, kwargs), False)

    def post_event_asap(self, func: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """Put ``func(*args, **kwargs)`` at the front of the queue. Thread-safe."""
        self._post((func, args, kwargs), True)

    def _post(self, event: _Event, front: bool) -> None:
        warn = False
        with self._cond:
            queue = self._queue
            if self._max_queue is not None and len(queue) >= self._max_queue:
                self._dropped += 1
                warn = self._dropped == 1
            else:
                if front:
                    queue.appendleft(event)
                else:
                    queue.append(event)
                if self._waiters:
                    self._cond.notify()
            callback = self._embed_callback if self._embed_armed else None
            self._embed_armed = False
        if warn:
            logger.warning(
                "The yoton event queue is full (%d events); dropping new events. "
                "Is an event loop running? See yoton.app.statistics().",
                self._max_queue,
            )
        if callback is not None:
            self._call_embed_callback(callback)

    @staticmethod
    def _call_embed_callback(callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception:
            logger.exception(
                "Exception in the embedded event loop callback %s", describe_callable(callback)
            )

    def call_later(
        self, func: Callable[..., object], /, timeout: float = 0.0, *args: Any, **kwargs: Any
    ) -> None:
        """Run ``func(*args, **kwargs)`` from the event loop, later.

        Args:
            func: The callable.
            timeout: > 0: post it after that many seconds (via the timer
                thread); 0: append it to the queue; < 0: put it at the front.
        """
        if not callable(func):
            raise InvalidArgumentError(f"call_later needs a callable, got {func!r}.")
        timeout = check_timeout(timeout, "call_later() timeout", minimum=-math.inf, finite=True)
        if timeout > 0:
            handle = TimerHandle(functools.partial(self.post_event, func, *args, **kwargs))
            scheduler.schedule(handle, float(timeout))
        else:
            self._post((func, args, kwargs), timeout < 0)

    # -- processing ---------------------------------------------------------

    def process_events(self, block: bool | float | None = False) -> None:
        """Run queued events until the queue is empty, including ones posted meanwhile.

        Args:
            block: How long to wait for the *first* event: False/None/0 not at
                all, True forever, a number (int or float) that many seconds.
        """
        self._round(_block_timeout(block), interruptible=False)

    def _round(self, timeout: float | None, interruptible: bool) -> None:
        with self._cond:
            self._embed_armed = self._embed_callback is not None
        event = self._pop(timeout, interruptible)
        while event is not None:
            run_event(*event)
            if interruptible and self._stop_requested:
                return
            event = self._pop(0.0, interruptible)

    def _pop(self, timeout: float | None, interruptible: bool) -> _Event | None:
        """Take the first event, waiting up to ``timeout`` (None = forever) for one.

        An interruptible wait (the loop of start_event_loop) also ends when a
        stop is requested.
        """
        cond = self._cond
        with cond:
            queue = self._queue
            if interruptible and self._stop_requested:
                return None
            if not queue and timeout != 0.0:
                deadline = None if timeout is None else time.monotonic() + timeout
                self._waiters += 1
                try:
                    while not queue and not (interruptible and self._stop_requested):
                        if deadline is None:
                            wait = _WAIT_CHUNK
                        else:
                            wait = deadline - time.monotonic()
                            if wait <= 0:
                                break
                        cond.wait(min(wait, _WAIT_CHUNK))
                finally:
                    self._waiters -= 1
            if not queue:
                return None
            self._processed += 1
            return queue.popleft()

    def start_event_loop(self) -> None:
        """Process events until :meth:`stop_event_loop` is called.

        Does nothing if a loop started this way is already running in any
        thread (including a nested call from an event handler).
        """
        with self._cond:
            if self._loop_running:
                return
            self._loop_running = True
            self._loop_ident = threading.get_ident()
            self._stop_requested = False
        try:
            while not self._stop_requested:
                self._round(None, interruptible=True)
        finally:
            with self._cond:
                self._loop_running = False
                self._loop_ident = None

    def stop_event_loop(self) -> None:
        """Make the running :meth:`start_event_loop` return. Thread-safe.

        The loop returns after the event it is running, if any; events still
        queued stay queued. As in 2.x, a stop requested while no loop runs is
        forgotten by the next :meth:`start_event_loop`.
        """
        with self._cond:
            if not self._stop_requested:
                self._stop_requested = True
                self._cond.notify_all()

    def embed_event_loop(self, callback: Callable[[], object] | None) -> None:
        """Let another event loop drive this one.

        ``callback`` is called (from the posting thread) when an event is
        posted, at most once per processing round: it is re-armed at the start
        of every :meth:`process_events`. It should arrange for
        ``process_events()`` to be called soon in the host loop. If events are
        already queued, it is called once right away. None disables embedding.
        """
        if callback is not None and not callable(callback):
            raise InvalidArgumentError(f"callback must be callable or None, got {callback!r}.")
        with self._cond:
            self._embed_callback = callback
            call_now = callback is not None and bool(self._queue)
            self._embed_armed = callback is not None and not call_now
        if call_now:
            assert callback is not None
            self._call_embed_callback(callback)

    def statistics(self) -> EventLoopStatistics:
        """Counters of the event queue (queued, processed, dropped)."""
        with self._cond:
            return EventLoopStatistics(len(self._queue), self._processed, self._dropped)

    # -- fork safety --------------------------------------------------------

    def _before_fork(self) -> None:
        self._cond.acquire()
        self._fork_ident = threading.get_ident()

    def _after_fork_in_parent(self) -> None:
        self._fork_ident = None
        self._cond.release()

    def _after_fork_in_child(self) -> None:
        # Threads other than the forking one are gone: nobody waits, and a loop
        # run by another thread is not running here. Queued events are kept.
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        if self._loop_ident != self._fork_ident:
            self._loop_running = False
            self._loop_ident = None
        self._fork_ident = None


app: Final = EventLoop()
"""The process-wide event loop (2.x's ``yoton.app``).

Signals, Future callbacks and RepChannel's event mode post their events here;
the functions below are its bound methods.
"""
call_later: Final = app.call_later
"""Run ``func(*args, **kwargs)`` from the event loop after ``timeout`` seconds.

``call_later(func, timeout=0.0, *args, **kwargs)``: ``app.call_later``; a
timeout of 0 appends the call to the queue, a negative one puts it first.
"""
process_events: Final = app.process_events
"""Run the queued events and return (``app.process_events(block=False)``).

``block`` waits for the first event: True forever, a number that many
seconds. Call it from your own loop, or use :func:`start_event_loop`.
"""
start_event_loop: Final = app.start_event_loop
"""Run events in this thread until :func:`stop_event_loop` (``app.start_event_loop``)."""
stop_event_loop: Final = app.stop_event_loop
"""Make the running :func:`start_event_loop` return; thread-safe (``app.stop_event_loop``)."""
embed_event_loop: Final = app.embed_event_loop
"""Let another event loop (a GUI's) drive yoton's: ``app.embed_event_loop(callback)``.

``callback()`` is called when events arrive and should arrange for
:func:`process_events` to run soon in that loop; None stops embedding. In trio
and asyncio, ``async with yoton.event_loop_async()`` does this for you.
"""
post_event = app.post_event
post_event_asap = app.post_event_asap

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=app._before_fork,
        after_in_parent=app._after_fork_in_parent,
        after_in_child=app._after_fork_in_child,
    )
