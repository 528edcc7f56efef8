"""The async (trio) face of yoton: await messages and replies, run events in trio.

yoton's IO runs in its own engine thread; a trio program lives in another
thread with its own trio loop. Everything here bridges the two without
blocking the trio loop and without polling:

* A reader that finds its channel empty registers a one-shot wake-up on the
  channel (``BaseChannel._async_waiters``). The engine calls it after the next
  batch of deposits (or when the channel closes), and the wake-up travels to
  the trio thread through trio's own cross-thread mechanism,
  ``TrioToken.run_sync_soon``, where it sets a :class:`trio.Event`.
* Messages stay in the channel's queue until the awaiting task itself pops
  them, so cancelling a waiting task never loses a message.
* :func:`trio_event_loop` embeds yoton's event queue (``embed_event_loop``)
  in the trio loop: each post schedules one ``process_events()`` round in the
  trio thread, so ``received`` signals, Future callbacks and RepChannel event
  mode run there.

The methods ``SubChannel.recv_async``/``__aiter__``/``__anext__`` and
``Future.result_async``/``__await__`` are thin wrappers around the functions
below.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._block import check_timeout
from ._errors import TimeoutError
from ._eventloop import app

if TYPE_CHECKING:
    from ._channels import BaseChannel
    from ._pubsub import SubChannel

__all__ = [
    "future_result_async",
    "recv_item_async",
    "run_event_loop_async",
    "sub_anext",
    "sub_recv_async",
    "trio_event_loop",
]


def _deadline(timeout: object) -> float:
    """A trio deadline for ``timeout`` seconds (None: no deadline)."""
    seconds = check_timeout(timeout, "timeout", none=True)
    return math.inf if seconds is None else trio.current_time() + seconds


def _waker(event: trio.Event) -> Callable[..., None]:
    """A thread-safe callable that sets ``event`` in the current trio thread."""
    token = trio.lowlevel.current_trio_token()

    def wake(*_args: object) -> None:
        try:
            token.run_sync_soon(event.set)
        except trio.RunFinishedError:  # the trio program ended meanwhile
            pass

    return wake


# -- channels -----------------------------------------------------------------


async def _wait_for_change(channel: BaseChannel) -> None:
    """Park until ``channel`` gets deposits or closes (or the task is cancelled)."""
    event = trio.Event()
    wake = _waker(event)
    with channel._cond:
        channel._async_waiters.append(wake)
    try:
        # Registered first, checked second: a deposit that raced with the
        # registration is either seen here or fires the wake-up.
        if channel._queue or channel._closed:
            return
        await event.wait()
    finally:
        with channel._cond:
            try:
                channel._async_waiters.remove(wake)
            except ValueError:  # already fired (and forgotten)
                pass


async def recv_item_async(
    channel: BaseChannel, timeout: float | None = None
) -> tuple[int, bytes] | None:
    """Pop the next inbox item ``(recv_seq, payload)`` of ``channel``, waiting
    without blocking trio.

    Args:
        channel: Any channel.
        timeout: Seconds to wait; None waits until a package arrives or the
            channel closes; 0 does not wait.

    Returns:
        The item, or None when the time ran out or the channel is closed
        and empty.
    """
    deadline = _deadline(timeout)
    await trio.lowlevel.checkpoint_if_cancelled()
    queue = channel._queue
    with trio.move_on_at(deadline):
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                pass
            else:
                # Shielded: a cancellation now must not drop the popped message.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            if channel._closed:
                break
            await _wait_for_change(channel)
    await trio.lowlevel.cancel_shielded_checkpoint()
    return None


async def sub_recv_async(sub: SubChannel, timeout: float | None = None) -> Any:
    """``SubChannel.recv_async``: see there."""
    item = await recv_item_async(sub, timeout)
    sub._check_sync()
    if item is None:
        return sub._message_type.empty_message()
    return sub._decode(item[1])


async def sub_anext(sub: SubChannel) -> Any:
    """``SubChannel.__anext__``: the next message; StopAsyncIteration once closed and drained."""
    item = await recv_item_async(sub, None)
    sub._check_sync()
    if item is None:
        raise StopAsyncIteration
    return sub._decode(item[1])


# -- futures ------------------------------------------------------------------


async def future_result_async(future: Any, timeout: float | None = None) -> Any:
    """``Future.result_async``: wait for the future without blocking trio.

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

    Cancelling the awaiting trio task stops the waiting only; the request
    itself goes on (call ``future.cancel()`` to drop it).
    """
    deadline = _deadline(timeout)
    if not future.done():
        event = trio.Event()
        future._add_done_hook(_waker(event))
        with trio.move_on_at(deadline):
            await event.wait()
        if not future.done():
            raise TimeoutError(f"The request did not complete within {timeout} seconds.")
    else:
        await trio.lowlevel.checkpoint()
    return future.result()


def future_await(future: Any) -> Any:
    """``Future.__await__``: ``await future`` is ``await future.result_async()``."""
    return future_result_async(future).__await__()


# -- the event loop -------------------------------------------------------------


async def run_event_loop_async(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run yoton's events in this trio thread until cancelled.

    Embeds yoton's event queue in the trio loop (see ``embed_event_loop``):
    every posted event schedules one ``process_events()`` round in this task,
    through ``TrioToken.run_sync_soon``, so there is no polling. Signals such
    as ``channel.received``, Future callbacks and RepChannel event mode then
    run in the trio thread, one round at a time. Handlers are plain
    functions: a handler that blocks, blocks the trio loop.

    Start it with ``nursery.start(yoton.run_event_loop_async)``, or use
    :func:`trio_event_loop`. On exit the previous embedding is restored. Run
    only one at a time (a second one replaces the first's embedding).
    """
    wakeup = trio.Event()

    def set_wakeup() -> None:  # trio thread
        wakeup.set()

    token = trio.lowlevel.current_trio_token()

    def on_post() -> None:  # any thread: an event was posted
        try:
            token.run_sync_soon(set_wakeup)
        except trio.RunFinishedError:
            pass

    previous = app._embed_callback
    app.embed_event_loop(on_post)
    try:
        task_status.started()
        while True:
            await wakeup.wait()
            # A fresh event *before* processing: posts made while the round
            # runs set the new one, so none is missed.
            wakeup = trio.Event()
            app.process_events()
    finally:
        if app._embed_callback is on_post:
            app.embed_event_loop(previous)


@asynccontextmanager
async def trio_event_loop() -> AsyncIterator[None]:
    """Run yoton's events in the trio thread while the block runs.

    Example::

        async with yoton.trio_event_loop():
            sub.received.bind(on_received)   # called in this trio thread
            await trio.sleep_forever()

    See :func:`run_event_loop_async` for the details.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(run_event_loop_async)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
