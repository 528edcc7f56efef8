"""The async face of yoton, for trio and asyncio alike: await messages, replies,
connections and flushes, publish under back-pressure, run events in the loop.

yoton's IO runs in its own engine thread; an async program lives in another
thread with its own loop (trio or asyncio, found out at each call, see
``_loops.py``). Everything here bridges the two without blocking the loop and
without polling:

* A reader that finds its channel empty registers a one-shot wake-up on the
  channel (``BaseChannel._async_waiters``). The engine calls it after the next
  batch of deposits (or when the channel closes), and the wake-up travels to
  the program's thread through the loop's own cross-thread call
  (``TrioToken.run_sync_soon`` / ``loop.call_soon_threadsafe``), where it
  resumes the parked task. An idle wait is a parked task: no timer, no CPU.
* Messages stay in the channel's queue until the awaiting task itself pops
  them, with no await between taking one and returning it, so cancelling a
  waiting task never loses a message.
* A Future wakes its awaiting task the same way (a done hook, called by
  whichever thread completes the Future).
* A publisher held by a sync-mode subscriber waits on the same kind of
  wake-up (``PubChannel._sync_async_waiters``); one held by a congested
  connection waits in a worker thread, as do ``connect`` and ``flush``, which
  every transport implements as blocking calls.
* :func:`event_loop_async` embeds yoton's event queue (``embed_event_loop``)
  in the program's loop: each post wakes one task that runs a
  ``process_events()`` round there, so ``received`` signals, Future callbacks
  and RepChannel event mode run in the program's thread.

The public methods (``SubChannel.recv_async``, ``__anext__``,
``PubChannel.send_async``, ``Future.result_async``, ``__await__``,
``Context.connect_async``, ``flush_async``) are thin wrappers around the
functions below.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._block import check_timeout
from ._errors import TimeoutError
from ._eventloop import app
from ._loops import Loop, current_loop, run_blocking

if TYPE_CHECKING:
    from ._channels import BaseChannel
    from ._pubsub import PubChannel, SubChannel

__all__ = [
    "event_loop_async",
    "future_result_async",
    "pub_send_async",
    "recv_item_async",
    "run_blocking",
    "run_event_loop_async",
    "sub_anext",
    "sub_recv_async",
    "trio_event_loop",
]


def _deadline(loop: Loop, timeout: object) -> float:
    """A deadline on ``loop``'s clock for ``timeout`` seconds (None: no deadline)."""
    seconds = check_timeout(timeout, "timeout", none=True)
    return math.inf if seconds is None else loop.now() + seconds


# -- channels -----------------------------------------------------------------


async def _wait_for_change(channel: BaseChannel, loop: Loop, deadline: float) -> None:
    """Park until ``channel`` gets deposits or closes, or ``deadline`` passes
    (or the task is cancelled)."""
    parker = loop.parker()
    wake = parker.wake
    with channel._cond:
        channel._async_waiters.append(wake)
    try:
        # Registered first, checked second: a deposit that raced with the
        # registration is either seen here or fires the wake-up.
        if channel._queue or channel._closed:
            return
        await parker.wait(deadline)
    finally:
        with channel._cond:
            try:
                channel._async_waiters.remove(wake)
            except ValueError:  # already fired (and forgotten)
                pass


async def recv_item_async(channel: BaseChannel, timeout: float | None = None) -> Any:
    """Pop the next payload of ``channel``'s inbox, waiting without blocking the loop.

    Args:
        channel: Any channel.
        timeout: Seconds to wait; None waits until a package arrives or the
            channel closes; 0 does not wait.

    Returns:
        The item, or None when the time ran out or the channel is closed
        and empty.
    """
    loop = current_loop()
    deadline = _deadline(loop, timeout)
    await loop.before_take()
    queue = channel._queue
    while True:
        try:
            item = queue.popleft()
        except IndexError:
            pass
        else:
            await loop.after_take()  # cannot raise: the popped message is never dropped
            return item
        if channel._closed or loop.now() >= deadline:
            break
        await _wait_for_change(channel, loop, deadline)
    await loop.after_take()
    return None


async def sub_recv_async(sub: SubChannel, timeout: float | None = None) -> Any:
    """``SubChannel.recv_async``: see there."""
    item = await recv_item_async(sub, timeout)
    sub._check_sync()
    if item is None:
        return sub._message_type.empty_message()
    return sub._decode(item)


async def sub_anext(sub: SubChannel) -> Any:
    """``SubChannel.__anext__``: the next message; StopAsyncIteration once closed and drained."""
    item = await recv_item_async(sub, None)
    sub._check_sync()
    if item is None:
        raise StopAsyncIteration
    return sub._decode(item)


# -- publishing under back-pressure ----------------------------------------------


async def pub_send_async(pub: PubChannel, message: Any) -> None:
    """``PubChannel.send_async``: wait (in the loop) while the publisher is held, then send.

    Two things hold a publisher: a full sync-mode subscriber (waited for with
    a wake-up from the engine, like a reader) and a congested connection (an
    outgoing queue over its high-water mark; waited for in a worker thread,
    because each transport has its own way to say it drained, and, as in
    send(), for at most the transport's back-pressure timeout, after which
    the queue's discard policy applies). A cancelled send_async sent nothing.
    """
    from . import _sync_pub

    loop = current_loop()
    await loop.checkpoint()  # (a cancellation here: nothing was sent)
    started = time.monotonic()
    while (pub._sync_blocked or pub._sync_windows) and not pub._closed:
        # Seconds until a silent subscriber's lock or window expires; None: go.
        left = _sync_pub.pub_held(pub, started)
        if left is None:
            break
        await _wait_for_sync(pub, loop, loop.now() + left, started)
    ctx = pub._context
    if ctx._congestion and any(c.congested for c in ctx._connected):
        # What send() would wait for (at most the transport's back-pressure
        # timeout per congested connection), waited for off the loop.
        await run_blocking(ctx._ease_congestion)
    pub.send(message)  # (raises on a closed channel, as send does)


async def _wait_for_sync(pub: PubChannel, loop: Loop, deadline: float, started: float) -> None:
    """Park until the sync-mode locks or windows of ``pub`` change or ``deadline`` passes."""
    from . import _sync_pub

    parker = loop.parker()
    wake = parker.wake
    with pub._sync_cond:
        pub._sync_async_waiters.append(wake)
    try:
        # (registered first, checked second)
        if pub._closed or _sync_pub.pub_held(pub, started) is None:
            return
        await parker.wait(deadline)
    finally:
        with pub._sync_cond:
            try:
                pub._sync_async_waiters.remove(wake)
            except ValueError:
                pass


# -- futures ------------------------------------------------------------------


async def future_result_async(future: Any, timeout: float | None = None) -> Any:
    """``Future.result_async``: wait for the future without blocking the loop.

    Args:
        future: A yoton Future.
        timeout: Seconds to wait; None waits as long as it takes.

    Returns:
        The result.

    Raises:
        yoton.TimeoutError: not done within ``timeout`` (the request goes on;
            await it again, or cancel it).
        yoton.CancelledError: the future was cancelled.
        Exception: whatever the request raised remotely.

    Cancelling the awaiting task stops the waiting only; the request itself
    goes on (call ``future.cancel()`` to drop it).
    """
    loop = current_loop()
    deadline = _deadline(loop, timeout)
    if not future.done():
        parker = loop.parker()
        wake = parker.wake
        future._add_done_hook(wake)
        try:
            await parker.wait(deadline)
        finally:  # timed out or cancelled: a waiter that gave up leaves nothing behind
            future._remove_done_hook(wake)
        if not future.done():
            raise TimeoutError(f"The request did not complete within {timeout} seconds.")
    else:
        await loop.before_take()
    return future.result()


def future_await(future: Any) -> Any:
    """``Future.__await__``: ``await future`` is ``await future.result_async()``."""
    return future_result_async(future).__await__()


# -- the event loop -------------------------------------------------------------


async def run_event_loop_async(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run yoton's events in this event loop (trio or asyncio) until cancelled.

    Embeds yoton's event queue in the loop (see ``embed_event_loop``): every
    posted event wakes this task through the loop's thread-safe call, and it
    runs one ``process_events()`` round; there is no polling. Signals such as
    ``channel.received``, Future callbacks and RepChannel event mode then run
    in the program's thread, one round at a time. Handlers are plain
    functions: a handler that blocks, blocks the loop.

    Under trio, start it with ``nursery.start(yoton.run_event_loop_async)``;
    under either loop, :func:`event_loop_async` runs it beside a block. On
    exit the previous embedding is restored. Run only one at a time (a second
    one replaces the first's embedding).
    """
    wakeup = current_loop().parker()
    previous = app._embed_callback
    app.embed_event_loop(wakeup.wake)
    try:
        task_status.started()
        while True:
            await wakeup.wait()
            # Cleared *before* processing: posts made while the round runs
            # set it again, so none is missed.
            wakeup.clear()
            app.process_events()
    finally:
        if app._embed_callback == wakeup.wake:
            app.embed_event_loop(previous)


class _Started:
    """``task_status`` for asyncio: resolves a future when the task has started."""

    def __init__(self, fut: Any) -> None:
        self._fut = fut

    def started(self, value: Any = None) -> None:
        if not self._fut.done():
            self._fut.set_result(value)


@asynccontextmanager
async def event_loop_async() -> AsyncIterator[None]:
    """Run yoton's events in this event loop (trio or asyncio) while the block runs.

    Example::

        async with yoton.event_loop_async():
            sub.received.bind(on_received)   # called in this thread, by the loop
            ...

    See :func:`run_event_loop_async` for the details.
    """
    if current_loop().name == "trio":
        async with trio.open_nursery() as nursery:
            await nursery.start(run_event_loop_async)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
        return
    import asyncio

    aloop = asyncio.get_running_loop()
    started = aloop.create_future()
    task = aloop.create_task(run_event_loop_async(task_status=_Started(started)))
    try:
        await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises whatever ended it before it started
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])  # (not ``await task``: its cancellation is not ours)


#: The name yoton 3.0's first async face had; works under asyncio too.
trio_event_loop = event_loop_async
"""The first name of :func:`event_loop_async`, kept for programs that use it."""
