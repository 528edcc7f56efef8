"""The few things the async face needs from the running event loop, for trio and asyncio.

yoton's IO runs in its own engine thread; an async program lives in another
thread with its own loop, trio or asyncio, found out at each call with
:mod:`sniffio` (which trio brings). The async face (``_async.py``) is written
once against the small interface below, which each loop implements with its
own primitives:

* a :class:`Parker` that a task waits on and *any* thread wakes, through the
  loop's own thread-safe call (``TrioToken.run_sync_soon`` /
  ``loop.call_soon_threadsafe``): an idle wait is a task parked in the loop,
  with no timer and no polling;
* the clock deadlines are measured on (``trio.current_time()`` /
  ``loop.time()``, so trio's virtual clocks work too);
* the checkpoints around taking an item, placed so that a cancellation can
  never land between taking a message and handing it to the caller;
* running a blocking call in a worker thread (connect and flush, which every
  transport implements as blocking calls).

Why not anyio: it would be one more dependency for what is a hundred lines
here, and yoton's needs (a cross-thread wake-up and two checkpoints) are
narrower than a portability layer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import sniffio
import trio

__all__ = ["Loop", "Parker", "current_loop", "run_blocking"]


class Parker:
    """A flag that one task waits on and any thread sets (interface)."""

    def wake(self, *_args: object) -> None:
        """Set the flag; thread-safe, never blocks, harmless after the loop ended."""
        raise NotImplementedError

    def clear(self) -> None:
        """Reset the flag (loop thread)."""
        raise NotImplementedError

    async def wait(self, deadline: float = math.inf) -> None:
        """Return once the flag is set or the loop's clock passes ``deadline``."""
        raise NotImplementedError


class Loop:
    """What the async face needs of a running event loop (interface)."""

    name = ""

    def now(self) -> float:
        raise NotImplementedError

    def parker(self) -> Parker:
        raise NotImplementedError

    async def checkpoint(self) -> None:
        """A schedule point that may raise cancellation."""
        raise NotImplementedError

    async def before_take(self) -> None:
        """A checkpoint before an item is taken: may raise cancellation."""
        raise NotImplementedError

    async def after_take(self) -> None:
        """A checkpoint after an item was taken: must not raise cancellation."""
        raise NotImplementedError

    async def to_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in a worker thread; a cancelled caller stops waiting at once."""
        raise NotImplementedError


# -- trio -------------------------------------------------------------------------


class _TrioParker(Parker):
    __slots__ = ("_event", "_token")

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._event = trio.Event()

    def wake(self, *_args: object) -> None:
        try:
            self._token.run_sync_soon(self._set)
        except trio.RunFinishedError:  # the trio program ended meanwhile
            pass

    def _set(self) -> None:
        self._event.set()  # (the current event: one made by clear() after wake() counts too)

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self, deadline: float = math.inf) -> None:
        with trio.move_on_at(deadline):
            await self._event.wait()


class _Trio(Loop):
    name = "trio"

    def now(self) -> float:
        return trio.current_time()

    def parker(self) -> Parker:
        return _TrioParker()

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    async def before_take(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()

    async def after_take(self) -> None:
        # A schedule point (trio's rule: every async call is a checkpoint)
        # that a cancellation cannot interrupt: the item is ours already.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def to_thread(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


# -- asyncio ----------------------------------------------------------------------


def _resolve(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


class _AsyncioParker(Parker):
    __slots__ = ("_fut", "_loop", "_set_flag")

    def __init__(self) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._set_flag = False
        self._fut: Any = None

    def wake(self, *_args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._set)
        except RuntimeError:  # the loop is closed: the program ended meanwhile
            pass

    def _set(self) -> None:
        self._set_flag = True
        fut = self._fut
        if fut is not None:
            _resolve(fut)

    def clear(self) -> None:
        self._set_flag = False

    async def wait(self, deadline: float = math.inf) -> None:
        if self._set_flag:
            return
        loop = self._loop
        fut = self._fut = loop.create_future()
        timer = loop.call_at(deadline, _resolve, fut) if deadline != math.inf else None
        try:
            await fut
        finally:
            self._fut = None
            if timer is not None:
                timer.cancel()


class _Asyncio(Loop):
    name = "asyncio"

    def now(self) -> float:
        import asyncio

        return asyncio.get_running_loop().time()

    def parker(self) -> Parker:
        return _AsyncioParker()

    async def checkpoint(self) -> None:
        import asyncio

        await asyncio.sleep(0)

    async def before_take(self) -> None:
        import asyncio

        # asyncio's rule is the opposite of trio's (a call returns without
        # yielding when it can), but a channel filled by another thread may
        # never be empty: yield here, before anything is taken, so that such
        # a reader cannot starve the other tasks, and a cancellation that
        # lands here costs nothing.
        await asyncio.sleep(0)

    async def after_take(self) -> None:
        pass  # no await between taking the item and returning it

    async def to_thread(self, fn: Callable[[], Any]) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, fn)


_LOOPS: dict[str, Loop] = {"trio": _Trio(), "asyncio": _Asyncio()}


def current_loop() -> Loop:
    """The running event loop of this thread, as a :class:`Loop`.

    Raises:
        RuntimeError: not called from a trio or asyncio task (the message says
            what to do).
    """
    try:
        name = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "yoton's async API must be awaited inside a trio or asyncio program "
            "(no running event loop found in this thread); use the blocking "
            "call (recv, result, connect, flush) outside one."
        ) from None
    loop = _LOOPS.get(name)
    if loop is None:
        raise RuntimeError(
            f"yoton's async API runs under trio or asyncio, not {name!r}; "
            "use the blocking calls in a worker thread."
        )
    return loop


class _Handoff:
    """Hands a worker thread's result to its caller, or cleans it up once the
    caller is gone (cancelled while the thread still ran)."""

    __slots__ = ("_abandoned", "_cleanup", "_done", "_fn", "_lock", "_result")

    def __init__(self, fn: Callable[[], Any], cleanup: Callable[[Any], object] | None) -> None:
        self._fn = fn
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._done = False
        self._abandoned = False
        self._result: Any = None

    def run(self) -> Any:  # the worker thread
        result = self._fn()
        with self._lock:
            self._result = result
            self._done = True
            abandoned = self._abandoned
        if abandoned and self._cleanup is not None:
            self._cleanup(result)
        return result

    def abandon(self) -> None:  # the caller, which will not take the result
        with self._lock:
            self._abandoned = True
            done = self._done
        if done and self._cleanup is not None:
            self._cleanup(self._result)


async def run_blocking(
    fn: Callable[[], Any], cleanup: Callable[[Any], object] | None = None
) -> Any:
    """Await the blocking ``fn()`` run in a worker thread of the current loop.

    A cancelled caller stops waiting at once; the thread runs on until ``fn``
    returns (a blocking call cannot be interrupted), and then ``cleanup(result)``
    undoes what nobody will use (e.g. closes a connection made meanwhile).
    """
    loop = current_loop()
    handoff = _Handoff(fn, cleanup)
    try:
        return await loop.to_thread(handoff.run)
    except BaseException:
        handoff.abandon()  # (if fn itself raised, there is nothing to clean up)
        raise
