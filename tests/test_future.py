"""Future on its own (PEP 3148 + yoton's additions) and RemoteError.

Futures attached to real requests are covered in test_reqrep.py; here a
Future is driven by hand (and by other threads), which is what a defect in
its state machine, its waiting or its callback dispatch would break.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import pickle
import threading

import pytest

import yoton
from yoton_core._eventloop import app
from yoton_core._future import make_remote_error

pytestmark = pytest.mark.timeout(30)

GENEROUS = 10.0


@pytest.fixture(autouse=True)
def empty_event_queue():
    """Start and end with an empty event queue (callbacks are events)."""
    app.embed_event_loop(None)
    app.process_events()
    yield
    app.process_events()


# -- states -------------------------------------------------------------------------------


def test_new_future_is_pending():
    f = yoton.Future()
    assert not f.done() and not f.running() and not f.cancelled()
    assert "waiting" in repr(f)


def test_running_then_result():
    f = yoton.Future()
    assert f.set_running_or_notify_cancel() is True
    assert f.running() and not f.done()
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    f.set_result({"a": [1, 2]})
    assert f.done() and not f.running()
    assert f.result() == {"a": [1, 2]}
    assert f.exception() is None
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()


def test_set_result_twice_is_an_error():
    f = yoton.Future()
    f.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_exception(ValueError("late"))
    assert f.result() == 1


def test_exception_state():
    f = yoton.Future()
    f.set_running_or_notify_cancel()
    f.set_exception(KeyError("k"))
    assert f.done()
    assert isinstance(f.exception(), KeyError)
    with pytest.raises(KeyError):
        f.result()


def test_set_exception_accepts_str_and_classes_only():
    f = yoton.Future()
    f.set_exception("went wrong")
    exc = f.exception()
    assert type(exc) is Exception and str(exc) == "went wrong"
    g = yoton.Future()
    g.set_exception(ValueError)
    assert isinstance(g.exception(), ValueError)
    with pytest.raises(TypeError):
        yoton.Future().set_exception(42)  # type: ignore[arg-type]


def test_cancel_semantics():
    pending = yoton.Future()
    assert pending.cancel() is True
    assert pending.cancelled() and pending.done()
    assert pending.cancel() is True  # cancelling again: still cancelled
    assert pending.set_running_or_notify_cancel() is False
    with pytest.raises(yoton.CancelledError):
        pending.result()
    with pytest.raises(concurrent.futures.CancelledError):  # the stdlib class works too
        pending.exception()

    running = yoton.Future()
    running.set_running_or_notify_cancel()
    assert running.cancel() is False
    assert running.running()

    finished = yoton.Future()
    finished.set_result(3)
    assert finished.cancel() is False
    assert finished.result() == 3


def test_timeout_errors_and_argument_checks():
    f = yoton.Future()
    with pytest.raises(yoton.TimeoutError):
        f.result(0.01)
    with pytest.raises(TimeoutError):  # the builtin, too
        f.exception(0)
    assert not f.done()  # a timeout leaves the future usable
    with pytest.raises(ValueError):
        f.result(-1)
    with pytest.raises(TypeError):
        f.result("1")  # type: ignore[arg-type]


def test_result_wakes_when_another_thread_completes():
    f = yoton.Future()
    started = threading.Event()

    def complete() -> None:
        started.wait(GENEROUS)
        f.set_result("hello")

    threading.Thread(target=complete).start()
    started.set()
    assert f.result(GENEROUS) == "hello"


def test_result_or_cancel():
    f = yoton.Future()
    assert f.result_or_cancel(0.01) is None
    assert f.cancelled()
    g = yoton.Future()
    g.set_result(5)
    assert g.result_or_cancel() == 5
    h = yoton.Future()
    h.set_exception(ValueError("x"))
    assert h.result_or_cancel() is None  # errors are swallowed, as in 2.x
    running = yoton.Future()
    running.set_running_or_notify_cancel()
    assert running.result_or_cancel(0.01) is None
    assert running.running()  # a running call cannot be cancelled


def test_set_auto_cancel_timeout_checks():
    f = yoton.Future()
    f.set_auto_cancel_timeout(None)
    f.set_auto_cancel_timeout(2)
    f.set_auto_cancel_timeout(0.5)
    for bad in (0, -1.0):
        with pytest.raises(ValueError):
            f.set_auto_cancel_timeout(bad)
    with pytest.raises(TypeError):
        f.set_auto_cancel_timeout("1")  # type: ignore[arg-type]


# -- callbacks and hooks ----------------------------------------------------------------


def test_callbacks_run_through_the_event_loop():
    f = yoton.Future()
    calls: list[yoton.Future] = []
    f.add_done_callback(calls.append)
    f.set_result(1)
    assert calls == []  # posted, not called
    app.process_events()
    assert calls == [f]


def test_callback_on_a_done_future_runs_at_once():
    f = yoton.Future()
    f.set_result(1)
    calls: list[tuple[yoton.Future, int]] = []
    f.add_done_callback(lambda fut: calls.append((fut, threading.get_ident())))
    assert calls == [(f, threading.get_ident())]


def test_callback_runs_for_cancel_and_error_and_must_be_callable():
    f = yoton.Future()
    g = yoton.Future()
    calls: list[yoton.Future] = []
    f.add_done_callback(calls.append)
    g.add_done_callback(calls.append)
    f.cancel()
    g.set_exception(RuntimeError("x"))
    app.process_events()
    assert calls == [f, g]
    with pytest.raises(TypeError):
        f.add_done_callback(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # also a ValueError, as in 2.x
        f.add_done_callback(None)  # type: ignore[arg-type]


def test_a_failing_callback_does_not_stop_the_others():
    f = yoton.Future()
    calls: list[yoton.Future] = []

    def bad(_fut):
        raise RuntimeError("callback failed")

    f.add_done_callback(bad)
    f.add_done_callback(calls.append)
    f.set_result(1)
    app.process_events()
    assert calls == [f]


def test_done_hook_runs_in_the_completing_thread():
    f = yoton.Future()
    seen = []
    f._add_done_hook(lambda fut: seen.append(threading.get_ident()))
    t = threading.Thread(target=f.set_result, args=(1,))
    t.start()
    t.join()
    assert seen == [t.ident]
    late = []
    f._add_done_hook(lambda fut: late.append(threading.get_ident()))
    assert late == [threading.get_ident()]  # already done: at once, in this thread


# -- a real concurrent.futures.Future ------------------------------------------------------


def test_is_a_concurrent_futures_future_with_2x_status_numbers():
    f = yoton.Future()
    assert isinstance(f, concurrent.futures.Future)
    assert f._status == 0  # 2.x: 0 waiting, 1 running, 2 cancelled, 3 error, 4 success
    f.set_running_or_notify_cancel()
    assert f._status == 1
    f.set_result(1)
    assert f._status == 4
    g = yoton.Future()
    g.cancel()
    assert g._status == 2
    h = yoton.Future()
    h.set_exception(ValueError("x"))
    assert h._status == 3


def test_takes_user_attributes():
    """2.x programs (and 2.x's own unit tests) tag their Futures: ``f.reqnr = 1``."""
    f = yoton.Future()
    # (attributes of the user's own, which mypy rightly does not know)
    f.reqnr = 1  # type: ignore[attr-defined]
    f.tag = {"who": "me"}  # type: ignore[attr-defined]
    f.set_result(2)
    assert (f.reqnr, f.tag, f.result()) == (1, {"who": "me"}, 2)  # type: ignore[attr-defined]


def _complete_later(*steps):
    """Run each ``(gate, action)`` in a thread: wait for the gate, then act."""

    def run() -> None:
        for gate, action in steps:
            assert gate.wait(GENEROUS)
            action()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_concurrent_futures_wait_first_completed_and_all_completed():
    a, b, c = yoton.Future(), yoton.Future(), yoton.Future()
    done, not_done = concurrent.futures.wait([a, b, c], timeout=0)
    assert done == set() and not_done == {a, b, c}
    go_b, go_rest = threading.Event(), threading.Event()
    t = _complete_later(
        (go_b, lambda: b.set_result("b")),
        (go_rest, lambda: a.set_exception(KeyError("a"))),
        (go_rest, c.cancel),
    )
    go_b.set()  # wait() must be woken by another thread completing b
    done, not_done = concurrent.futures.wait(
        [a, b, c], GENEROUS, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {b} and not_done == {a, c}
    go_rest.set()
    done, not_done = concurrent.futures.wait([a, b, c], GENEROUS)
    t.join()
    assert done == {a, b, c} and not not_done  # a cancelled Future counts as done
    assert c.cancelled() and isinstance(a.exception(), KeyError)
    # Already done before wait() looks: nothing to wait for, cancelled ones included.
    done, not_done = concurrent.futures.wait([a, b, c], timeout=0)
    assert done == {a, b, c} and not not_done


def test_concurrent_futures_wait_first_exception():
    ok, bad = yoton.Future(), yoton.Future()
    go = threading.Event()
    t = _complete_later((go, lambda: ok.set_result(1)), (go, lambda: bad.set_exception("boom")))
    go.set()
    done, not_done = concurrent.futures.wait(
        [ok, bad], GENEROUS, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    t.join()
    assert bad in done and not not_done


def test_as_completed_yields_in_completion_order():
    first = yoton.Future()
    first.set_result(0)
    later = [yoton.Future() for _ in range(3)]
    order = []
    for f in concurrent.futures.as_completed([*later, first], GENEROUS):
        order.append(f.result())
        if len(order) <= len(later):  # complete the next one, in another thread, from the end
            threading.Thread(target=later[-len(order)].set_result, args=(len(order),)).start()
    assert order == [0, 1, 2, 3]


def test_as_completed_times_out_and_leaves_no_waiter_behind():
    f, gone = yoton.Future(), yoton.Future()
    gone.cancel()
    seen = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for done in concurrent.futures.as_completed([f, gone], timeout=0.01):
            seen.append(done)
    assert seen == [gone]  # a cancelled Future is done for as_completed
    assert f._waiters == []
    f.set_result(1)  # a late completion has nobody left to tell
    assert f.result() == 1


def test_asyncio_wrap_future_without_any_yoton_event_loop():
    """asyncio's bridge is called in the completing thread: nobody runs yoton's loop here."""

    async def main() -> list[object]:
        ok, bad, gone = yoton.Future(), yoton.Future(), yoton.Future()
        wrapped = [asyncio.wrap_future(f) for f in (ok, bad, gone)]  # before they complete
        threading.Thread(target=ok.set_result, args=("hi",)).start()
        threading.Thread(target=bad.set_exception, args=(ZeroDivisionError("z"),)).start()
        threading.Thread(target=gone.cancel).start()
        out: list[object] = [await asyncio.wait_for(wrapped[0], GENEROUS)]
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(wrapped[1], GENEROUS)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wrapped[2], GENEROUS)
        out.append(app.statistics().queued)
        return out

    assert asyncio.run(main()) == ["hi", 0]


def test_asyncio_cancelling_the_wrapper_cancels_a_pending_future():
    f = yoton.Future()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(f), 0.01)

    asyncio.run(main())
    assert f.cancelled()


# -- RemoteError ----------------------------------------------------------------------------


def test_remote_error_of_a_builtin_type_is_also_that_type():
    exc = make_remote_error("ZeroDivisionError", "division by zero", "tb", 0xABC)
    assert isinstance(exc, ZeroDivisionError)
    assert isinstance(exc, yoton.RemoteError)
    assert str(exc) == "ZeroDivisionError: division by zero"
    assert exc.type_name == "ZeroDivisionError" and exc.message == "division by zero"
    assert exc.remote_traceback == "tb" and exc.replier_id == 0xABC
    with pytest.raises(ZeroDivisionError):
        raise exc


@pytest.mark.parametrize(
    "name", ["KeyError", "OSError", "FileNotFoundError", "UnicodeDecodeError", "StopIteration"]
)
def test_remote_error_for_builtins_with_special_constructors(name):
    exc = make_remote_error(name, "msg")
    assert isinstance(exc, getattr(builtins, name))
    assert str(exc) == f"{name}: msg"


def test_remote_error_of_other_types_is_never_evaluated():
    exc = make_remote_error("MyError", "custom", remote_module="app.errors")
    assert type(exc) is yoton.RemoteError
    assert str(exc) == "MyError: custom"
    assert exc.remote_module == "app.errors"
    # A module that is not builtins never maps onto a builtin class.
    spoof = make_remote_error("KeyError", "x", remote_module="evil")
    assert type(spoof) is yoton.RemoteError
    # Names that are builtins but not exceptions stay plain RemoteErrors.
    for name in ("print", "SystemExit", "KeyboardInterrupt", "object"):
        assert type(make_remote_error(name, "x")) is yoton.RemoteError


def test_remote_error_without_type_name_and_pickling():
    exc = make_remote_error("", "text from a 2.x replier")
    assert str(exc) == "text from a 2.x replier"
    again = pickle.loads(pickle.dumps(make_remote_error("ValueError", "v", "tb", 7)))
    assert isinstance(again, ValueError) and str(again) == "ValueError: v"
    assert isinstance(again, yoton.RemoteError) and again.replier_id == 7
