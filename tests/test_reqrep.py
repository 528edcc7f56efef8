"""ReqChannel / RepChannel between our own contexts (TCP, threads, child processes).

What each test guards is named in its docstring; the 2.x defects are those of
docs/protocol.md#differences-from-2x (items 9-14). Waiting is always on a condition with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
from reqrep_helpers import GENEROUS, Calc, MyError, join, wait_until

import yoton
from yoton_core import _machinery, _repchannel
from yoton_core._eventloop import app

# made_contexts, pair and clean_event_queue: fixtures of reqrep_helpers (a plugin, see conftest.py)
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clean_event_queue")]


# -- basics -----------------------------------------------------------------------------


def test_call_args_kwargs_and_object_types(pair):
    """Arguments and results are OBJECT types, both ways."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.add(3, 4).result(GENEROUS) == 7
    assert req.add("a", "b").result(GENEROUS) == "ab"
    value = {"k": [1, 2.5, None, True, ("t", -3)], 5: {"nested": []}}
    assert req.kw(1, value, x="y", z=[1]).result(GENEROUS) == [[1, value], {"x": "y", "z": [1]}]


def test_echo_returns_argument_and_replier_id(pair):
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.echo("ping").result(GENEROUS) == ("ping", hex(a.id))
    assert req.echo([1, 2], sleep=0.01).result(GENEROUS) == ([1, 2], hex(a.id))


def test_first_call_agrees_on_the_direct_path(pair):
    """After one 2.x-style exchange the requester knows a new-style replier."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    first = req.add(1, 1)
    assert first.result(GENEROUS) == 2
    assert first.replier_id == a.id
    assert a.id in req._fast
    second = req.add(2, 2)
    assert second.running()  # sent straight to the replier: it counts as taken
    assert second.result(GENEROUS) == 4
    assert second.replier_id == a.id


def test_2x_path_between_our_own_ends(pair, monkeypatch):
    """The four-message protocol still works when the direct path is off."""
    monkeypatch.setattr(yoton.ReqChannel, "direct_path", False)
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    for i in range(5):
        assert req.add(i, 1).result(GENEROUS) == i + 1
    assert req._fast == {}


def test_request_and_reply_within_one_context(made_contexts):
    """Local delivery: a replier in the same context answers."""
    ctx = yoton.Context()
    made_contexts.append(ctx)
    Calc(ctx)
    req = yoton.ReqChannel(ctx, "calc")
    assert [req.add(i, i).result(GENEROUS) for i in range(5)] == [0, 2, 4, 6, 8]


def test_many_threads_make_requests_at_once(pair):
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    results: dict[int, object] = {}

    def worker(k: int) -> None:
        results[k] = [req.add(k, i).result(GENEROUS) for i in range(20)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GENEROUS * 2)
    assert results == {k: [k + i for i in range(20)] for k in range(6)}


# -- errors -------------------------------------------------------------------------------


def test_remote_exception_keeps_type_name_and_message(pair):
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    with pytest.raises(ZeroDivisionError) as info:
        req.divide(1, 0).result(GENEROUS)
    exc = info.value
    assert isinstance(exc, yoton.RemoteError)
    assert exc.type_name == "ZeroDivisionError"
    assert str(exc) == "ZeroDivisionError: division by zero"
    assert "divide" in exc.remote_traceback  # the remote traceback travels along
    assert exc.replier_id == a.id
    err = req.custom_error().exception(GENEROUS)
    assert type(err) is yoton.RemoteError  # a non-builtin type is never recreated
    assert err.type_name == "MyError" and err.message == "custom failure"
    assert err.remote_module == MyError.__module__


def test_a_handler_raising_systemexit_is_answered_and_the_worker_survives(pair):
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    exc = req.quit(3).exception(GENEROUS)
    assert type(exc) is yoton.RemoteError and str(exc) == "SystemExit: 3"
    assert req.add(1, 2).result(GENEROUS) == 3


def test_error_shaped_tuple_is_a_result_between_our_ends(pair):
    """2.x misread a legitimate ("yoton_ERROR_HANDLING_REQUEST", x) result as an error."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.error_tuple().result(GENEROUS) == ("yoton_ERROR_HANDLING_REQUEST", "not an error")


def test_unencodable_result_comes_back_as_an_error(pair):
    """2.x sent no reply at all, leaving the Future running forever."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    with pytest.raises(TypeError, match="bad_result.*cannot be sent"):
        req.bad_result().result(GENEROUS)


def test_unencodable_arguments_are_refused_at_the_call(pair):
    _a, b = pair
    req = yoton.ReqChannel(b, "calc")
    with pytest.raises(TypeError, match="arguments of add"):
        req.add({1, 2}, 3)
    with pytest.raises(TypeError):
        req.add(b"bytes")


def test_private_names_and_machinery_are_refused(pair):
    """2.x let a remote peer call anything, e.g. set_mode('off') or close()."""
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    for name, args in [
        ("_private", ()),
        ("set_mode", ("off",)),
        ("close", ()),
        ("_deposit", (None,)),
        ("__init__", (None, "x")),
        ("received", ()),
        ("_send_raw", ("x", 0, 0)),
        ("secret_value", ()),
        ("release", ()),
    ]:
        exc = req._request(name, args, {}).exception(GENEROUS)
        assert isinstance(exc, PermissionError), (name, exc)
        assert "refuses" in str(exc) and repr(name) in str(exc)
        assert "add" in str(exc) and "echo" in str(exc)  # it says what *is* served
    assert rep.mode == "thread" and not rep.closed  # nothing happened to the replier
    exc = req.no_such_method().exception(GENEROUS)
    assert isinstance(exc, NotImplementedError)
    assert "no_such_method" in str(exc)
    assert req.add(1, 2).result(GENEROUS) == 3


@pytest.mark.parametrize("name", ["pending", "set_mode", "_deposit", "_call", "received"])
def test_a_handler_named_like_the_machinery_is_refused_when_the_class_is_made(name):
    """It would replace the channel's own (and not be served): say so at once."""
    with pytest.raises(TypeError, match=f"defines '{name}', which RepChannel uses itself"):
        type("Clash", (yoton.RepChannel,), {name: lambda self: 1, "add": lambda self: 2})


def _define(tmp_path, name, source):
    """Import ``source`` as module ``name`` from a real file (the check reads the source)."""
    import importlib.util
    import textwrap

    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("statement", "attr"),
    [
        ("me._queue = []", "_queue"),  # the inbox: requests would vanish
        ("me._cond = threading.Condition()", "_cond"),  # what the workers wait on
        ("me._mode += 1", "_mode"),
        ("del me._served", "_served"),
        ("with contextlib.nullcontext() as me._closed: pass", "_closed"),
        ("me.received = None", "received"),
    ],
)
def test_a_subclass_setting_the_channels_own_state_is_refused_when_the_class_is_made(
    tmp_path, statement, attr
):
    """``self._queue = []`` in a subclass would silently replace the channel's inbox."""
    source = f"""
        import contextlib, threading
        import yoton

        class Counter(yoton.RepChannel):
            def __init__(me, context, slot):
                super().__init__(context, slot)
                {statement}
        """
    with pytest.raises(TypeError) as info:
        _define(tmp_path, f"clash_{attr.strip('_')}", source)
    text = str(info.value)
    assert f"Counter.__init__ sets self.{attr} (clash_{attr.strip('_')}.py:8)" in text
    assert "RepChannel uses for its own state" in text
    assert f"self._counter_{attr.lstrip('_')}" in text  # a name it may take instead


def test_the_channels_state_set_in_a_decorated_handler_or_a_setter_is_refused(tmp_path):
    source = """
        import functools
        import yoton

        def logged(f):
            @functools.wraps(f)
            def wrapper(*args):
                return f(*args)
            return wrapper

        class Handlers(yoton.RepChannel):
            @logged
            def add(self, a, b):
                self._work = a + b
                return self._work
        """
    with pytest.raises(TypeError, match=r"Handlers\.add sets self\._work \(handlers\.py:14\)"):
        _define(tmp_path, "handlers", source)
    source = """
        import yoton

        class Settable(yoton.RepChannel):
            @property
            def limit(self):
                return 1

            @limit.setter
            def limit(self, value):
                self._pre = value
        """
    with pytest.raises(TypeError, match=r"Settable\.limit sets self\._pre"):
        _define(tmp_path, "settable", source)


def test_a_subclass_with_state_of_its_own_is_served(tmp_path, pair):
    """Private names the channel does not use are the subclass's to take (no false alarm)."""
    a, b = pair
    module = _define(
        tmp_path,
        "own_state",
        """
        import threading
        import yoton

        class Tally(yoton.RepChannel):
            def __init__(self, context, slot):
                super().__init__(context, slot)
                self._lock = threading.Lock()  # (RepChannel's own is called _cond)
                self._total = 0
                self.acked = "public names are the subclass's too"

            def add(self, n):
                with self._lock:
                    self._total += n
                    return self._total

        class Resetting(Tally):  # a subclass of a subclass may set its parent's names
            def reset(self):
                self._total = 0
        """,
    )
    rep = module.Resetting(a, "tally")
    rep.set_mode("thread")
    req = yoton.ReqChannel(b, "tally")
    assert req.add(2).result(GENEROUS) == 2
    assert req.add(3).result(GENEROUS) == 5
    assert req.reset().result(GENEROUS) is None
    assert req.add(1).result(GENEROUS) == 1


def test_the_machinery_names_cover_every_attribute_a_replier_has(pair):
    """The names are read from our bytecode: an attribute set some other way escapes it."""
    a, _b = pair

    class Plain(yoton.RepChannel):
        pass

    rep = Plain(a, "machinery")
    rep.set_mode("thread")  # (a mode sets more of them)
    own = _machinery.machinery_of(Plain)
    assert set(vars(rep)) <= own, sorted(set(vars(rep)) - own)
    assert {"_queue", "_cond", "_served", "received"} <= own
    assert {n for n in own if not n.startswith("_")} == {"received"}  # users' names are free


def test_echo_and_close_may_be_overridden(pair):
    a, b = pair
    closed = threading.Event()

    class Custom(yoton.RepChannel):
        def echo(self, arg1, sleep=0.0):
            return ["custom", arg1]

        def close(self):
            closed.set()
            super().close()

    rep = Custom(a, "custom")
    rep.set_mode("thread")
    req = yoton.ReqChannel(b, "custom")
    assert req.echo(5).result(GENEROUS) == ["custom", 5]
    rep.close()
    assert closed.is_set() and rep.closed


def test_private_attribute_access_on_reqchannel_is_not_a_remote_method(pair):
    _a, b = pair
    req = yoton.ReqChannel(b, "calc")
    with pytest.raises(AttributeError):
        req._anything  # noqa: B018
    assert not callable(req.closed)  # real attributes stay real


# -- modes ----------------------------------------------------------------------------------


def _result_while_processing_events(future, timeout=GENEROUS):
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, "no reply in event mode"
        yoton.process_events(0.01)
    return future.result(0)


def test_modes_switch_back_and_forth(pair):
    """2.x could not enter thread mode twice; here any sequence works."""
    a, b = pair
    rep = Calc(a, mode="off")
    req = yoton.ReqChannel(b, "calc")
    modes: list[tuple[str | int, int]] = [
        ("thread", 1),
        ("event", 2),
        (2, 3),
        ("off", 4),
        ("THREAD", 5),
        (1, 6),
        ("thread-driven", 7),
        ("event-driven", 8),
        (0, 9),
        ("thread", 10),
    ]
    for mode, n in modes:
        rep.set_mode(mode)
        future = req.record(n)
        if rep.mode == "off":
            wait_until(lambda: rep._pre, what="the request queued at the off replier")
            assert not future.done() and not future.running()  # off: no ack, no answer
            rep.set_mode("thread")
        if rep.mode == "event":
            assert _result_while_processing_events(future) == n
        else:
            assert future.result(GENEROUS) == n
    assert rep.calls == list(range(1, 11))


def test_off_mode_keeps_requests_waiting_until_switched_on(pair):
    a, b = pair
    rep = Calc(a, mode="off")
    req = yoton.ReqChannel(b, "calc")
    future = req.add(1, 2)
    wait_until(lambda: rep._pre, what="the pre-request reaching the replier")
    assert not future.running() and not future.done()  # an off replier does not ack
    rep.set_mode("thread")
    assert future.result(GENEROUS) == 3


def test_cancel_releases_the_queued_pre_request_at_the_replier(pair, monkeypatch):
    """Future.cancel() tells the ReqChannel, which tells the repliers that queued it (req-).

    A replier must not keep a cancelled pre-request: it holds a place in its
    bounded queue and would be acknowledged before the requests behind it. The
    staleness purge is pushed out of reach so only the release can clear it.
    """
    monkeypatch.setattr(_repchannel, "NEW_STYLE_STALE", 3600.0)
    a, b = pair
    rep = Calc(a, mode="off")
    req = yoton.ReqChannel(b, "calc")
    future = req.add(1, 2)
    wait_until(lambda: rep._pre, what="the pre-request reaching the replier")
    assert future.cancel() and future.cancelled()
    wait_until(lambda: not rep._pre, what="the replier to drop the cancelled pre-request")
    rep.set_mode("thread")
    assert req.add(2, 3).result(GENEROUS) == 5
    assert rep.calls == []  # the cancelled call never ran


def test_event_mode_runs_handlers_in_the_event_loop_thread(pair):
    a, b = pair
    rep = Calc(a, mode="event")
    req = yoton.ReqChannel(b, "calc")
    assert _result_while_processing_events(req.add(2, 3)) == 5
    assert rep.threads == {threading.get_ident()}


def test_invalid_modes_are_refused(pair):
    a, _b = pair
    rep = Calc(a)
    for bad in ("fast", 3, -1, None, True, 1.0):
        with pytest.raises(ValueError, match="mode"):
            rep.set_mode(bad)  # type: ignore[arg-type]
    assert rep.mode == "thread"


# -- waiting, callbacks, events --------------------------------------------------------------


def test_request_before_any_replier_joined_is_answered_later(made_contexts):
    """The resent req? reaches a replier that joins within the auto-cancel time."""
    a, b = yoton.Context(), yoton.Context()
    made_contexts += [a, b]
    req = yoton.ReqChannel(b, "calc")
    future = req.add(20, 22)  # no connection, no replier yet
    Calc(a)
    join(a, b)
    assert future.result(GENEROUS) == 42


def test_auto_cancel_when_nobody_answers(pair):
    _a, b = pair
    req = yoton.ReqChannel(b, "nobody-serves-this", default_future_timeout=0.3)
    future = req.anything()
    assert future._auto_cancel_timeout == 0.3
    with pytest.raises(yoton.CancelledError):
        future.result(GENEROUS)
    assert future.cancelled()
    other = req.anything()
    other.set_auto_cancel_timeout(0.2)
    wait_until(other.cancelled, what="auto-cancel")
    assert req._items == {}  # nothing stays behind (2.x kept them forever)


def test_timers_stop_while_idle_and_come_back_with_the_next_request(pair):
    """Req and Rep channels take their ticker off the engine when nothing is under
    way (an idle process then wakes only for heartbeats) and put it back with the
    next request: what only a tick does must still happen after an idle spell."""
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    lonely = yoton.ReqChannel(b, "nobody-serves-this", default_future_timeout=0.3)
    assert req.add(1, 1).result(GENEROUS) == 2  # (the requester now knows rep: direct)
    with pytest.raises(yoton.CancelledError):  # a tick cancels it
        lonely.anything().result(GENEROUS)
    wait_until(
        lambda: not (req._ticking or rep._ticking or lonely._ticking),
        what="the three tickers to stop",
    )
    with pytest.raises(yoton.CancelledError):  # the ticker came back
        lonely.anything().result(GENEROUS)
    held = req.hold(1)  # direct: rep acknowledges it from its ticker after DIRECT_ACK_DELAY
    wait_until(rep.entered.is_set)
    wait_until(lambda: rep._running and all(w.acked for w in rep._running), what="the ack")
    rep.release.set()
    assert held.result(GENEROUS) == 1
    assert rep.calls == [1]  # once: the requester did not give up on the direct path


def test_default_future_timeout_is_checked(pair):
    _a, b = pair
    with pytest.raises(ValueError):
        yoton.ReqChannel(b, "x", default_future_timeout=0)
    with pytest.raises(TypeError):
        yoton.ReqChannel(b, "y", default_future_timeout="10")  # type: ignore[arg-type]
    never = yoton.ReqChannel(b, "z", default_future_timeout=None)
    assert never.anything()._auto_cancel_timeout == float("inf")


def test_future_is_completed_by_the_io_side(pair):
    """2.x made progress only while someone polled result() or ran the event loop."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    for _ in range(3):  # both the 2.x-style first call and direct calls
        future = req.add(1, 2)
        done = threading.Event()
        future._add_done_hook(lambda f, done=done: done.set())
        assert done.wait(GENEROUS)  # nobody called result() or process_events()
        assert future.done() and future.result(0) == 3


def test_done_callbacks_go_through_the_event_loop(pair):
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    future = req.add(1, 2)
    seen = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert future.result(GENEROUS) == 3
    assert seen == []
    yoton.process_events()
    assert seen == [3]
    future.add_done_callback(lambda f: seen.append("at once"))
    assert seen == [3, "at once"]


def test_concurrent_futures_wait_and_as_completed_take_real_requests(pair):
    """Issue 17: as_completed raised AttributeError ('_condition'); now the stdlib's own."""
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    quick, held = req.add(1, 1), req.hold("held")
    assert rep.entered.wait(GENEROUS)  # held is running: it completes only when released
    done, not_done = concurrent.futures.wait(
        [quick, held], GENEROUS, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {quick} and not_done == {held}
    order = []
    for future in concurrent.futures.as_completed([held, quick], GENEROUS):
        order.append(future.result())
        rep.release.set()  # only after the first was seen
    assert order == [2, "held"]


def test_asyncio_wrap_future_of_a_real_request(pair):
    """Issue 17: wrap_future refused it ("concurrent.futures.Future is expected")."""
    a, b = pair
    Calc(a)
    req = yoton.ReqChannel(b, "calc")
    lonely = yoton.ReqChannel(b, "nobody-serves-this")
    pending = lonely.anything()

    async def main() -> int:
        result = await asyncio.wait_for(asyncio.wrap_future(req.add(2, 3)), GENEROUS)
        with pytest.raises(asyncio.TimeoutError):  # cancels the wrapper, and so the request
            await asyncio.wait_for(asyncio.wrap_future(pending), 0.05)
        return result

    assert asyncio.run(main()) == 5
    assert pending.cancelled()
    assert lonely._items == {}  # the ReqChannel was told: nothing stays behind


def test_no_events_are_posted_when_nobody_listens(pair):
    """2.x timers filled the event queue with events nobody processed (item 8)."""
    a, b = pair
    rep = Calc(a, slot="calc")
    req = yoton.ReqChannel(b, "calc")
    lonely = yoton.ReqChannel(b, "lonely")
    before = app.statistics().queued
    pending = lonely.wait_forever()  # resent every 0.5 s by the engine
    assert req.add(1, 2).result(GENEROUS) == 3
    rep.release.clear()
    held = req.hold(1)
    wait_until(rep.entered.is_set)
    wait_until(
        lambda: (
            pending._request_id in lonely._items
            and lonely._items[pending._request_id].last_send
            > lonely._items[pending._request_id].start
        ),
        what="a resend",
    )
    rep.release.set()
    assert held.result(GENEROUS) == 1
    assert app.statistics().queued == before
