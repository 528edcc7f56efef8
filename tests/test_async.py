"""Tests of the async face under both loops: recv_async, ``async for``,
awaiting futures, send_async, connect_async / flush_async, event_loop_async.

Every test marked ``anyio`` runs twice, under asyncio and under trio (anyio's
pytest plugin; the test bodies use anyio's portable primitives). Contexts are
joined over real TCP, so messages arrive from yoton's engine thread and must
cross into the test's loop thread; one test publishes from a separate process.
Waiting is done with the loop's primitives and ``anyio.wait_all_tasks_blocked``
(the reader is parked), never with fixed sleeps. The no-polling tests are per
loop: trio's autojump clock (a polling loop would spin through thousands of
rounds) and asyncio's selector (an idle loop with nothing scheduled sleeps in
``select(None)``; a polling one never does).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import anyio
import pytest
import trio
import trio.testing

import yoton
from yoton_core import _async
from yoton_core._eventloop import app

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

GENEROUS = 10.0  # seconds; a deadline for things that take milliseconds


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every test of this module under both loops."""
    return str(request.param)


@pytest.fixture
def pair() -> Iterator[tuple[yoton.Context, yoton.Context]]:
    """Two contexts joined over TCP (connected before the async test starts)."""
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


async def wait_until(predicate, timeout: float = GENEROUS) -> None:
    """Check a condition each tick-ish (never a fixed sleep as synchronisation)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


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


async def test_recv_async_waits_without_blocking_the_loop(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s", yoton.OBJECT), yoton.SubChannel(b, "s", yoton.OBJECT)
    got = []

    async def reader() -> None:
        got.append(await sub.recv_async())

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(reader)
        # Only returns once every task is parked: the reader waits in the loop,
        # not in a blocking call that would hold the whole loop.
        await anyio.wait_all_tasks_blocked()
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
        await sub.recv_async(timeout=True)


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

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(sub.close)
    assert result == [""]


# -- cancellation ----------------------------------------------------------------


async def test_cancelled_waiter_loses_no_message(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    with anyio.move_on_after(0.01) as scope:
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

    async def reader(task_status=anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            outcome.append(await sub.recv_async())
        outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")

    async with anyio.create_task_group() as nursery:
        scope = await nursery.start(reader)
        await anyio.wait_all_tasks_blocked()
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
    received: list[str] = []
    with anyio.fail_after(GENEROUS):
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

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(reader)
        for i in range(n):
            pub.send(f"m{i}")
        await wait_until(lambda: len(got) == n)
        await anyio.to_thread.run_sync(sub.close)  # ends the loop (nursery exits)
    assert got == [f"m{i}" for i in range(n)]


async def test_async_for_drains_the_queue_after_close(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s", yoton.OBJECT), yoton.SubChannel(b, "s", yoton.OBJECT)
    value: object
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
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as nursery:
        for _ in range(3):
            nursery.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
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
        with anyio.fail_after(30):
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
# Per loop: trio's virtual clock (autojump), asyncio's selector.

trio_autojump = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")],
)


@trio_autojump
async def test_trio_waiting_reader_does_not_poll(pair, monkeypatch) -> None:
    """Under the autojump clock a timed polling loop would run thousands of rounds."""
    _a, b = pair
    sub = yoton.SubChannel(b, "s")
    waits = []
    real = _async._wait_for_change

    async def counting(channel, loop, deadline):
        waits.append(1)
        await real(channel, loop, deadline)

    monkeypatch.setattr(_async, "_wait_for_change", counting)
    assert await sub.recv_async(timeout=1000) == ""  # 1000 virtual seconds
    assert len(waits) == 1


@trio_autojump
async def test_trio_event_loop_does_not_poll(no_stale_events, monkeypatch) -> None:
    rounds: list[int] = []
    real = app.process_events

    def counted(*a):
        rounds.append(1)
        real(*a)

    monkeypatch.setattr(app, "process_events", counted)
    async with yoton.event_loop_async():
        await trio.sleep(1000)  # virtual seconds; no events were posted
        assert rounds == []
        yoton.call_later(lambda: None)
        with trio.fail_after(GENEROUS):
            while len(rounds) < 1:
                await trio.sleep(0.001)
        await trio.sleep(1000)
    assert len(rounds) == 1


def watch_asyncio_idle() -> threading.Event:
    """Set the returned Event once the running asyncio loop sleeps in ``select(None)``:
    nothing ready and no timer at all, the state a parked task leaves it in. A
    loop that polls always has a timer, so it never gets there."""
    import asyncio

    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    real = selector.select
    idle = threading.Event()

    def select(timeout=None):
        if timeout is None:
            idle.set()
        return real(timeout)

    selector.select = select
    return idle


def after(event: threading.Event, action) -> threading.Thread:
    """Run ``action()`` in a thread once ``event`` is set (or after GENEROUS seconds)."""

    def run() -> None:
        event.wait(GENEROUS)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_waiting_reader_does_not_poll(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    idle = watch_asyncio_idle()
    thread = after(idle, lambda: pub.send("woken"))  # from another context, through TCP
    assert await sub.recv_async() == "woken"
    assert idle.is_set()  # the loop slept with no timer while the reader waited
    thread.join()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_event_loop_does_not_poll(no_stale_events, monkeypatch) -> None:
    rounds: list[int] = []
    real = app.process_events

    def counted(*a):
        rounds.append(1)
        real(*a)

    monkeypatch.setattr(app, "process_events", counted)
    ran = anyio.Event()
    async with yoton.event_loop_async():
        idle = watch_asyncio_idle()
        thread = after(idle, lambda: yoton.call_later(ran.set))  # posted from another thread
        await ran.wait()  # (no fail_after: its timer would keep the loop from select(None))
        assert idle.is_set() and rounds == [1]
        thread.join()


# -- events in the loop ---------------------------------------------------------------------


async def test_event_loop_async_runs_events_in_the_loop_thread(pair, no_stale_events) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    loop_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []
    done = anyio.Event()

    def on_received(channel: yoton.SubChannel) -> None:
        calls.append(("received", threading.get_ident()))
        if channel.recv(False) == "last":
            done.set()  # allowed: we are in the loop's thread

    sub.received.bind(on_received)
    signal = yoton.Signal()
    signal.bind(lambda: calls.append(("signal", threading.get_ident())))
    async with yoton.event_loop_async():
        pub.send("last")  # arrives through the engine thread
        await anyio.to_thread.run_sync(signal.emit)  # emitted from a worker thread
        yoton.call_later(lambda: calls.append(("later", threading.get_ident())), 0.01)
        with anyio.fail_after(GENEROUS):
            await done.wait()
        await wait_until(lambda: len(calls) >= 3)
    assert sorted(name for name, _ in calls) == ["later", "received", "signal"]
    assert {ident for _, ident in calls} == {loop_thread}


async def test_trio_event_loop_is_the_same_and_works_under_both(no_stale_events) -> None:
    # (under asyncio it raised AttributeError: 'RunContext' object has no attribute 'runner')
    assert yoton.trio_event_loop is yoton.event_loop_async
    ran = anyio.Event()
    async with yoton.trio_event_loop():
        yoton.call_later(ran.set)
        with anyio.fail_after(GENEROUS):
            await ran.wait()


async def test_event_loop_async_restores_previous_embedding(no_stale_events) -> None:
    def previous() -> None:
        pass

    yoton.embed_event_loop(previous)
    async with yoton.event_loop_async():
        assert app._embed_callback is not previous
    assert app._embed_callback is previous


async def test_event_loop_async_processes_events_already_queued(no_stale_events) -> None:
    ran = anyio.Event()
    yoton.call_later(ran.set)  # queued before the loop exists
    async with yoton.event_loop_async():
        with anyio.fail_after(GENEROUS):
            await ran.wait()


async def test_run_event_loop_async_in_a_nursery(no_stale_events) -> None:
    ran = []
    async with anyio.create_task_group() as nursery:
        await nursery.start(yoton.run_event_loop_async)
        yoton.call_later(lambda: ran.append(threading.get_ident()))
        await wait_until(lambda: ran)
        nursery.cancel_scope.cancel()
    assert ran == [threading.get_ident()]
    assert app._embed_callback is None


# -- futures ------------------------------------------------------------------------------


def make_replier(context: yoton.Context, mode: str = "thread"):
    """A RepChannel with a blocking method (released by the returned Event)."""
    release = threading.Event()

    class Replier(yoton.RepChannel):
        def add(self, a, b):
            return a + b

        def slow(self, value):
            release.wait(GENEROUS)
            return value

        def divide(self, a, b):
            return a / b

        def thread_ident(self):
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


async def test_await_future_does_not_block_the_loop(pair) -> None:
    a, b = pair
    rep, release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    results = []

    async def caller() -> None:
        results.append(await req.slow("done"))

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(caller)
        await anyio.wait_all_tasks_blocked()  # the caller is parked in the loop
        assert results == []
        await anyio.to_thread.run_sync(release.set)
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
    with anyio.move_on_after(0.05) as scope:
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


async def test_rep_event_mode_and_callbacks_run_in_the_loop_thread(pair, no_stale_events) -> None:
    a, b = pair
    rep, _release = make_replier(a, mode="event")
    req = yoton.ReqChannel(b, "calc")
    loop_thread = threading.get_ident()
    callback_threads = []
    async with yoton.event_loop_async():
        # The replier's handler runs in yoton's event loop, which is now this thread.
        assert await req.thread_ident() == loop_thread
        future = req.add(1, 1)
        future.add_done_callback(lambda f: callback_threads.append(threading.get_ident()))
        assert await future == 2
        await wait_until(lambda: callback_threads)
    assert callback_threads == [loop_thread]
    rep.close()


# -- send_async -----------------------------------------------------------------------------


async def test_send_async_waits_for_a_full_sync_mode_subscriber_in_the_loop(pair) -> None:
    """Producer and consumer share one loop: a send that blocked the thread while
    the subscriber is full would stop the consumer too, and nothing would move."""
    a, b = pair
    # An inbox of 1,000 gives the publisher a window of a few hundred, which
    # holds it back however late the subscriber's "full" is (with the default
    # 10,000 all 3,000 fit in the window, and a "full" that came late on a
    # loaded machine left the publisher never held).
    b.queue_params = (1000, "old")
    pub, sub = yoton.PubChannel(a, "s", yoton.OBJECT), yoton.SubChannel(b, "s", yoton.OBJECT)
    sub.set_sync_mode(True)
    await wait_until(lambda: pub._sync_windows)  # the subscriber's announcement
    n = 3000  # many times the high-water mark (256)
    got: list[int] = []
    held = []
    real = _async._wait_for_sync

    async def counting(*args):
        held.append(1)
        await real(*args)

    async def consumer() -> None:
        async for msg in sub:
            got.append(msg)
            if len(got) == n:
                return
            if len(got) % 500 == 0:  # a slow reader now and then: the publisher must wait
                await wait_until(lambda: pub._sync_blocked)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_async, "_wait_for_sync", counting)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer)
                for i in range(n):
                    await pub.send_async(i)
    assert got == list(range(n))  # nothing lost, in order
    assert held  # the publisher was held, and waited in the loop ...
    assert getattr(pub, "_sync_waits", 0) == 0  # ... never in send()'s blocking wait


async def test_send_async_cancelled_while_held_sends_nothing(pair) -> None:
    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    pub._sync_blocked[12345] = float("inf")  # a full subscriber that never says "ok"
    with anyio.move_on_after(0.05) as scope:
        await pub.send_async("never")
    assert scope.cancelled_caught and pub._sync_async_waiters == []
    del pub._sync_blocked[12345]
    await pub.send_async("after")
    assert await sub.recv_async(timeout=GENEROUS) == "after"
    assert sub.pending == 0


async def test_send_async_is_woken_when_the_channel_closes(pair) -> None:
    a, _b = pair
    pub = yoton.PubChannel(a, "s")
    pub._sync_blocked[12345] = float("inf")
    errors: list[BaseException] = []

    async def sender() -> None:
        try:
            await pub.send_async("x")
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(pub.close)  # wakes it; then send raises
    assert len(errors) == 1 and "closed" in str(errors[0])


CONGESTED_PEER = textwrap.dedent(
    """
    import sys, yoton
    ctx = yoton.Context()
    ctx.connect(sys.argv[1], timeout=10)
    sub = yoton.SubChannel(ctx, "bulk", yoton.BINARY)
    print("READY", flush=True)
    n = 0
    while n < int(sys.argv[2]):
        if sub.recv(10):
            n += 1
    print("GOT", n, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGSTOP"), reason="needs SIGSTOP")
async def test_send_async_waits_for_a_congested_connection_off_the_loop(contexts) -> None:
    import os
    import signal

    ctx = contexts()
    conn = ctx.bind("localhost:0")
    n = 6000  # beyond the outgoing queue's high-water mark (4096 packages)
    child = subprocess.Popen(
        [sys.executable, "-c", CONGESTED_PEER, f"localhost:{conn.port1}", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "READY"
        pub = yoton.PubChannel(ctx, "bulk", yoton.BINARY)
        loop_thread = threading.get_ident()
        eased: list[bool] = []
        real = ctx._ease_congestion

        def spy() -> None:  # note the calls that may wait (send's own calls do not)
            if any(c.congested for c in ctx._connected):
                eased.append(threading.get_ident() == loop_thread)
            real()

        ctx._ease_congestion = spy
        os.kill(child.pid, signal.SIGSTOP)  # the peer reads nothing: the queue fills
        try:
            with anyio.fail_after(60):
                for i in range(n):
                    if i == 5000:
                        os.kill(child.pid, signal.SIGCONT)
                    await pub.send_async(i.to_bytes(4, "big") + b"x" * 4096)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        assert eased and not any(eased)  # it waited for the drain, never in the loop's thread
        await ctx.flush_async(GENEROUS * 3)
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line.split() == ["GOT", str(n)]
    finally:
        child.kill()
        child.wait()


# -- connect_async / flush_async ------------------------------------------------------------


async def test_connect_async_and_flush_async(contexts) -> None:
    a, b = contexts(2)
    port = a.bind("localhost:0").port1
    conn = await b.connect_async(f"localhost:{port}", timeout=GENEROUS)
    assert conn.is_connected and b.connection_count == 1
    pub, sub = yoton.PubChannel(b, "s"), yoton.SubChannel(a, "s")
    for i in range(100):
        pub.send(f"m{i}")
    assert await b.flush_async() is True
    assert [await sub.recv_async(GENEROUS) for _ in range(100)] == [f"m{i}" for i in range(100)]


async def test_connect_async_errors_are_those_of_connect(contexts) -> None:
    ctx = contexts()
    with pytest.raises(OSError, match="1025"):
        await ctx.connect_async("localhost:1025", timeout=0.1)  # nobody listens there
    with pytest.raises(ValueError, match="99999"):
        await ctx.connect_async("localhost:99999")
    with pytest.raises(ValueError, match="tpc"):
        await ctx.connect_async("tpc://localhost:5000")
    assert ctx.connection_count == 0


async def test_cancelled_connect_async_closes_the_late_connection(contexts) -> None:
    a, b = contexts(2)
    with anyio.move_on_after(0.05) as scope:
        # inproc's connect waits for the name to be bound
        await b.connect_async("inproc://late-async", timeout=GENEROUS)
    assert scope.cancelled_caught
    conn = a.bind("inproc://late-async")  # now the abandoned connect completes ...
    await wait_until(lambda: conn.close_reason is not None)  # ... and is closed again
    assert b.connection_count == 0 and a.connection_count == 0


# -- outside an event loop; asyncio's own tools ------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_tools_work_with_the_async_face(pair) -> None:
    import asyncio

    a, b = pair
    pub, sub = yoton.PubChannel(a, "s"), yoton.SubChannel(b, "s")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.recv_async(), 0.05)  # cancels the reader: nothing lost
    pub.send("kept")
    assert await asyncio.wait_for(sub.recv_async(), GENEROUS) == "kept"
    rep, _release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    done, _ = await asyncio.wait([asyncio.ensure_future(req.add(2, 3).result_async())])
    assert done.pop().result() == 5
    rep.close()


def test_async_calls_outside_an_event_loop_say_what_to_do(pair) -> None:
    _a, b = pair
    coro = yoton.SubChannel(b, "s").recv_async()
    with pytest.raises(RuntimeError, match="inside a trio or asyncio program"):
        coro.send(None)


async def test_awaits_that_give_up_leave_no_hook_behind(pair) -> None:
    a, b = pair
    rep, release = make_replier(a)
    req = yoton.ReqChannel(b, "calc")
    future = req.slow(1)
    for _ in range(3):
        with pytest.raises(yoton.TimeoutError):
            await future.result_async(timeout=0.01)
        with anyio.move_on_after(0.01):
            await future
    assert not future._hooks  # each waiter removed its wake-up
    release.set()
    assert await future == 1
    rep.close()
