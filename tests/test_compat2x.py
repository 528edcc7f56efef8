"""The documented 2.x module names, and the 2.x private names kept as shims (_compat2x.py).

Real 2.x programs use them (Pyzo's IDE and kernel: see test_pyzo_kernel.py);
here each is pinned down on its own.
"""

from __future__ import annotations

import threading

import pytest
from reqrep_helpers import GENEROUS, Calc, wait_until

import yoton

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clean_event_queue")]


def test_yoton_clientserver_and_yoton_events_import_as_documented():
    from yoton.clientserver import RequestServer, do_request
    from yoton.events import (
        Signal,
        Timer,
        app,
        call_later,
        embed_event_loop,
        process_events,
        start_event_loop,
        stop_event_loop,
    )

    assert (RequestServer, do_request) == (yoton.RequestServer, yoton.do_request)
    assert (Signal, Timer, app, call_later) == (
        yoton.Signal,
        yoton.Timer,
        yoton.app,
        yoton.call_later,
    )
    assert (embed_event_loop, process_events, start_event_loop, stop_event_loop) == (
        yoton.embed_event_loop,
        yoton.process_events,
        yoton.start_event_loop,
        yoton.stop_event_loop,
    )
    import yoton.events as events  # 2.x's RepChannel used ``yoton.events.Timer``

    assert events.Timer is yoton.Timer


def test_run_mode_is_the_2x_mode_number(pair):
    a, _b = pair
    rep = Calc(a, mode="off")
    assert rep._run_mode == 0
    for mode, number in (("event", 1), ("thread", 2), (0, 0), ("THREAD", 2)):
        rep.set_mode(mode)
        assert rep._run_mode == number
    with pytest.raises(AttributeError):
        rep._run_mode = 1  # type: ignore[misc]  # read-only: set_mode is the way


def test_process_events_local_serves_in_the_calling_thread_while_off(pair):
    """Pyzo's kernel: set_mode(0), then _process_events_local() from its main loop."""
    a, b = pair
    rep = Calc(a, mode="off")
    req = yoton.ReqChannel(b, "calc")
    futures = [req.add(i, 1) for i in range(3)]

    def all_done() -> bool:
        rep._process_events_local()  # a 2.x program's loop calls it again and again
        return all(f.done() for f in futures)

    wait_until(all_done, GENEROUS, "the requests to be served by _process_events_local")
    assert [f.result(0) for f in futures] == [1, 2, 3]
    assert rep.threads == {threading.get_ident()}  # ran here, not in a worker
    assert rep._run_mode == 0


def test_off_without_process_events_local_serves_nobody(pair):
    a, b = pair
    Calc(a, mode="off")
    req = yoton.ReqChannel(b, "calc", default_future_timeout=0.3)
    with pytest.raises(yoton.CancelledError):  # nobody took it: auto-cancelled
        req.add(1, 1).result(GENEROUS)
