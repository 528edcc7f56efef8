"""Tests of the async (trio) face: recv_async, ``async for``, awaiting futures, trio_event_loop.

The tests run under pytest-trio. Contexts are joined over real TCP, so
messages arrive from yoton's engine thread and must cross into the test's trio
thread; one test publishes from a separate process. Waiting is done with trio
primitives and ``trio.testing.wait_all_tasks_blocked`` (the reader is parked),
never with fixed sleeps; the no-polling tests use trio's autojump clock, under
which a polling loop would spin through thousands of rounds.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import yoton
from yoton_core import _async
from yoton_core._eventloop import app

pytestmark = [pytest.mark.trio, pytest.mark.timeout(60)]

GENEROUS = 10.0  # seconds; a deadline for things that take milliseconds


@pytest.fixture
def pair() -> Iterator[tuple[yoton.Context, yoton.Context]]:
    """Two contexts joined over TCP (connected before the trio test starts)."""
    a, b = yoton.Context(), yoton.Context()
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=GENEROUS)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def no_stale_events() -> Iterator[None]:
    """Start with an empty event queue and no embedding; restore none after."""
    app.embed_event_loop(None)
    app.process_events()
    yield
    app.embed_event_loop(None)


async def wait_until(predicate, timeout: float = GENEROUS) -> None:  # type: ignore[no-untyped-def]
    """Check a condition each trio tick-ish (never a fixed sleep as synchronisation)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)


# -- recv_async ------------------------------------------------------------------


async def test_recv_async_returns_pending_message_at_once(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    pub.send("first")
    pub.send("second")
    await wait_until(lambda: sub.pending == 2)
    assert await sub.recv_async() == "first"
    assert await sub.recv_async(timeout=0) == "second"
    assert sub.pending == 0


async def test_recv_async_waits_without_blocking_the_trio_loop(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s", yoton.OBJECT), yoton.SubChannel(b, "s", yoton.OBJECT)
    got = []

    async def reader() -> None:
        got.append(await sub.recv_async())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        # Only returns once every task is parked: the reader waits in trio,
        # not in a blocking call that would hold the whole loop.
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        # Published in another context: it arrives through the engine thread.
        pub.send({"x": [1, 2.5, "é"]})
    assert got == [{"x": [1, 2.5, "é"]}]
    assert sub._async_waiters == []


async def test_recv_async_timeout_returns_empty_message(pair) -> None:
    a, b = pair
    text = yoton.SubChannel(b, "t")
    obj = yoton.SubChannel(b, "o", yoton.OBJECT)
    binary = yoton.SubChannel(b, "b", yoton.BINARY)
    assert await text.recv_async(timeout=0.01) == ""
    assert await obj.recv_async(timeout=0) is None
    assert await binary.recv_async(timeout=0.01) == b""
    assert text._async_waiters == [] and obj._async_waiters == []


async def test_recv_async_argument_errors(pair) -> None:
    _a, b = pair
    sub = yoton.SubChannel(b, "s")
    with pytest.raises(ValueError, match="timeout"):
        await sub.recv_async(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        await sub.recv_async(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout"):
        await sub.recv_async(timeout=True)  # type: ignore[arg-type]


async def test_recv_async_on_closed_channel_returns_at_once(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    pub.send("kept")
    await wait_until(lambda: sub.pending == 1)
    sub.close()
    assert await sub.recv_async() == "kept"  # queued messages stay readable
    assert await sub.recv_async() == ""  # then: closed and empty, no waiting


async def test_close_from_another_thread_wakes_the_waiter(pair) -> None:
    _a, b = pair
    sub = yoton.SubChannel(b, "s")
    result = []

    async def reader() -> None:
        result.append(await sub.recv_async())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await trio.to_thread.run_sync(sub.close)
    assert result == [""]


# -- cancellation ----------------------------------------------------------------


async def test_cancelled_waiter_loses_no_message(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    with trio.move_on_after(0.01) as scope:
        await sub.recv_async()
    assert scope.cancelled_caught
    assert sub._async_waiters == []  # the waiter unregistered itself
    pub.send("after cancel")
    await wait_until(lambda: sub.pending == 1)
    assert await sub.recv_async() == "after cancel"


async def test_cancel_after_wakeup_was_scheduled_keeps_the_message(pair) -> None:
    """The deposit woke the waiter, but it is cancelled before it runs: nothing is lost."""
    a, b = pair
    sub = yoton.SubChannel(b, "s")
    local_pub = yoton.PubChannel(b, "s")  # same context: deposits right here, in this thread
    outcome = []

    async def reader(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        with trio.CancelScope() as scope:
            task_status.started(scope)
            outcome.append(await sub.recv_async())
        outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(reader)
        await trio.testing.wait_all_tasks_blocked()
        local_pub.send("precious")  # fires the wake-up (run_sync_soon) ...
        scope.cancel()  # ... and the cancel lands before the reader runs again
    assert outcome == ["cancelled"]
    assert sub.pending == 1
    assert await sub.recv_async() == "precious"


async def test_timeout_while_message_races_in_keeps_order(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    for i in range(50):
        pub.send(f"m{i}")
    received = []
    with trio.fail_after(GENEROUS):
        while len(received) < 50:
            msg = await sub.recv_async(timeout=0.001)  # often times out mid-stream
            if msg:
                received.append(msg)
    assert received == [f"m{i}" for i in range(50)]


# -- async iteration -------------------------------------------------------------


async def test_async_for_yields_everything_then_ends_on_close(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    got: list[str] = []
    n = 200

    async def reader() -> None:
        async for msg in sub:
            got.append(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(n):
            pub.send(f"m{i}")
        await wait_until(lambda: len(got) == n)
        await trio.to_thread.run_sync(sub.close)  # ends the loop (nursery exits)
    assert got == [f"m{i}" for i in range(n)]


async def test_async_for_drains_the_queue_after_close(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s", yoton.OBJECT), yoton.SubChannel(b, "s", yoton.OBJECT)
    for value in (0, False, "", [], None):  # falsy messages do not end the loop
        pub.send(value)
    await wait_until(lambda: sub.pending == 5)
    sub.close()
    assert [msg async for msg in sub] == [0, False, "", [], None]


async def test_several_async_readers_share_messages_exactly_once(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    got: list[str] = []
    n = 300

    async def reader() -> None:
        async for msg in sub:
            got.append(msg)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(n):
            pub.send(f"m{i}")
        await wait_until(lambda: len(got) == n)
        sub.close()
    assert sorted(got) == sorted(f"m{i}" for i in range(n))
    assert sub._async_waiters == []


async def test_publisher_in_another_process(pair) -> None:
    _a, b = pair
    port = b.bind("localhost:0").port1
    sub = yoton.SubChannel(b, "from-child", yoton.OBJECT)
    script = textwrap.dedent(
        f"""
        import sys, yoton
        ctx = yoton.Context()
        ctx.connect("localhost:{port}", timeout=10)
        pub = yoton.PubChannel(ctx, "from-child", yoton.OBJECT)
        for i in range(100):
            pub.send({{"i": i}})
        pub.send("END")
        ctx.flush()
        sys.stdin.read()  # stay connected until the parent is done
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE)
    try:
        got = []
        with trio.fail_after(30):
            async for msg in sub:
                if msg == "END":
                    break
                got.append(msg["i"])
        assert got == list(range(100))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(GENEROUS) == 0


# -- no polling ----------------------------------------------------------------------


async def test_waiting_reader_does_not_poll(pair, monkeypatch, autojump_clock) -> None:
    """Under the autojump clock a timed polling loop would run thousands of rounds."""
    _a, b = pair
    sub = yoton.SubChannel(b, "s")
    waits = []
    real = _async._wait_for_change

    async def counting(channel):  # type: ignore[no-untyped-def]
        waits.append(1)
        await real(channel)

    monkeypatch.setattr(_async, "_wait_for_change", counting)
    assert await sub.recv_async(timeout=1000) == ""  # 1000 virtual seconds
    assert len(waits) == 1


async def test_trio_event_loop_does_not_poll(no_stale_events, monkeypatch, autojump_clock) -> None:
    rounds = []
    real = app.process_events
    monkeypatch.setattr(app, "process_events", lambda *a: (rounds.append(1), real(*a)))
    async with yoton.trio_event_loop():
        await trio.sleep(1000)  # virtual seconds; no events were posted
        assert rounds == []
        yoton.call_later(lambda: None)
        await wait_until(lambda: len(rounds) == 1)
        await trio.sleep(1000)
    assert len(rounds) == 1


# -- events in trio ---------------------------------------------------------------------


async def test_trio_event_loop_runs_events_in_the_trio_thread(pair, no_stale_events) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    trio_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []
    done = trio.Event()

    def on_received(channel: yoton.SubChannel) -> None:
        calls.append(("received", threading.get_ident()))
        if channel.recv(False) == "last":
            done.set()  # trio.Event.set is allowed: we are in the trio thread

    sub.received.bind(on_received)
    signal = yoton.Signal()
    signal.bind(lambda: calls.append(("signal", threading.get_ident())))
    async with yoton.trio_event_loop():
        pub.send("last")  # arrives through the engine thread
        await trio.to_thread.run_sync(signal.emit)  # emitted from a worker thread
        yoton.call_later(lambda: calls.append(("later", threading.get_ident())), 0.01)
        with trio.fail_after(GENEROUS):
            await done.wait()
        await wait_until(lambda: len(calls) >= 3)
    assert sorted(name for name, _ in calls) == ["later", "received", "signal"]
    assert {ident for _, ident in calls} == {trio_thread}


async def test_trio_event_loop_restores_previous_embedding(no_stale_events) -> None:
    def previous() -> None:
        pass

    yoton.embed_event_loop(previous)
    async with yoton.trio_event_loop():
        assert app._embed_callback is not previous
    assert app._embed_callback is previous


async def test_trio_event_loop_processes_events_already_queued(no_stale_events) -> None:
    ran = trio.Event()
    yoton.call_later(ran.set)  # queued before the loop exists
    async with yoton.trio_event_loop():
        with trio.fail_after(GENEROUS):
            await ran.wait()


async def test_run_event_loop_async_in_a_nursery(no_stale_events) -> None:
    ran = []
    async with trio.open_nursery() as nursery:
        await nursery.start(yoton.run_event_loop_async)
        yoton.call_later(lambda: ran.append(threading.get_ident()))
        await wait_until(lambda: ran)
        nursery.cancel_scope.cancel()
    assert ran == [threading.get_ident()]
    assert app._embed_callback is None


# -- futures ------------------------------------------------------------------------------


def make_replier(context: yoton.Context, mode: str = "thread"):  # type: ignore[no-untyped-def]
    """A RepChannel with a blocking method (released by the returned Event)."""
    release = threading.Event()

    class Replier(yoton.RepChannel):
        def add(self, a, b):  # type: ignore[no-untyped-def]
            return a + b

        def slow(self, value):  # type: ignore[no-untyped-def]
            release.wait(GENEROUS)
            return value

        def divide(self, a, b):  # type: ignore[no-untyped-def]
            return a / b

        def thread_ident(self):  # type: ignore[no-untyped-def]
            return threading.get_ident()

    rep = Replier(context, "calc")
    rep.set_mode(mode)
    return rep, release


async def test_await_future(pair) -> None:
    a, b = pair
    rep, _release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    assert await req.add(3, 4) == 7
    assert await req.add("a", "b").result_async(timeout=GENEROUS) == "ab"
    rep.close()


async def test_await_future_does_not_block_trio(pair) -> None:
    a, b = pair
    rep, release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    results = []

    async def caller() -> None:
        results.append(await req.slow("done"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()  # the caller is parked in trio
        assert results == []
        await trio.to_thread.run_sync(release.set)
    assert results == ["done"]
    rep.close()


async def test_result_async_timeout_and_cancel_keep_the_request(pair) -> None:
    a, b = pair
    rep, release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    future = req.slow(42)
    with pytest.raises(yoton.TimeoutError):
        await future.result_async(timeout=0.05)
    with pytest.raises(TimeoutError):  # also the builtin
        await future.result_async(timeout=0)
    with trio.move_on_after(0.05) as scope:
        await future
    assert scope.cancelled_caught
    assert not future.cancelled()  # cancelling the awaiting task did not cancel the request
    release.set()
    assert await future.result_async(timeout=GENEROUS) == 42
    rep.close()


async def test_await_failed_and_cancelled_futures(pair) -> None:
    a, b = pair
    rep, _release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    with pytest.raises(ZeroDivisionError):
        await req.divide(1, 0)
    rep.close()
    orphan = yoton.ReqChannel(b, "nobody-serves-this")
    future = orphan.anything()
    assert future.cancel()
    with pytest.raises(yoton.CancelledError):
        await future
    with pytest.raises(ValueError, match="timeout"):
        await req.add(1, 2).result_async(timeout=-1)


async def test_rep_event_mode_and_callbacks_run_in_trio_thread(pair, no_stale_events) -> None:
    a, b = pair
    rep, _release = make_replier(a, mode="event")
    req = yoton.ReqChannel(b, "calc")
    trio_thread = threading.get_ident()
    callback_threads = []
    async with yoton.trio_event_loop():
        # The replier's handler runs in yoton's event loop, which is now this thread.
        assert await req.thread_ident() == trio_thread
        future = req.add(1, 1)
        future.add_done_callback(lambda f: callback_threads.append(threading.get_ident()))
        assert await future == 2
        await wait_until(lambda: callback_threads)
    assert callback_threads == [trio_thread]
    rep.close()
