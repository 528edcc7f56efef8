"""ReqChannel / RepChannel: load balancing, fairness, the direct path's fallbacks,
closing, and repliers that go away (TCP, threads, child processes).

Waiting is always on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from reqrep_helpers import GENEROUS, Calc, join, wait_until
from yoton2 import Yoton2Proc

import yoton
from yoton_core import _reqrep

# made_contexts, star, pair, clean_event_queue: fixtures of reqrep_helpers (see conftest.py)
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clean_event_queue")]


# -- load balancing, fairness ----------------------------------------------------------------


def test_each_request_runs_on_exactly_one_replier(star):
    """Load balancing: two repliers share the work, nobody runs a request twice."""
    hub, r1, r2, user = star(3)
    reps = [Calc(r1), Calc(r2)]
    req = yoton.ReqChannel(user, "calc")
    # Two requests at once while both repliers are held: each takes one.
    f1, f2 = req.hold("a"), req.hold("b")
    wait_until(lambda: all(r.entered.is_set() for r in reps), what="both repliers busy")
    for r in reps:
        r.release.set()
    assert {f1.result(GENEROUS), f2.result(GENEROUS)} == {"a", "b"}
    assert {f1.replier_id, f2.replier_id} == {r1.id, r2.id}
    futures = [req.record(i) for i in range(40)]
    assert [f.result(GENEROUS) for f in futures] == list(range(40))
    executed = sorted(c for r in reps for c in r.calls if isinstance(c, int))
    assert executed == list(range(40))  # every request exactly once


def test_requests_are_served_first_come_first_served(pair):
    """2.x moved a resent req? to the back of the queue (item 13)."""
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.add(0, 0).result(GENEROUS) == 0
    first = req.hold("first")
    wait_until(rep.entered.is_set)
    # Two groups whose resends (every 0.5 s) are out of phase: a replier that
    # moved a resent request to the back would now serve them out of order.
    queued = [req.record(i) for i in range(4)]
    items = [req._items[f._request_id] for f in queued]
    wait_until(lambda: all(it.last_send > it.start for it in items), what="first resends")
    # Start the second group a quarter period after the first group's resend.
    wait_until(lambda: time.monotonic() - max(it.last_send for it in items) > 0.25)
    queued += [req.record(i) for i in range(4, 8)]
    later = [req._items[f._request_id] for f in queued[4:]]
    wait_until(lambda: len(rep._pre) == 8, what="all pre-requests queued")
    wait_until(lambda: all(it.last_send > it.start for it in later), what="second resends")
    # Release once the first group was resent after the second one.
    wait_until(
        lambda: min(it.last_send for it in items) > max(it.last_send for it in later),
        what="the first group resent last",
    )
    rep.release.set()
    assert first.result(GENEROUS) == "first"
    assert [f.result(GENEROUS) for f in queued] == list(range(8))
    assert rep.calls == ["first", *range(8)]


def test_busy_replier_declines_a_direct_request(star):
    """A direct request to a busy replier falls back to the broadcast and still runs once."""
    hub, p, u1, u2 = star(3)
    rep = Calc(p)
    req1 = yoton.ReqChannel(u1, "calc")
    req2 = yoton.ReqChannel(u2, "calc")
    assert req1.add(1, 1).result(GENEROUS) == 2
    assert req2.add(1, 1).result(GENEROUS) == 2
    assert p.id in req1._fast and p.id in req2._fast
    held = req1.hold("held")
    wait_until(rep.entered.is_set)
    second = req2.record("second")  # direct offer -> declined -> broadcast
    wait_until(lambda: not second.running() and len(rep._pre) == 1, what="the fallback")
    rep.release.set()
    assert held.result(GENEROUS) == "held"
    assert second.result(GENEROUS) == "second"
    assert rep.calls == ["held", "second"]


def test_closed_replier_is_forgotten_and_queued_requests_get_an_error(star):
    hub, p, q, u = star(3)
    rep_p = Calc(p)
    req = yoton.ReqChannel(u, "calc")
    assert req.add(1, 1).result(GENEROUS) == 2
    assert p.id in req._fast
    held = req.hold("h")
    wait_until(rep_p.entered.is_set)
    queued = req.record("queued")  # waits for p (the only replier) to be free
    wait_until(lambda: len(rep_p._pre) == 1)
    rep_p.set_mode("off")
    rep_p.release.set()
    assert held.result(GENEROUS) == "h"
    rep_p.close()  # the replier says goodbye to the requesters it knows
    wait_until(lambda: p.id not in req._fast, what="the replier forgotten")
    rep_q = Calc(q)  # a new replier picks up the request still waiting
    assert queued.result(GENEROUS) == "queued"
    assert queued.replier_id == q.id
    assert rep_q.calls == ["queued"]


def test_work_queued_on_a_closing_replier_gets_an_error(pair):
    """A request accepted but not yet run when the replier closes fails, not hangs."""
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.add(1, 1).result(GENEROUS) == 2
    rep.set_mode("event")  # nobody runs the event loop: accepted work waits
    future = req.add(2, 2)
    wait_until(lambda: rep._work, what="the direct request queued")
    rep.close()
    exc = future.exception(GENEROUS)
    assert isinstance(exc, yoton.ConnectionClosedError) and isinstance(exc, yoton.RemoteError)
    assert "closed before it handled" in str(exc)


def test_direct_request_to_a_vanished_replier_falls_back(star, monkeypatch):
    """A direct request nobody acknowledges goes to the other repliers."""
    monkeypatch.setattr(_reqrep, "DIRECT_ACK_TIMEOUT", 0.3)
    hub, p, q, u = star(3)
    rep_p = Calc(p)
    req = yoton.ReqChannel(u, "calc")
    assert req.add(1, 1).result(GENEROUS) == 2
    assert p.id in req._fast
    p._unregister_channel(rep_p)  # vanishes without a word (as if its process hung)
    rep_q = Calc(q)
    future = req.record("x")
    assert future.result(GENEROUS) == "x"
    assert future.replier_id == q.id and rep_q.calls == ["x"] and rep_p.calls == []
    assert p.id not in req._fast


# -- closing and failures --------------------------------------------------------------------


def test_closing_the_reqchannel_ends_its_futures(pair):
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    lonely = yoton.ReqChannel(b, "lonely")
    assert req.add(1, 1).result(GENEROUS) == 2
    running = req.hold(1)
    wait_until(rep.entered.is_set)
    waiting = lonely.anything()
    req.close()
    lonely.close()
    with pytest.raises(yoton.ConnectionClosedError):
        running.result(GENEROUS)
    with pytest.raises(yoton.CancelledError):
        waiting.result(GENEROUS)
    with pytest.raises(OSError):
        req.add(1, 2)
    rep.release.set()


CHILD = """
import sys, threading, time
import yoton

class Slow(yoton.RepChannel):
    def hold(self, x):
        print("HOLDING", flush=True)
        threading.Event().wait()
    def add(self, a, b):
        return a + b

ctx = yoton.Context()
rep = Slow(ctx, "calc")
rep.set_mode("thread")
ctx.connect("tcp://localhost:%d" % int(sys.argv[1]), timeout=10)
print("ID", ctx.id, flush=True)
threading.Event().wait(60)
"""


def spawn_replier(port: int) -> Yoton2Proc:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    return Yoton2Proc(proc)


def test_future_fails_promptly_when_the_replier_process_dies(made_contexts):
    """2.x left the Future running forever (item 11)."""
    ctx = yoton.Context()
    made_contexts.append(ctx)
    conn = ctx.bind("tcp://localhost:0")  # the child is another process
    child = spawn_replier(conn.port1)
    try:
        replier_id = int(child.expect_line("ID"))
        req = yoton.ReqChannel(ctx, "calc")
        assert req.add(1, 2).result(GENEROUS) == 3
        future = req.hold(0)
        child.expect_line("HOLDING")
        assert future.running()
        child.kill()
        exc = future.exception(GENEROUS)
    finally:
        child.kill()
    assert isinstance(exc, yoton.BrokenConnectionError)
    assert hex(replier_id) in str(exc) and "connection closed" in str(exc)
    assert "hold()" in str(exc)


def test_replier_behind_a_relay_that_dies_fails_the_future(made_contexts, monkeypatch):
    """Liveness checks catch a replier whose death we cannot see directly."""
    monkeypatch.setattr(_reqrep, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(_reqrep, "PING_TIMEOUT", 0.8)
    relay, user = yoton.Context(), yoton.Context()
    made_contexts += [relay, user]
    join(relay, user)
    conn = relay.bind("tcp://localhost:0")  # the child is another process
    child = spawn_replier(conn.port1)
    try:
        replier_id = int(child.expect_line("ID"))
        req = yoton.ReqChannel(user, "calc")
        assert req.add(1, 2).result(GENEROUS) == 3
        future = req.hold(0)
        child.expect_line("HOLDING")
        item = req._items[future._request_id]
        # While the replier lives it answers the checks and the request stays running.
        first_ping = item.ping_at
        wait_until(lambda: item.ping_at > first_ping + 0.3, what="several liveness checks")
        assert future.running()
        child.kill()
        exc = future.exception(GENEROUS)
    finally:
        child.kill()
    assert isinstance(exc, yoton.BrokenConnectionError)
    assert hex(replier_id) in str(exc) and "stopped answering" in str(exc)


def test_liveness_check_of_a_live_replier_keeps_the_request(pair, monkeypatch):
    monkeypatch.setattr(_reqrep, "PING_INTERVAL", 0.05)
    monkeypatch.setattr(_reqrep, "PING_TIMEOUT", 0.4)
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.add(1, 1).result(GENEROUS) == 2
    future = req.hold("long")
    wait_until(rep.entered.is_set)
    item = req._items[future._request_id]
    start = item.last_contact
    wait_until(lambda: item.last_contact > start + 1.0, what="a second of answered checks")
    assert future.running()
    rep.release.set()
    assert future.result(GENEROUS) == "long"


def test_lost_request_is_reported(pair, monkeypatch):
    """A replier that does not know a running request says so (req^)."""
    monkeypatch.setattr(_reqrep, "PING_INTERVAL", 0.05)
    a, b = pair
    rep = Calc(a)
    req = yoton.ReqChannel(b, "calc")
    assert req.add(1, 1).result(GENEROUS) == 2
    future = req.hold("x")
    wait_until(rep.entered.is_set)
    with rep._cond:  # the replier forgets it (as if its channel were replaced)
        rep._work_keys.clear()
    exc = future.exception(GENEROUS)
    assert isinstance(exc, yoton.BrokenConnectionError) and "lost" in str(exc)
    rep.release.set()


def test_a_vanished_requester_does_not_hold_up_the_replier(star):
    """Stale pre-requests of a requester that went away (e.g. behind a relay) expire.

    2.x kept an acknowledged pre-request for 10 s each, so a few stale ones
    blocked a replier for half a minute.
    """
    from yoton_core._engine import get_engine

    hub, p, u1, u2 = star(3)
    rep = Calc(p)
    gone = yoton.ReqChannel(u1, "calc")
    req = yoton.ReqChannel(u2, "calc")
    assert gone.add(1, 1).result(GENEROUS) == 2
    held = req.hold("held")
    wait_until(rep.entered.is_set)
    stale = [gone.record(i) for i in range(3)]
    wait_until(lambda: len(rep._pre) == 3, what="the soon-stale pre-requests queued")
    # The requester vanishes without a word: no answers, no resends, no req-.
    u1._unregister_channel(gone)
    get_engine().remove_ticker(gone._tick)
    after = req.record("after")
    wait_until(lambda: len(rep._pre) == 4)
    rep.release.set()
    assert held.result(GENEROUS) == "held"
    assert after.result(GENEROUS) == "after"
    assert rep.calls == ["held", "after"]
    assert not any(f.done() for f in stale)
