"""Future: the pending result of a remote call, plus RemoteError.

A :class:`Future` follows PEP 3148 (``concurrent.futures.Future``) and adds
yoton's ``result_or_cancel`` and ``set_auto_cancel_timeout``. Unlike 2.x
(PROTOCOL.md section 10, items 11 and 14) it is completed by the IO side: a
thread blocked in :meth:`Future.result` sleeps on a condition until the reply
arrives, no polling loop is involved, and nothing needs the event loop except
the user's own done-callbacks, which are posted to it as documented.

States keep the 2.x numbering: 0 waiting for a replier, 1 running (a replier
took the request), 2 cancelled, 3 failed, 4 succeeded.

:class:`RemoteError` is what a failed remote call raises: it keeps the remote
exception's type name and message. For a builtin exception type (or one of
yoton's own errors) the raised object is also an instance of that class
(``except ZeroDivisionError`` works); nothing received is ever evaluated,
imported or unpickled to get there.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _errors
from ._block import check_timeout
from ._errors import CancelledError, RemoteError
from ._errors import TimeoutError as YotonTimeoutError
from ._eventloop import InvalidArgumentError, post_event, run_event
from ._log import get_logger
from ._poller import Waker, borrow_wait

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

#: Auto-cancel timeout of a Future that no replier has taken (2.x default).
DEFAULT_AUTO_CANCEL_TIMEOUT = 10.0
#: Longest single condition wait, so a blocked ``result()`` stays interruptible.
_WAIT_CHUNK = 5.0


_remote_classes: dict[str, type[RemoteError]] = {}
_remote_classes_lock = threading.Lock()


def _remote_class(type_name: str, module: str) -> type[RemoteError]:
    """RemoteError, or a subclass that is also the named builtin (or yoton) exception type.

    Only two fixed namespaces are consulted, by plain attribute lookup: the
    builtins and yoton's own errors. Nothing received is evaluated or imported.
    """
    if module in ("", "builtins"):
        namespace: Any = builtins
    elif module == _errors.__name__ and type_name in _errors.__all__:
        namespace = _errors
    else:
        return RemoteError
    builtin = getattr(namespace, type_name, None)
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)):
        return RemoteError
    if issubclass(builtin, RemoteError):
        return builtin
    key = f"{module}.{type_name}"
    with _remote_classes_lock:
        cls = _remote_classes.get(key)
        if cls is None:
            try:
                cls = type(f"Remote{type_name}", (RemoteError, builtin), {"__module__": __name__})
            except TypeError:  # an incompatible instance layout
                cls = RemoteError
            _remote_classes[key] = cls
    return cls


def make_remote_error(
    type_name: str,
    message: str,
    remote_traceback: str = "",
    replier_id: int = 0,
    remote_module: str = "",
) -> RemoteError:
    """Build the exception a requester raises for a remote failure.

    The builtin base class (if any) is only used for ``isinstance`` checks: its
    own ``__init__`` is not run, so exception types with special constructors
    (``UnicodeDecodeError`` needs five arguments) work too.
    """
    cls = _remote_class(type_name, remote_module)
    if cls is not RemoteError:
        try:
            exc = cls.__new__(cls, message)
            RemoteError.__init__(
                exc, type_name, message, remote_traceback, replier_id, remote_module
            )
            return exc
        except Exception:  # pragma: no cover - exotic builtin constructors
            pass
    return RemoteError(type_name, message, remote_traceback, replier_id, remote_module)


def _check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    seconds = check_timeout(timeout, what, none=True)
    return None if seconds == math.inf else seconds


class Future:
    """The result of a call made through a :class:`ReqChannel`.

    Implements the PEP 3148 interface. ``result()`` and ``exception()`` wait
    for the reply; a Future that no replier takes is cancelled automatically
    after :meth:`set_auto_cancel_timeout` seconds (10 by default); one whose
    replier's connection closes fails with a :class:`BrokenConnectionError`.

    Args:
        req_channel: The channel that made the request (None for a Future used
            on its own, e.g. in tests).
        req: The request as ``(name, args, kwargs)``, for messages.
        request_id: The id of the request within its channel.
    """

    # One is made per request: slots keep it small and quick to build.
    __slots__ = (
        "_channel",
        "_request_id",
        "_request",
        "_state",
        "_result",
        "_exception",
        "_lock",
        "_cond",
        "_callbacks",
        "_hooks",
        "_auto_cancel_timeout",
        "_replier_id",
        "_wakers",
        "__weakref__",
    )

    def __init__(
        self,
        req_channel: ReqChannel | None = None,
        req: Any = None,
        request_id: int = 0,
    ) -> None:
        self._channel = req_channel
        self._request_id = request_id
        self._request = req
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # Guards the state. A Condition on it is made only when a thread must
        # sleep in result() without reading the network itself (most never do).
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        # Done-callbacks (via the event loop) and hooks (in the completing
        # thread); lists only once someone adds one.
        self._callbacks: list[Callable[[Future], object]] | None = None
        self._hooks: list[Callable[[Future], object]] | None = None
        self._auto_cancel_timeout = (
            req_channel._default_future_timeout
            if req_channel is not None
            else DEFAULT_AUTO_CANCEL_TIMEOUT
        )
        self._replier_id = 0
        # Threads waiting in result() while reading the network themselves
        # (_poller.borrow_wait); woken when the Future completes.
        self._wakers: list[Waker] = []

    # -- state ------------------------------------------------------------------

    @property
    def request_id(self) -> int:
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
        return f"<Future {self._describe_request()} {_STATE_NAMES[self._state]}>"

    def cancelled(self) -> bool:
        """True if the Future was cancelled."""
        return self._state == CANCELLED

    def running(self) -> bool:
        """True while a replier is handling the request."""
        return self._state == RUNNING

    def done(self) -> bool:
        """True if the Future was cancelled, failed or got its result."""
        return self._state >= CANCELLED

    # -- waiting ----------------------------------------------------------------

    def _done_now(self) -> bool:
        return self._state >= CANCELLED

    def _wait(self, timeout: float | None) -> bool:
        if self._state >= CANCELLED:
            return True
        channel = self._channel
        if channel is not None:
            # Read the reply ourselves if we can: no hand-off between threads.
            done = borrow_wait(channel._context, self._wakers, self._done_now, timeout)
            if done is not None:
                return done
        with self._lock:
            cond = self._cond
            if cond is None:
                cond = self._cond = threading.Condition(self._lock)
            if timeout is None:
                while self._state < CANCELLED:
                    cond.wait(_WAIT_CHUNK)
                return True
            return cond.wait_for(self._done_now, timeout)

    def _timeout_error(self, timeout: float | None) -> YotonTimeoutError:
        return YotonTimeoutError(
            f"{self._describe_request()} did not complete within {timeout} s "
            f"(it is {_STATE_NAMES[self._state]})."
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
        if self._state != SUCCEEDED:  # (else: done, nothing to check or wait for)
            timeout = _check_timeout(timeout, "Future.result() timeout")
            if not self._wait(timeout):
                raise self._timeout_error(timeout)
            if self._state == CANCELLED:
                raise self._cancelled_error()
            if self._state == FAILED:
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
        if self._state == CANCELLED:
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

    # -- async (trio) face; implemented in _async.py ---------------------------

    async def result_async(self, timeout: float | None = None) -> Any:
        """Await the result from a trio task without blocking its loop.

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
            return self._state == CANCELLED
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
            if self._state == CANCELLED:
                return False
            if self._state == PENDING:
                self._state = RUNNING
                return True
            raise RuntimeError(f"Future in unexpected state: {_STATE_NAMES[self._state]}")

    def _revert_to_pending(self) -> bool:
        """A tentative replier declined: the request is looking for one again."""
        with self._lock:
            if self._state == RUNNING:
                self._state = PENDING
                return True
            return False

    def set_result(self, result: Any) -> None:
        """Complete the Future with ``result`` (for repliers and tests).

        Raises:
            concurrent.futures.InvalidStateError: the Future is already done.
        """
        if not self._finish(SUCCEEDED, result, None):
            raise concurrent.futures.InvalidStateError(f"{self!r} is already done")

    def set_exception(self, exception: BaseException | str) -> None:
        """Complete the Future with an exception; a str becomes ``Exception(str)``.

        Raises:
            TypeError: ``exception`` is neither an exception nor a str.
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
            if self._state >= CANCELLED or (only_pending and self._state != PENDING):
                return False
            self._state = state
            self._result = result
            self._exception = exception
            if self._cond is not None:
                self._cond.notify_all()
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
        """
        if not callable(fn):
            raise InvalidArgumentError(f"add_done_callback needs a callable, got {fn!r}")
        with self._lock:
            if self._state < CANCELLED:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        run_event(fn, (self,), {})

    def _add_done_hook(self, fn: Callable[[Future], object]) -> None:
        """Call ``fn(future)`` from whichever thread completes the Future.

        Called at once (in this thread) if the Future is already done. For
        bridges such as the trio face; ``fn`` must be quick and must not block.
        """
        with self._lock:
            if self._state < CANCELLED:
                if self._hooks is None:
                    self._hooks = []
                self._hooks.append(fn)
                return
        run_event(fn, (self,), {})
