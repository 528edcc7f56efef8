"""Join announcements only where wanted (yoton_core/_joins.py), with 2.x peers in the mix.

A hub used to relay every NEW_CONNECTION to every other peer (1,000 peers:
~500,000 packages). Between our own ends the handshake line now says whether
a side wants them; state channels and sync mode still learn about joins, and
a 2.x peer (which cannot say) still gets every one, as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core._handshake import Handshake, format_line
from yoton_core.testing import wait_for

pytestmark = pytest.mark.timeout(60)

MY_ID = 0x1204AE60731A19A9


def join(server: yoton.Context, client: yoton.Context) -> tuple[yoton.Connection, yoton.Connection]:
    """Connect ``client`` to a fresh bind of ``server``; return (server conn, client conn)."""
    s = server.bind("localhost:0")
    c = client.connect(f"localhost:{s.port1}", timeout=5)
    wait_for(lambda: s.is_connected, what="the bound side to get its peer")
    return s, c


# -- the handshake line (sans-IO) ----------------------------------------------------


def test_plain_line_unless_asked() -> None:
    assert format_line(MY_ID, 7) == b"YOTON!1204ae60731a19a9.7\r\n"
    assert format_line(MY_ID, 7, joins=False) == b"YOTON!1204ae60731a19a9.7 \t\r\n"
    assert format_line(MY_ID, 7, joins=True) == b"YOTON!1204ae60731a19a9.7\t \r\n"


@pytest.mark.parametrize(
    ("tail", "cap", "wants"),
    [
        (b"", False, True),  # 2.x (or an older yoton): gets every announcement
        (b"  ", False, True),  # whitespace that is not ours: the same
        (b" \t", True, False),
        (b"\t ", True, True),
    ],
)
def test_peer_line_says_whether_it_wants_joins(tail: bytes, cap: bool, wants: bool) -> None:
    hs = Handshake("bind", MY_ID, 1, joins=False)
    reply = hs.receive_data(b"YOTON!00000000deadbeef.42" + tail + b"\r\n")
    assert hs.state == Handshake.DONE and hs.peer_id == 0xDEADBEEF and hs.peer_pid == 42
    assert (hs.peer_joins_cap, hs.peer_joins) == (cap, wants)
    assert reply == b"YOTON!1204ae60731a19a9.1 \t\r\n"


# -- over TCP, our ends only -----------------------------------------------------------


def test_hub_relays_no_join_nobody_wants(contexts: Any) -> None:
    hub, p1, p2, p3 = contexts(4)
    sub = yoton.SubChannel(p1, "news")
    _, c1 = join(hub, p1)
    join(hub, p2)
    h3, _ = join(hub, p3)
    pub = yoton.PubChannel(p3, "news")
    pub.send("hello")
    assert sub.recv(10) == "hello"
    # p3's NEW_CONNECTION (sent to the hub, its direct peer) would have come
    # before its message along the same links: p1 got the message only.
    assert c1.stats.packages_received == 1
    assert h3.stats.packages_received == 2


def test_state_channel_made_later_asks_for_joins(contexts: Any) -> None:
    hub, holder, late = contexts(3)
    join(hub, holder)
    st = yoton.StateChannel(holder, "joins-state")  # after its link: JOINS 1 to the hub
    st.send("v1")
    st_late = yoton.StateChannel(late, "joins-state")
    join(hub, late)  # its join must reach the holder, which then re-sends "v1"
    wait_for(lambda: st_late.recv() == "v1", what="the state to reach the late context")


def test_sync_mode_subscriber_hears_joins(contexts: Any) -> None:
    hub, p1, p3 = contexts(3)
    sub = yoton.SubChannel(p1, "sync-news")
    sub.set_sync_mode(True)
    _, c1 = join(hub, p1)
    join(hub, p3)
    yoton.PubChannel(p3, "sync-news").send("hello")
    assert sub.recv(10) == "hello"
    assert c1.stats.packages_received == 2  # p3's NEW_CONNECTION, then its message


def test_interest_that_goes_away_stops_the_relay(contexts: Any) -> None:
    hub, p1, p3 = contexts(3)
    st = yoton.StateChannel(p1, "gone")
    sub = yoton.SubChannel(p1, "after")
    _, c1 = join(hub, p1)
    st.close()  # JOINS 0: p1 no longer wants them
    wait_for(lambda: not hub._joins_wanting, what="the hub to hear that p1 wants no joins")
    before = c1.stats.packages_received
    join(hub, p3)
    yoton.PubChannel(p3, "after").send("x")
    assert sub.recv(10) == "x"
    assert c1.stats.packages_received == before + 1


# -- a 2.x peer in the mix -------------------------------------------------------------

HOLDER_2X = """
ctx = yoton.Context()
st = yoton.StateChannel(ctx, "joins-2x")
st.send("from 2.x")
conn = ctx.connect("localhost:%d" % int(read_line()), timeout=5)
say("CONNECTED")
read_line()
"""


def test_2x_peer_still_gets_every_join(contexts: Any) -> None:
    hub, late = contexts(2)
    to_2x = hub.bind("localhost:0")
    with run_yoton2(HOLDER_2X) as p:
        p.send_line(str(to_2x.port1))
        p.expect_line("CONNECTED")
        wait_for(lambda: to_2x.is_connected, what="the 2.x peer to connect")
        # Its state and its NEW_CONNECTION reached the hub (relayed to nobody):
        # from here only a re-send brings the state to a newcomer.
        wait_for(lambda: to_2x.stats.packages_received >= 2, what="2.x's first packages")
        st = yoton.StateChannel(late, "joins-2x")
        # The hub has a 2.x peer, which counts as wanting joins: ``late`` tells
        # the hub of its join, the hub relays it to 2.x, whose holder re-sends.
        join(hub, late)
        wait_for(lambda: st.recv() == "from 2.x", what="2.x's state to reach the late context")
        p.send_line("")
