"""Req/rep, state and sync mode between our contexts and yoton 2.x in another process (TCP).

The 2.x side runs pyzo's yoton through :func:`yoton2.run_yoton2`; every step a
side must wait for is acknowledged with a line, so nothing relies on sleeps.
2.x requesters poll every 10 ms and resend every 0.5 s, so these tests make
only a handful of 2.x calls.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core.testing import wait_for as wait_until

pytestmark = pytest.mark.timeout(90)

GENEROUS = 10.0


@pytest.fixture
def ctx() -> Iterator[yoton.Context]:
    c = yoton.Context()
    yield c
    c.close()


# -- our ReqChannel, 2.x RepChannel -------------------------------------------------------

REPLIER_2X = """
class Calc(yoton.RepChannel):
    def add(self, a, b):
        return a + b
    def divide(self, a, b):
        return a / b
    def kw(self, *args, **kwargs):
        return [list(args), kwargs]
    def big(self, n):
        return list(range(n))

ctx = yoton.Context()
rep = Calc(ctx, "calc")
rep.set_mode("thread")
conn = ctx.bind("tcp://localhost:0")
say("PORT", conn.port1)
say("ID", ctx.id)
read_line()
"""


def test_our_requests_are_answered_by_a_2x_replier(ctx):
    with run_yoton2(REPLIER_2X) as child:
        port = int(child.expect_line("PORT"))
        child_id = int(child.expect_line("ID"))
        req = yoton.ReqChannel(ctx, "calc")
        ctx.connect(f"tcp://localhost:{port}", timeout=GENEROUS)
        assert req.add(3, 4).result(GENEROUS) == 7
        assert req.echo("hi").result(GENEROUS) == ("hi", hex(child_id))
        value = {"k": [1, 2.5, None, ("t",)], 3: "x"}
        assert req.kw(1, value, a="b").result(GENEROUS) == [[1, value], {"a": "b"}]
        assert len(req.big(5000).result(GENEROUS)) == 5000
        assert req._fast == {}  # a 2.x replier never offered the direct path
        # Several requests in flight at once from several threads.
        results = {}

        def call(k: int) -> None:
            results[k] = req.add(k, k).result(GENEROUS)

        threads = [threading.Thread(target=call, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(GENEROUS * 2)
        assert results == {k: 2 * k for k in range(5)}
        child.send_line("bye")


def test_a_2x_error_reply_becomes_a_remote_error(ctx):
    with run_yoton2(REPLIER_2X) as child:
        port = int(child.expect_line("PORT"))
        req = yoton.ReqChannel(ctx, "calc")
        ctx.connect(f"tcp://localhost:{port}", timeout=GENEROUS)
        exc = req.divide(1, 0).exception(GENEROUS)
        assert isinstance(exc, yoton.RemoteError)
        assert exc.message == "division by zero"  # 2.x does not send the type
        assert exc.remote_traceback.startswith("line ")
        missing = req.nope().exception(GENEROUS)
        assert isinstance(missing, yoton.RemoteError) and "nope" in str(missing)
        assert req.add(1, 1).result(GENEROUS) == 2  # the replier still works
        child.send_line("bye")


# -- 2.x ReqChannel, our RepChannel ----------------------------------------------------------

REQUESTER_2X = """
ctx = yoton.Context()
req = yoton.ReqChannel(ctx, "calc")
ctx.connect("localhost:%d" % int(read_line()), timeout=10)

def call(name, *args, **kwargs):
    try:
        value = getattr(req, name)(*args, **kwargs).result(10)
        say(name.upper(), "OK", repr(value))
    except Exception as exc:
        say(name.upper(), "ERROR", type(exc).__name__, repr(str(exc)))

call("add", 3, 4)
call("echo", "hi")
call("divide", 1, 0)
call("bad_result")
call("set_mode", "off")
call("mode")
call("add", 1, 1)
read_line()
"""


class Calc(yoton.RepChannel):
    def add(self, a, b):
        return a + b

    def divide(self, a, b):
        return a / b

    def bad_result(self):
        return {1, 2}


def test_2x_requests_are_answered_by_our_replier(ctx):
    rep = Calc(ctx, "calc")
    rep.set_mode("thread")
    conn = ctx.bind("tcp://localhost:0")
    with run_yoton2(REQUESTER_2X) as child:
        child.send_line(str(conn.port1))
        lines = {
            key: child.expect_line(key, timeout=GENEROUS * 2)
            for key in ("ADD", "ECHO", "DIVIDE", "BAD_RESULT", "SET_MODE", "MODE")
        }
        last_add = child.expect_line("ADD", timeout=GENEROUS * 2)
        child.send_line("bye")
    assert lines["ADD"] == "OK 7" and last_add == "OK 2"
    assert lines["ECHO"] == "OK " + repr(("hi", hex(ctx.id)))
    status, kind, text = lines["DIVIDE"].split(" ", 2)
    assert (status, kind) == ("ERROR", "Exception")
    assert ast.literal_eval(text).startswith("ZeroDivisionError: division by zero\nline ")
    status, _kind, text = lines["BAD_RESULT"].split(" ", 2)
    assert status == "ERROR" and "cannot be sent" in text  # an error, not silence
    for key in ("SET_MODE", "MODE"):
        status, _kind, text = lines[key].split(" ", 2)
        assert status == "ERROR" and "refuses" in text, lines[key]
    assert rep.mode == "thread"  # the remote set_mode("off") was refused


# -- state channels ---------------------------------------------------------------------------

STATE_2X = """
ctx = yoton.Context()
st = yoton.StateChannel(ctx, "cfg", yoton.OBJECT)
st.send({"set": "by 2.x before connecting"})
ctx.connect("localhost:%d" % int(read_line()), timeout=10)
say("CONNECTED")

want = ast.literal_eval(read_line())
wait_until(lambda: st.recv() == want)
say("STATE", repr(st.recv()))
st.send({"set": "by 2.x"})
say("SENT")
read_line()
"""


def test_state_channels_both_ways(ctx):
    st = yoton.StateChannel(ctx, "cfg", yoton.OBJECT)
    conn = ctx.bind("tcp://localhost:0")
    with run_yoton2(STATE_2X) as child:
        child.send_line(str(conn.port1))
        child.expect_line("CONNECTED")
        wait_until(lambda: st.recv() == {"set": "by 2.x before connecting"})
        st.send({"set": "by us"})
        child.send_line(repr({"set": "by us"}))
        assert ast.literal_eval(child.expect_line("STATE")) == {"set": "by us"}
        child.expect_line("SENT")
        wait_until(lambda: st.recv() == {"set": "by 2.x"})
        child.send_line("bye")


STATE_JOIN_2X = """
ctx = yoton.Context()
st = yoton.StateChannel(ctx, "cfg")
ctx.connect("localhost:%d" % int(read_line()), timeout=10)
wait_until(lambda: st.recv() != "")
say("STATE", repr(st.recv()))
read_line()
"""


def test_our_state_set_before_connecting_reaches_a_2x_joiner(ctx):
    st = yoton.StateChannel(ctx, "cfg")
    st.send("ours, set before anyone joined")
    conn = ctx.bind("tcp://localhost:0")
    with run_yoton2(STATE_JOIN_2X) as child:
        child.send_line(str(conn.port1))
        assert ast.literal_eval(child.expect_line("STATE")) == "ours, set before anyone joined"
        child.send_line("bye")


RELAY_2X = """
ctx = yoton.Context()
for port in read_line().split():
    ctx.connect("localhost:%d" % int(port), timeout=10)
say("CONNECTED")
read_line()
say("BYE")
"""


def test_a_late_state_channel_asks_through_a_2x_relay(ctx):
    """Our holder -- 2.x relay -- our context whose StateChannel is made after it
    joined: the request passes the 2.x relay (a package on a slot it has no
    channel for, passed on in silence) and our holder's answer comes back."""
    late = yoton.Context()
    try:
        st = yoton.StateChannel(ctx, "cfg")
        c1, c2 = ctx.bind("tcp://localhost:0"), late.bind("tcp://localhost:0")
        marker = yoton.SubChannel(late, "marker")
        with run_yoton2(RELAY_2X) as child:
            child.send_line(f"{c1.port1} {c2.port1}")
            child.expect_line("CONNECTED")
            wait_until(lambda: ctx.connection_count == 1 and late.connection_count == 1)
            st.send("ours")  # passes the late context before it has a channel
            yoton.PubChannel(ctx, "marker").send("after the state")
            assert marker.recv(GENEROUS) == "after the state"
            late_st = yoton.StateChannel(late, "cfg")
            wait_until(lambda: late_st.recv() == "ours", what="our holder's answer")
            child.send_line("bye")
            child.expect_line("BYE")
            assert not [line for line in child.lines if "unknown" in line.lower()], child.lines
    finally:
        late.close()


# -- sync mode ----------------------------------------------------------------------------------

PUBLISHER_2X = """
ctx = yoton.Context()
pub = yoton.PubChannel(ctx, "data", yoton.BINARY)
ctx.connect("localhost:%d" % int(read_line()), timeout=10)
n, first = map(int, read_line().split())
locked = False
for i in range(n):
    locked = locked or bool(pub._is_send_locked)
    if i == first and not locked:
        # 2.x queues sends without waiting for the socket: on a loaded machine it
        # queued all n before our "full" came. Go on once it locked this channel.
        assert wait_until(lambda: pub._is_send_locked), "our 'full' never locked it"
    pub.send(i.to_bytes(4, "little"))
say("DONE")
read_line()
"""


def test_our_sync_subscriber_throttles_a_2x_publisher(ctx):
    sub = yoton.SubChannel(ctx, "data", yoton.BINARY)
    sub.set_sync_mode(True)
    conn = ctx.bind("tcp://localhost:0")
    n = 3000
    with run_yoton2(PUBLISHER_2X) as child:
        child.send_line(str(conn.port1))
        wait_until(lambda: ctx.connection_count == 1)
        child.send_line(f"{n} {n // 4}")  # "full" is due after 256
        sync = sub._sync
        assert sync is not None
        wait_until(lambda: sync.full, what="our subscriber saying full")
        # Until we read, the 2.x publisher is stuck (at 1 message per second).
        # "Stuck" is the absence of progress, which only shows over time: this
        # observes that ``pending`` stops growing (0.3 s without a change)
        # before checking that most of the n messages are held back.
        last, stable_since = sub.pending, time.monotonic()
        give_up = stable_since + GENEROUS
        while time.monotonic() - stable_since < 0.3:
            assert time.monotonic() < give_up, f"the 2.x publisher never stopped ({last} queued)"
            if sub.pending != last:
                last, stable_since = sub.pending, time.monotonic()
            time.sleep(0.01)  # observation window (see above), not synchronisation
        assert sub.pending < n // 2
        got: list[int] = []
        deadline = time.monotonic() + 30  # without our "ok" this would take ~n seconds
        while len(got) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} arrived"
            got += [int.from_bytes(m, "little") for m in sub.recv_all()]
            if len(got) < n:
                m = sub.recv(0.5)
                if m:
                    got.append(int.from_bytes(m, "little"))
        assert got == list(range(n))
        child.expect_line("DONE")
        child.send_line("bye")


SUBSCRIBER_2X = """
ctx = yoton.Context()
sub = yoton.SubChannel(ctx, "data", yoton.BINARY)
sub.set_sync_mode(True)
ctx.connect("localhost:%d" % int(read_line()), timeout=10)
say("CONNECTED")
first = int(read_line())
wait_until(lambda: sub.pending >= first)
got = [sub.recv(False)]  # a read runs 2.x's status check: more than 32 queued -> "full"
say("FULL", sub.pending)
n = int(read_line())
while len(got) < n:
    m = sub.recv(5.0)
    if not m:
        break
    got.append(m)
values = [int.from_bytes(m, "little") for m in got]
say("RESULT", len(values), values == list(range(len(values))))
read_line()
"""


def test_a_2x_sync_subscriber_throttles_our_publisher(ctx):
    pub = yoton.PubChannel(ctx, "data", yoton.BINARY)
    conn = ctx.bind("tcp://localhost:0")
    first, n = 200, 5000
    with run_yoton2(SUBSCRIBER_2X) as child:
        child.send_line(str(conn.port1))
        child.expect_line("CONNECTED")
        wait_until(lambda: ctx.connection_count == 1)
        child.send_line(str(first))
        for i in range(first):
            pub.send(i.to_bytes(4, "little"))
        child.expect_line("FULL")
        wait_until(lambda: pub._sync_blocked, what="the 2.x 'full' reaching our publisher")
        sent = [first]

        def rest() -> None:
            for i in range(first, n):
                pub.send(i.to_bytes(4, "little"))
                sent[0] = i + 1

        waits = getattr(pub, "_sync_waits", 0)
        sender = threading.Thread(target=rest, daemon=True)
        sender.start()
        wait_until(lambda: getattr(pub, "_sync_waits", 0) > waits, what="the sender waiting")
        assert sent[0] == first and sender.is_alive()  # blocked before its first send
        child.send_line(str(n))  # now the 2.x side reads; its "ok" releases us
        assert child.expect_line("RESULT", timeout=30) == f"{n} True"
        sender.join(GENEROUS)
        assert not sender.is_alive()
        child.send_line("bye")
