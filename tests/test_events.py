"""Tests of the event system: Signal, Timer, the timer thread and the event loop.

All tests use real threads. Nothing synchronises with fixed sleeps: we wait on
threading.Event objects or pump the event queue until a condition holds (with a
generous deadline). Where "nothing happened" must be shown, a second timer
started later acts as the clock: once it has fired, the first would have too.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator

import pytest

from yoton_core import _events as ev
from yoton_core._timers import TimerHandle, TimerScheduler, scheduler
from yoton_core.testing import wait_for

GENEROUS = 5.0  # seconds; a deadline for conditions that should hold in milliseconds


def pump_until(predicate: Callable[[], bool], timeout: float = GENEROUS) -> None:
    """Process events (waiting for them, not sleeping) until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        ev.process_events(0.02)


@pytest.fixture(autouse=True)
def clean_loop() -> Iterator[None]:
    """Each test starts and ends with an empty queue and no embedding."""
    ev.embed_event_loop(None)
    ev.process_events()
    yield
    ev.embed_event_loop(None)
    ev.process_events()


class Recorder:
    """A handler object with a bound method, to test weak references."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def on_event(self, *args: object) -> None:
        self.calls.append(args)

    def __private(self, *args: object) -> None:
        self.calls.append(("private", *args))

    def bind_private(self, signal: ev.Signal) -> None:
        signal.bind(self.__private)


# -- Signal --------------------------------------------------------------------


def test_bind_rejects_non_callable_with_both_error_types() -> None:
    s = ev.Signal()
    with pytest.raises(TypeError, match="callable"):
        s.bind(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callable"):
        s.bind("not a function")  # type: ignore[arg-type]
    assert not s.has_handlers


def test_type_is_the_class() -> None:
    assert ev.Signal().type is ev.Signal
    assert ev.Timer().type is ev.Timer


def test_duplicate_bind_is_ignored_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = ev.Signal()
    calls: list[int] = []

    def handler(x: int) -> None:
        calls.append(x)

    rec = Recorder()
    s.bind(handler)
    s.bind(rec.on_event)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        s.bind(handler)
        s.bind(rec.on_event)  # a new bound-method object, same handler
    assert sum("already bound" in r.getMessage() for r in caplog.records) == 2
    s.emit_now(1)
    assert calls == [1]
    assert rec.calls == [(1,)]


def test_unbind_one_and_all() -> None:
    s = ev.Signal()
    calls: list[str] = []
    rec = Recorder()

    def a() -> None:
        calls.append("a")

    def b() -> None:
        calls.append("b")

    s.bind(a)
    s.bind(b)
    s.bind(rec.on_event)
    s.unbind(a)
    s.unbind(rec.on_event)
    s.unbind(lambda: None)  # not bound: ignored
    s.emit_now()
    assert calls == ["b"]
    assert rec.calls == []
    s.unbind()
    assert not s.has_handlers
    s.emit_now()
    assert calls == ["b"]


def test_emit_posts_events_that_run_in_process_events() -> None:
    s = ev.Signal()
    got: list[tuple[object, ...]] = []
    s.bind(lambda *a, **k: got.append((a, k)))
    s.emit(1, 2, key="v")
    assert got == []
    assert ev.app.statistics().queued == 1
    ev.process_events()
    assert got == [((1, 2), {"key": "v"})]


def test_emit_without_handlers_posts_nothing() -> None:
    s = ev.Signal()
    before = ev.app.statistics()
    s.emit(1)
    assert ev.app.statistics() == before


def test_handler_exception_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for attr in ("last_type", "last_value", "last_traceback"):
        if hasattr(sys, attr):
            delattr(sys, attr)
    s = ev.Signal()
    calls: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    s.bind(bad)
    s.bind(lambda: calls.append("good"))
    with caplog.at_level(logging.ERROR, logger="yoton"):
        s.emit()
        ev.process_events()
        s.emit_now()
    assert calls == ["good", "good"]
    errors = [r for r in caplog.records if "Exception while handling event" in r.getMessage()]
    assert len(errors) == 2
    assert all("bad" in r.getMessage() for r in errors)
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)
    assert not hasattr(sys, "last_value")  # defect 22: never touch sys.last_*


def test_base_exceptions_propagate() -> None:
    s = ev.Signal()

    def interrupt() -> None:
        raise KeyboardInterrupt

    s.bind(interrupt)
    with pytest.raises(KeyboardInterrupt):
        s.emit_now()


def test_bound_method_is_weak_and_disappears() -> None:
    s = ev.Signal()
    rec = Recorder()
    s.bind(rec.on_event)
    s.emit_now(1)
    assert rec.calls == [(1,)]
    ref = weakref.ref(rec)
    del rec
    gc.collect()
    assert ref() is None  # the signal did not keep it alive
    before = ev.app.statistics().queued
    s.emit(2)
    assert ev.app.statistics().queued == before  # no event for a dead handler
    assert not s.has_handlers  # pruned


def test_queued_event_does_not_keep_handler_object_alive() -> None:
    s = ev.Signal()
    rec = Recorder()
    s.bind(rec.on_event)
    s.emit(1)
    ref = weakref.ref(rec)
    del rec
    gc.collect()
    assert ref() is None
    ev.process_events()  # the event finds its handler gone and does nothing


def test_functions_and_lambdas_are_held_strongly() -> None:
    s = ev.Signal()
    calls: list[int] = []
    s.bind(lambda: calls.append(1))
    gc.collect()
    s.emit_now()
    assert calls == [1]


def test_bound_method_is_looked_up_at_call_time() -> None:
    s = ev.Signal()
    rec = Recorder()
    s.bind(rec.on_event)
    replaced: list[object] = []
    rec.on_event = lambda *a: replaced.append(a)  # type: ignore[method-assign]
    s.emit_now(5)
    assert replaced == [(5,)]
    assert rec.calls == []


def test_private_and_unweakrefable_bound_methods() -> None:
    s = ev.Signal()
    rec = Recorder()
    rec.bind_private(s)
    s.emit_now(3)
    assert rec.calls == [("private", 3)]

    class Slotted:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 0

        def bump(self) -> None:
            self.n += 1

    obj = Slotted()
    s2 = ev.Signal()
    s2.bind(obj.bump)  # cannot be weakly referenced: held strongly instead
    s2.emit_now()
    assert obj.n == 1


# -- Timer ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 0.0, "1", None, True, math.nan, math.inf])
def test_timer_interval_validation(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        ev.Timer(bad)  # type: ignore[arg-type]
    t = ev.Timer(1)
    with pytest.raises(ValueError):
        t.interval = bad  # type: ignore[assignment]
    assert t.interval == 1.0 and isinstance(t.interval, float)


def test_timer_properties() -> None:
    t = ev.Timer()
    assert t.interval == 1.0 and t.oneshot and not t.running
    t.oneshot = False
    assert not t.oneshot
    t.start(30, oneshot=True)
    try:
        assert t.running and t.interval == 30.0 and t.oneshot
    finally:
        t.stop()
    assert not t.running


def test_import_starts_no_thread() -> None:
    import subprocess

    code = (
        "import threading, yoton_core._events as e;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "t = e.Timer(0.01); t.start();"
        "assert any(x.name == 'yoton-timers' for x in threading.enumerate())"
    )
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_oneshot_timer_fires_once_and_not_early() -> None:
    t = ev.Timer(0.05)
    fired: list[float] = []
    running_in_handler: list[bool] = []

    def on_fire() -> None:
        fired.append(time.monotonic())
        running_in_handler.append(t.running)

    t.bind(on_fire)
    started = time.monotonic()
    t.start()
    pump_until(lambda: len(fired) >= 1)
    assert fired[0] - started >= 0.05
    assert running_in_handler == [False]
    clock = ev.Timer(0.15)  # three more intervals: a oneshot would have re-fired by now
    done = threading.Event()
    clock.bind(done.set)
    clock.start()
    pump_until(done.is_set)
    assert len(fired) == 1


def test_repeating_timer_fires_until_stopped() -> None:
    t = ev.Timer(0.02, oneshot=False)
    count: list[int] = []
    t.bind(lambda: count.append(1))
    t.start()
    try:
        pump_until(lambda: len(count) >= 4)
        assert t.running
    finally:
        t.stop()
    assert not t.running
    ev.process_events()  # run anything posted before stop() returned
    n = len(count)
    done = threading.Event()
    clock = ev.Timer(0.1)
    clock.bind(done.set)
    clock.start()
    pump_until(done.is_set)
    assert len(count) == n


def test_stop_prevents_firing() -> None:
    t = ev.Timer(0.05)
    fired: list[int] = []
    t.bind(lambda: fired.append(1))
    t.start()
    t.stop()
    done = threading.Event()
    clock = ev.Timer(0.2)
    clock.bind(done.set)
    clock.start()
    pump_until(done.is_set)
    assert fired == []


def _spurious_wakeup(sched: TimerScheduler) -> None:
    """Wake the timer thread for no reason while it sleeps until the earliest deadline."""

    def woke_it() -> bool:
        with sched._cond:
            due = [d for d, seq, handle in sched._heap if handle._seq == seq]
            if not (due and sched._sleeping_until == min(due)):
                return False
            sched._cond.notify_all()
            # The thread resets this when it wakes; clearing it here makes
            # the next call wait until the thread is really asleep again.
            sched._sleeping_until = None
            return True

    wait_for(woke_it, GENEROUS, "the timer thread to sleep until the earliest deadline")


def test_restarting_timers_does_not_fire_others_early() -> None:
    """Defect 7: in 2.x, restarting any timer fired the earliest one at once."""
    long_fired: list[float] = []
    long = ev.Timer(0.5)
    long.bind(lambda: long_fired.append(time.monotonic()))
    other = ev.Timer(5.0)
    short_done = threading.Event()
    short = ev.Timer(0.1)
    short.bind(short_done.set)

    long_started = time.monotonic()
    long.start()
    try:
        for _ in range(50):  # the long timer is the earliest while these happen
            other.start()
        for _ in range(5):
            _spurious_wakeup(scheduler)
        short.start()
        for _ in range(20):
            short.start()  # restart the short one repeatedly, too
        pump_until(short_done.is_set)
        assert long_fired == []  # the 0.5 s timer did not fire before the 0.1 s one
        pump_until(lambda: bool(long_fired))
        assert long_fired[0] - long_started >= 0.5
    finally:
        other.stop()
        long.stop()


def test_restarts_and_wakeups_never_fire_early_on_a_private_scheduler() -> None:
    """Defect 7 again, where no other test's timer can be the earliest one."""
    sched = TimerScheduler()
    long_fired: list[float] = []
    long_done = threading.Event()
    short_done = threading.Event()

    def on_long() -> None:
        long_fired.append(time.monotonic())
        long_done.set()

    long = TimerHandle(on_long)
    other = TimerHandle(lambda: None)
    short = TimerHandle(short_done.set)
    started = time.monotonic()
    sched.schedule(long, 0.5)
    try:
        for _ in range(50):
            sched.schedule(other, 5.0)
        for _ in range(5):
            _spurious_wakeup(sched)
        for _ in range(20):
            sched.schedule(short, 0.1)
        assert short_done.wait(GENEROUS)
        assert long_fired == []
        assert long_done.wait(GENEROUS)
        assert long_fired[0] - started >= 0.5
    finally:
        sched.cancel(other)
        sched.cancel(long)


def test_restart_moves_the_deadline() -> None:
    t = ev.Timer(0.15)
    fired: list[float] = []
    t.bind(lambda: fired.append(time.monotonic()))
    t.start()
    last_start = time.monotonic()
    for _ in range(3):
        last_start = time.monotonic()
        t.start()
    pump_until(lambda: bool(fired))
    assert fired[0] - last_start >= 0.15
    assert len(fired) == 1


def test_repeating_timer_skips_missed_ticks_and_keeps_phase() -> None:
    """A repeating timer found far too late fires once, then stays on its phase."""
    sched = TimerScheduler()  # a private scheduler with its own thread
    interval = 0.3
    seen: list[tuple[float, float]] = []  # (time of firing, next deadline)
    fired = threading.Event()

    def callback() -> None:
        seen.append((time.monotonic(), handle.deadline))
        fired.set()

    handle = TimerHandle(callback, interval=interval, repeat=True)
    sched.schedule(handle, -1.05)  # 3.5 intervals overdue
    first_deadline = handle.deadline
    assert fired.wait(GENEROUS)
    sched.cancel(handle)
    fire_time, next_deadline = seen[0]
    assert len(seen) == 1  # no burst of the missed ticks
    assert next_deadline > fire_time
    ticks = (next_deadline - first_deadline) / interval
    assert abs(ticks - round(ticks)) < 1e-6 and round(ticks) >= 4  # same phase
    assert sched.pending() == 0


def test_many_restarts_do_not_grow_the_heap() -> None:
    sched = TimerScheduler()
    handle = TimerHandle(lambda: None)
    for _ in range(1000):
        sched.schedule(handle, 60.0)
    assert sched.pending() == 1
    assert len(sched._heap) < 200
    sched.cancel(handle)
    assert sched.pending() == 0


# -- event loop ----------------------------------------------------------------


def test_call_later_ordering() -> None:
    order: list[str] = []
    ev.call_later(order.append, 0, "a")
    ev.call_later(order.append, 0.0, "b")
    ev.call_later(order.append, -1, "first")
    ev.post_event_asap(order.append, "very first")
    ev.post_event(order.append, "c")
    ev.process_events()
    assert order == ["very first", "first", "a", "b", "c"]


def test_call_later_with_delay_and_arguments() -> None:
    got: list[tuple[tuple[object, ...], dict[str, object], float]] = []
    started = time.monotonic()
    ev.call_later(lambda *a, **k: got.append((a, k, time.monotonic())), 0.05, 1, x=2)
    by_keyword = threading.Event()
    ev.call_later(by_keyword.set, timeout=0.01)
    pump_until(lambda: len(got) >= 1 and by_keyword.is_set())
    a, k, t = got[0]
    assert a == (1,) and k == {"x": 2} and t - started >= 0.05


def test_call_later_validates() -> None:
    with pytest.raises(TypeError):
        ev.call_later(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ev.call_later(print, "soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ev.call_later(print, math.nan)


def test_process_events_accepts_ints_and_validates() -> None:
    got: list[int] = []
    ev.post_event(got.append, 1)
    ev.process_events(1)  # an int (defect 9); returns at once, the event is there
    ev.post_event(got.append, 2)
    ev.process_events(0)
    ev.process_events(None)
    ev.process_events(False)
    assert got == [1, 2]
    with pytest.raises(TypeError):
        ev.process_events("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ev.process_events(-1)


def test_process_events_blocks_until_an_event_from_another_thread() -> None:
    got: list[str] = []
    poster = threading.Thread(target=ev.post_event, args=(got.append, "x"))
    poster.start()
    ev.process_events(True)  # the first pop waits forever; the thread posts
    poster.join()
    assert got == ["x"]
    started = time.monotonic()
    ev.process_events(0.05)  # nothing comes: returns after the timeout
    assert time.monotonic() - started >= 0.04


def test_process_events_runs_events_posted_while_running() -> None:
    got: list[int] = []

    def chain(n: int) -> None:
        got.append(n)
        if n < 5:
            ev.post_event(chain, n + 1)

    ev.post_event(chain, 1)
    ev.process_events()
    assert got == [1, 2, 3, 4, 5]


@pytest.mark.timeout(30)
def test_start_and_stop_event_loop_from_another_thread() -> None:
    loop_thread_ids: list[int] = []
    running = threading.Event()
    nested_returned = threading.Event()

    def first() -> None:
        loop_thread_ids.append(threading.get_ident())
        ev.start_event_loop()  # already running: a no-op
        nested_returned.set()
        running.set()

    t = threading.Thread(target=ev.start_event_loop, daemon=True)
    t.start()
    ev.post_event(first)
    assert running.wait(GENEROUS)
    assert nested_returned.is_set()
    ev.start_event_loop()  # running in another thread: returns at once
    assert loop_thread_ids == [t.ident]
    ev.stop_event_loop()
    t.join(GENEROUS)
    assert not t.is_alive()


@pytest.mark.timeout(30)
def test_stop_event_loop_from_a_handler() -> None:
    got: list[str] = []
    ev.call_later(got.append, 0.01, "ran")
    ev.call_later(ev.stop_event_loop, 0.05)
    ev.start_event_loop()
    assert got == ["ran"]
    # the loop can be started again after a stop
    ev.call_later(ev.stop_event_loop, 0.01)
    ev.start_event_loop()


def test_embed_callback_called_once_per_round(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    ev.embed_event_loop(lambda: calls.append(threading.get_ident()))
    for _ in range(5):
        ev.post_event(lambda: None)
    assert calls == [threading.get_ident()]  # called from the posting thread, once
    ev.process_events()  # a new round re-arms it
    assert len(calls) == 1
    ev.post_event(lambda: None)
    ev.post_event_asap(lambda: None)
    assert len(calls) == 2
    poster = threading.Thread(target=ev.post_event, args=(lambda: None,))
    ev.process_events()
    poster.start()
    poster.join()
    assert calls[-1] == poster.ident  # the posting thread calls it
    ev.process_events()
    ev.embed_event_loop(None)
    ev.post_event(lambda: None)
    assert len(calls) == 3
    # events already queued: a new callback is called at once
    ev.embed_event_loop(lambda: calls.append(0))
    assert calls[-1] == 0 and len(calls) == 4
    ev.process_events()

    def broken() -> None:
        raise RuntimeError("embed failed")

    ev.embed_event_loop(broken)
    with caplog.at_level(logging.ERROR, logger="yoton"):
        ev.post_event(lambda: None)  # the poster does not see the exception
    assert any("embedded event loop" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError):
        ev.embed_event_loop(5)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_emit_from_many_threads_delivers_each_event_once() -> None:
    s = ev.Signal()
    got: list[tuple[int, int]] = []
    s.bind(lambda who, i: got.append((who, i)))
    n_threads, n_each = 8, 500
    loop = threading.Thread(target=ev.start_event_loop, daemon=True)
    loop.start()
    barrier = threading.Barrier(n_threads)

    def emitter(who: int) -> None:
        barrier.wait()
        for i in range(n_each):
            s.emit(who, i)

    threads = [threading.Thread(target=emitter, args=(w,)) for w in range(n_threads)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        deadline = time.monotonic() + 20
        while len(got) < n_threads * n_each and time.monotonic() < deadline:
            done = threading.Event()
            ev.post_event(done.set)  # FIFO: everything emitted before this has run
            done.wait(1.0)
    finally:
        ev.stop_event_loop()
        loop.join(GENEROUS)
    assert sorted(got) == [(w, i) for w in range(n_threads) for i in range(n_each)]
    for w in range(n_threads):  # per-thread order is kept
        assert [i for who, i in got if who == w] == list(range(n_each))


def test_statistics_and_bounded_queue(caplog: pytest.LogCaptureFixture) -> None:
    loop = ev.EventLoop(max_queue=2)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        for i in range(5):
            loop.post_event(print, i)
    stats = loop.statistics()
    assert stats == ev.EventLoopStatistics(queued=2, processed=0, dropped=3)
    with pytest.raises(AttributeError):
        stats.queued = 0  # type: ignore[misc]
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1
    got: list[int] = []
    loop.post_event_asap(got.append, 9)  # still full: dropped too
    assert loop.statistics().dropped == 4
    with pytest.raises(ValueError):
        ev.EventLoop(max_queue=0)

    unbounded = ev.app.statistics()
    for _ in range(20000):  # more than 2.x's 10000 limit
        ev.post_event(got.append, 1)
    assert ev.app.statistics().queued == unbounded.queued + 20000
    ev.process_events()
    after = ev.app.statistics()
    assert after.dropped == 0 and after.processed >= unbounded.processed + 20000
    assert len(got) == 20000


# -- fork ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and signal.alarm")
@pytest.mark.timeout(60)
def test_timers_work_in_forked_child() -> None:
    parent_timer = ev.Timer(0.3)  # pending at fork time: must fire in the child too
    parent_fired = threading.Event()
    parent_timer.bind(parent_fired.set)
    warm = threading.Event()
    warm_timer = ev.Timer(0.01)
    warm_timer.bind(warm.set)
    warm_timer.start()
    pump_until(warm.is_set)  # the timer thread exists before we fork
    parent_timer.start()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork with threads" (3.12+)
        pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        status = 1
        try:
            # Whatever happens, the kernel ends a stuck child (e.g. on a lock
            # inherited in the held state); pytest-timeout's handler is replaced.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(20)
            child_ticks: list[int] = []
            t = ev.Timer(0.02, oneshot=False)
            t.bind(lambda: child_ticks.append(1))
            t.start()
            later: list[int] = []
            ev.call_later(later.append, 0.03, 1)
            pump_until(lambda: len(child_ticks) >= 3 and bool(later) and parent_fired.is_set())
            t.stop()
            status = 0
        except BaseException:
            status = 2
        finally:
            os._exit(status)

    # parent: its own timers keep working after the fork
    try:
        pump_until(parent_fired.is_set)
        again = threading.Event()
        t2 = ev.Timer(0.01)
        t2.bind(again.set)
        t2.start()
        pump_until(again.is_set)
    finally:
        wait_status = _reap(pid, timeout=30.0)
    assert os.waitstatus_to_exitcode(wait_status) == 0


def _reap(pid: int, timeout: float) -> int:
    """Wait for a child process, killing it if it does not end in time."""
    status: list[int] = []

    def exited() -> bool:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(wait_status)
        return bool(done)

    try:
        wait_for(exited, timeout, "the forked child to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return status[0]
