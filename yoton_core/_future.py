"""Future: the pending result of a remote call (a ``concurrent.futures.Future``), and RemoteError.

:class:`Future` subclasses :class:`concurrent.futures.Future`, so
``concurrent.futures.wait``, ``as_completed`` and ``asyncio.wrap_future`` take
it, and adds yoton's ``result_or_cancel`` and ``set_auto_cancel_timeout``.
Unlike 2.x (docs/protocol.md#differences-from-2x, items 11 and 14) it is completed by the IO
side: a thread blocked in :meth:`Future.result` sleeps until the reply arrives
(or reads the network itself, see ``_poller.borrow_wait``), no polling loop is
involved, and nothing needs the event loop except the user's own
done-callbacks, which are posted to it as documented.

The state is an int with 2.x's numbering and 2.x's attribute name,
``_status``: 0 waiting for a replier, 1 running (a replier took the request),
2 cancelled, 3 failed, 4 succeeded. The stdlib's module functions read a
Future's ``_state`` (a string), ``_condition`` and ``_waiters``; those three
are derived here (properties) from ``_status`` and the Future's lock, so a
Future costs no stdlib Condition until someone really waits on one.

:func:`~._errors.make_remote_error` (re-exported here) builds the
:class:`RemoteError` a failed remote call raises.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Callable
from concurrent.futures import _base as _cf
from typing import TYPE_CHECKING, Any

from ._block import check_timeout
from ._borrow import borrow_wait
from ._errors import CancelledError, RemoteError, make_remote_error
from ._errors import TimeoutError as YotonTimeoutError
from ._eventloop import InvalidArgumentError, post_event, run_event
from ._log import get_logger
from ._poller import Waker

if TYPE_CHECKING:
    from ._reqrep import ReqChannel

__all__ = ["Future", "RemoteError", "make_remote_error"]

logger = get_logger("reqrep")

PENDING = 0
RUNNING = 1
CANCELLED = 2
FAILED = 3
SUCCEEDED = 4

_STATE_NAMES = {
    PENDING: "waiting for a replier",
    RUNNING: "running",
    CANCELLED: "cancelled",
    FAILED: "failed",
    SUCCEEDED: "finished",
}

# ``_status`` -> the stdlib's state string. A yoton Future is cancelled
# synchronously and tells the stdlib's waiters at once, so "cancelled" is the
# stdlib's CANCELLED_AND_NOTIFIED (its plain CANCELLED means "not told yet").
_CF_STATES = (_cf.PENDING, _cf.RUNNING, _cf.CANCELLED_AND_NOTIFIED, _cf.FINISHED, _cf.FINISHED)

#: Done-callbacks defined in these modules are the stdlib's own bridges
#: (``asyncio.wrap_future``, ``loop.run_in_executor``): made to be called from
#: any thread, and they would never run if they waited for yoton's event loop.
#: They are called in the completing thread, as ``concurrent.futures`` does.
_ANY_THREAD_CALLBACK_MODULES = frozenset({"asyncio.futures"})

#: Auto-cancel timeout of a Future that no replier has taken (2.x default).
DEFAULT_AUTO_CANCEL_TIMEOUT = 10.0
#: Longest single condition wait, so a blocked ``result()`` stays interruptible.
_WAIT_CHUNK = 5.0

# Guards the lazy creation of a Future's Condition (rare: only when a thread
# sleeps in result() or the stdlib's wait() asks for ``_condition``).
_cond_creation = threading.Lock()


def _check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    seconds = check_timeout(timeout, what, none=True)
    return None if seconds == math.inf else seconds


class Future(concurrent.futures.Future[Any]):
    """The result of a call made through a :class:`ReqChannel`.

    A :class:`concurrent.futures.Future`: ``result()`` and ``exception()`` wait
    for the reply; ``concurrent.futures.wait``/``as_completed`` and
    ``asyncio.wrap_future`` accept it. A Future that no replier takes is
    cancelled automatically after :meth:`set_auto_cancel_timeout` seconds (10
    by default); one whose replier's connection closes fails with a
    :class:`BrokenConnectionError`. Like any Python object (and as 2.x
    programs expect) it takes attributes of your own: ``future.tag = 3``.

    Args:
        req_channel: The channel that made the request (None for a Future used
            on its own, e.g. in tests).
        req: The request as ``(name, args, kwargs)``, for messages.
        request_id: The id of the request within its channel.
    """

    # One is made per request: slots keep building one quick. The base class
    # has no slots, so instances still have a __dict__ for user attributes.
    __slots__ = (
        "_channel",
        "_request_id",
        "_request",
        "_status",
        "_result",
        "_exception",
        "_lock",
        "_cond",
        "_callbacks",
        "_hooks",
        "_cf_waiters",
        "_auto_cancel_timeout",
        "_replier_id",
        "_wakers",
    )

    def __init__(
        self,
        req_channel: ReqChannel | None = None,
        req: Any = None,
        request_id: int = 0,
    ) -> None:
        # (concurrent.futures.Future.__init__ is not called: the attributes
        # the stdlib reads are properties below.)
        self._channel = req_channel
        self._request_id = request_id
        self._request = req
        self._status = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # Guards the state. A Condition on it is made only when a thread must
        # sleep in result() without reading the network itself (most never do).
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        # Done-callbacks (via the event loop), hooks (in the completing thread)
        # and the stdlib's waiters (wait, as_completed): lists only once used.
        self._callbacks: list[Callable[[Future], object]] | None = None
        self._hooks: list[Callable[[Future], object]] | None = None
        self._cf_waiters: list[Any] | None = None
        self._auto_cancel_timeout = (
            req_channel._default_future_timeout
            if req_channel is not None
            else DEFAULT_AUTO_CANCEL_TIMEOUT
        )
        self._replier_id = 0
        # Threads waiting in result() while reading the network themselves
        # (_poller.borrow_wait); woken when the Future completes.
        self._wakers: list[Waker] = []

    # -- what concurrent.futures' module functions read ----------------------------
    # The stdlib's Future has plain attributes for these three, and the type of
    # ``as_completed`` (typeshed: a protocol) wants them settable: without
    # setters, mypy rejected ``as_completed([yoton futures])``. The stdlib never
    # assigns them; the setters refuse.

    @property
    def _state(self) -> str:
        """The stdlib's state string (read by ``wait`` and ``as_completed``)."""
        return _CF_STATES[self._status]

    @_state.setter
    def _state(self, value: str) -> None:
        raise AttributeError("Future._state is derived from _status")

    @property
    def _condition(self) -> threading.Condition:
        """A Condition on the Future's lock (``with f._condition`` guards the state)."""
        cond = self._cond
        if cond is None:
            with _cond_creation:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    @_condition.setter
    def _condition(self, value: threading.Condition) -> None:
        raise AttributeError("Future._condition is made on the Future's lock")

    @property
    def _waiters(self) -> list[Any]:
        """The stdlib's waiters; it reads and changes them under ``_condition``."""
        waiters = self._cf_waiters
        if waiters is None:
            waiters = self._cf_waiters = []
        return waiters

    @_waiters.setter
    def _waiters(self, value: list[Any]) -> None:
        raise AttributeError("Future._waiters is changed in place only")

    # -- state ------------------------------------------------------------------

    @property
    def request_id(self) -> int:
        """The id of the request within its ReqChannel (1, 2, 3, ...; 0 if none)."""
        return self._request_id

    @property
    def replier_id(self) -> int:
        """The context id of the replier handling the request (0 if none yet)."""
        return self._replier_id

    def _describe_request(self) -> str:
        req = self._request
        if isinstance(req, tuple) and req and isinstance(req[0], str):
            return f"request {req[0]}()"
        return "future"

    def __repr__(self) -> str:
        return f"<Future {self._describe_request()} {_STATE_NAMES[self._status]}>"

    def cancelled(self) -> bool:
        """True if the Future was cancelled."""
        return self._status == CANCELLED

    def running(self) -> bool:
        """True while a replier is handling the request."""
        return self._status == RUNNING

    def done(self) -> bool:
        """True if the Future was cancelled, failed or got its result."""
        return self._status >= CANCELLED

    # -- waiting ----------------------------------------------------------------

    def _done_now(self) -> bool:
        return self._status >= CANCELLED

    def _wait(self, timeout: float | None) -> bool:
        if self._status >= CANCELLED:
            return True
        channel = self._channel
        if channel is not None:
            # Read the reply ourselves if we can: no hand-off between threads.
            done = borrow_wait(channel._context, self._wakers, self._done_now, timeout)
            if done is not None:
                return done
        with self._lock:
            cond = self._condition  # (made on first use: most Futures never wait here)
            if timeout is None:
                while self._status < CANCELLED:
                    cond.wait(_WAIT_CHUNK)
                return True
            return cond.wait_for(self._done_now, timeout)

    def _timeout_error(self, timeout: float | None) -> YotonTimeoutError:
        return YotonTimeoutError(
            f"{self._describe_request()} did not complete within {timeout} s "
            f"(it is {_STATE_NAMES[self._status]})."
        )

    def _cancelled_error(self) -> CancelledError:
        return CancelledError(f"{self._describe_request()} was cancelled.")

    def result(self, timeout: float | None = None) -> Any:
        """Return the result, waiting up to ``timeout`` seconds (None: until done).

        Raises:
            yoton.TimeoutError: not done in time (the Future stays usable).
            yoton.CancelledError: the Future was cancelled.
            Exception: the remote call failed (usually a :class:`RemoteError`).
        """
        if self._status != SUCCEEDED:  # (else: done, nothing to check or wait for)
            timeout = _check_timeout(timeout, "Future.result() timeout")
            if not self._wait(timeout):
                raise self._timeout_error(timeout)
            if self._status == CANCELLED:
                raise self._cancelled_error()
            if self._status == FAILED:
                assert self._exception is not None
                raise self._exception
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception of a failed call, or None if it succeeded.

        Raises:
            yoton.TimeoutError: not done in time.
            yoton.CancelledError: the Future was cancelled.
        """
        timeout = _check_timeout(timeout, "Future.exception() timeout")
        if not self._wait(timeout):
            raise self._timeout_error(timeout)
        if self._status == CANCELLED:
            raise self._cancelled_error()
        return self._exception

    def result_or_cancel(self, timeout: float = 1.0) -> Any:
        """Return the result if it comes within ``timeout`` s; else cancel and return None.

        A failed call also gives None (as in 2.x); use :meth:`result` to see
        the error.
        """
        try:
            return self.result(timeout)
        except YotonTimeoutError:
            self.cancel()
            return None
        except concurrent.futures.CancelledError:
            return None
        except Exception:
            return None

    # -- async face (trio and asyncio); implemented in _async.py ---------------

    async def result_async(self, timeout: float | None = None) -> Any:
        """Await the result from a trio or asyncio task without blocking its loop.

        Same outcomes as :meth:`result`. Cancelling the awaiting task stops
        the waiting only; the request goes on.
        """
        from ._async import future_result_async

        return await future_result_async(self, timeout)

    def __await__(self) -> Any:
        """``await future`` is ``await future.result_async()``."""
        from ._async import future_await

        return future_await(self)

    # -- cancelling -------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the request if no replier took it yet.

        Returns:
            True if the Future is cancelled (now or before); False if a replier
            is handling it or it is already finished (PEP 3148 semantics).
        """
        if not self._finish(CANCELLED, None, None, only_pending=True):
            return self._status == CANCELLED
        if self._channel is not None:
            self._channel._future_cancelled(self)
        return True

    def set_auto_cancel_timeout(self, timeout: float | None) -> None:
        """Cancel this Future if no replier takes it within ``timeout`` seconds.

        The time counts from when the request was made. None means never.

        Raises:
            ValueError: ``timeout`` is not positive.
        """
        seconds = check_timeout(timeout, "Future.set_auto_cancel_timeout()", none=True, above=True)
        self._auto_cancel_timeout = math.inf if seconds is None else seconds

    # -- completing -------------------------------------------------------------

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the Future running; return False if it was cancelled.

        Raises:
            RuntimeError: the Future is already running or done.
        """
        with self._lock:
            if self._status == CANCELLED:
                return False
            if self._status == PENDING:
                self._status = RUNNING
                return True
            raise RuntimeError(f"Future in unexpected state: {_STATE_NAMES[self._status]}")

    def _revert_to_pending(self) -> bool:
        """A tentative replier declined: the request is looking for one again."""
        with self._lock:
            if self._status == RUNNING:
                self._status = PENDING
                return True
            return False

    def set_result(self, result: Any) -> None:
        """Complete the Future with ``result`` (for repliers and tests).

        Raises:
            concurrent.futures.InvalidStateError: the Future is already done.
        """
        if not self._finish(SUCCEEDED, result, None):
            raise concurrent.futures.InvalidStateError(f"{self!r} is already done")

    def set_exception(self, exception: BaseException | type[BaseException] | str | None) -> None:
        """Complete the Future with an exception; a str becomes ``Exception(str)``.

        An exception class is instantiated without arguments (as asyncio.Future does).

        Raises:
            TypeError: ``exception`` is neither an exception (or its class) nor a str.
            concurrent.futures.InvalidStateError: the Future is already done.
        """
        if isinstance(exception, str):
            exception = Exception(exception)
        elif isinstance(exception, type) and issubclass(exception, BaseException):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError(f"set_exception needs an exception or a str, got {exception!r}")
        if not self._finish(FAILED, None, exception):
            raise concurrent.futures.InvalidStateError(f"{self!r} is already done")

    def _finish(
        self,
        state: int,
        result: Any,
        exception: BaseException | None,
        only_pending: bool = False,
    ) -> bool:
        """Complete the Future once; False if it was already done. Any thread.

        With ``only_pending`` (cancelling) a running Future is left alone too.
        """
        with self._lock:
            if self._status >= CANCELLED or (only_pending and self._status != PENDING):
                return False
            self._status = state
            self._result = result
            self._exception = exception
            if self._cond is not None:
                self._cond.notify_all()
            if self._cf_waiters:  # the stdlib's wait()/as_completed(), as it does
                for waiter in self._cf_waiters:
                    if state == SUCCEEDED:
                        waiter.add_result(self)
                    elif state == FAILED:
                        waiter.add_exception(self)
                    else:
                        waiter.add_cancelled(self)
            callbacks, self._callbacks = self._callbacks, None
            hooks, self._hooks = self._hooks, None
        if self._wakers:
            for waker in tuple(self._wakers):
                waker.wake()
        if hooks:
            for hook in hooks:
                run_event(hook, (self,), {})
        if callbacks:
            for fn in callbacks:
                post_event(fn, self)
        return True

    # -- callbacks --------------------------------------------------------------

    def add_done_callback(self, fn: Callable[[Future], object]) -> None:
        """Call ``fn(future)`` when the Future is done.

        The call goes through yoton's event loop (as in 2.x), so the loop must
        run (``start_event_loop``, ``process_events`` or an embedded loop). If
        the Future is already done, ``fn`` is called at once, in this thread.
        The stdlib's own bridges (``asyncio.wrap_future``) are the exception:
        they are thread-safe and are called in the completing thread.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"add_done_callback needs a callable, got {fn!r}")
        if getattr(fn, "__module__", None) in _ANY_THREAD_CALLBACK_MODULES:
            self._add_done_hook(fn)
            return
        with self._lock:
            if self._status < CANCELLED:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        run_event(fn, (self,), {})

    def _add_done_hook(self, fn: Callable[[Future], object]) -> None:
        """Call ``fn(future)`` from whichever thread completes the Future.

        Called at once (in this thread) if the Future is already done. For
        bridges such as the async face; ``fn`` must be quick and must not block.
        """
        with self._lock:
            if self._status < CANCELLED:
                if self._hooks is None:
                    self._hooks = []
                self._hooks.append(fn)
                return
        run_event(fn, (self,), {})

    def _remove_done_hook(self, fn: Callable[[Future], object]) -> None:
        """Forget a hook of :meth:`_add_done_hook` that has not run (a waiter gave up)."""
        with self._lock:
            hooks = self._hooks
            if hooks is not None:
                try:
                    hooks.remove(fn)
                except ValueError:
                    pass
