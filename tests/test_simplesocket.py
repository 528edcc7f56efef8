"""SimpleSocket (PROTOCOL.md section 11) over real TCP connections.

Every test joins real contexts over TCP on ``localhost:0``. Blocking behaviour
is checked without sleeps: a reader runs in a thread, the test waits (with
:func:`wait_for`) until that reader is parked inside the channel, and only
then sends; a reader that does not block would have returned before that.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core.testing import recv_n, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def contexts() -> Iterator[Callable[..., Any]]:
    """``make(cls=yoton.Context, **kw)``; everything made is closed afterwards."""
    made: list[yoton.Context] = []

    def make(cls: Any = yoton.Context, **kw: Any) -> Any:
        ctx = cls(**kw)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def join(server: yoton.Context, client: yoton.Context) -> None:
    """Connect ``client`` to a fresh TCP bind of ``server`` on any free port."""
    conn = server.bind("localhost:0")
    client.connect(f"localhost:{conn.port1}", timeout=5)
    wait_for(lambda: conn.is_connected, what="the bound side to get its peer")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a daemon thread; the list gets its result (or exception)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def finished(t: threading.Thread, out: list[Any]) -> Any:
    """Join ``t`` (generously) and return what it produced."""
    t.join(10)
    assert not t.is_alive(), "the call did not return"
    assert len(out) == 1
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def parked(sub: yoton.SubChannel) -> Callable[[], bool]:
    """True once a reader is waiting inside ``sub`` (blocked, not polling past it)."""
    return lambda: sub._waiters > 0


# == SimpleSocket ==================================================================


@pytest.fixture
def sockets(contexts: Callable[..., Any]) -> tuple[yoton.SimpleSocket, yoton.SimpleSocket]:
    a = contexts(yoton.SimpleSocket)
    b = contexts(yoton.SimpleSocket)
    join(a, b)
    return a, b


def test_simplesocket_is_public_and_a_context() -> None:
    assert "SimpleSocket" in yoton.__all__
    assert issubclass(yoton.SimpleSocket, yoton.Context)


def test_simplesockets_talk_both_ways_over_tcp(sockets: Any) -> None:
    a, b = sockets
    for i in range(5):
        b.send(f"b{i}")
    a.send("from a ✓")
    assert [a.recv(10.0) for _ in range(5)] == [f"b{i}" for i in range(5)]
    assert b.recv(10.0) == "from a ✓"
    assert a.recv() == "" and b.recv() == ""


def test_simplesocket_does_not_receive_its_own_messages(sockets: Any) -> None:
    a, b = sockets
    a.send("mine")
    assert b.recv(10.0) == "mine"
    # Local delivery happens inside send(), so by now an echo would be queued.
    assert a.pending == 0 and a.recv() == ""
    lonely = yoton.SimpleSocket()
    try:
        lonely.send("nobody hears this")
        assert lonely.recv() == ""
    finally:
        lonely.close()


def test_simplesocket_recv_does_not_block_by_default(sockets: Any) -> None:
    a, _b = sockets
    for call in (a.recv, lambda: a.recv(None), lambda: a.recv(False), lambda: a.recv(0)):
        t, out = in_thread(call)
        assert finished(t, out) == ""


@pytest.mark.parametrize("block", [True, 30, 30.0, math.inf])
def test_simplesocket_recv_waits_when_asked(sockets: Any, block: Any) -> None:
    a, b = sockets
    t, out = in_thread(lambda: a.recv(block))
    wait_for(parked(a._sub), what="recv to wait for a message")
    b.send("late")
    assert finished(t, out) == "late"


def test_simplesocket_recv_with_timeout_gives_empty_string(sockets: Any) -> None:
    a, _b = sockets
    assert a.recv(0.05) == ""


@pytest.mark.parametrize(
    ("block", "error"),
    [("soon", TypeError), ([1], TypeError), (-1, ValueError), (math.nan, ValueError)],
)
def test_simplesocket_recv_rejects_bad_block(sockets: Any, block: Any, error: type) -> None:
    a, b = sockets
    b.send("keep me")
    wait_for(lambda: a.pending == 1, what="the message to arrive")
    with pytest.raises(error, match=r"SimpleSocket\.recv\(\): block must be None/False"):
        a.recv(block)
    # Checked before reading: the bad call did not swallow the message.
    assert a.recv() == "keep me"


def test_simplesocket_meets_plain_channels_on_slot_text(contexts: Callable[..., Any]) -> None:
    sock = contexts(yoton.SimpleSocket)
    listener, talker = contexts(), contexts()  # apart: a local Pub would reach the Sub
    join(sock, listener)
    join(sock, talker)
    sub = yoton.SubChannel(listener, "text")
    pub = yoton.PubChannel(talker, "TEXT")  # slots are case-insensitive
    assert sock._pub.slot_outgoing == "text.txt.pub-sub"
    sock.send("to plain")
    pub.send("to socket")
    assert recv_n(sub, 1) == ["to plain"]
    assert sock.recv(10.0) == "to socket"


def test_simplesocket_send_needs_str(sockets: Any) -> None:
    a, b = sockets
    with pytest.raises(ValueError, match="expected str, got bytes"):
        a.send(b"raw")
    a.send("")  # empty messages are never sent ...
    a.send("after")
    assert b.recv(10.0) == "after"  # ... so this is the first to arrive


def test_simplesocket_close(sockets: Any) -> None:
    a, b = sockets
    b.send("queued")
    wait_for(lambda: a.pending == 1, what="the message to arrive")
    a.close()
    with pytest.raises(OSError, match="closed"):
        a.send("x")
    assert a.recv() == "queued"  # what was queued stays readable
    t, out = in_thread(lambda: a.recv(True))  # closed: returns instead of waiting
    assert finished(t, out) == ""


def test_simplesocket_passes_context_options(contexts: Callable[..., Any]) -> None:
    s = contexts(yoton.SimpleSocket, verbose=True, queue_params=(3, "new"))
    assert s.queue_params == (3, "new")
    with pytest.raises(TypeError):
        yoton.SimpleSocket(transport=5)


TWO_X_SOCKET = """
s = yoton.SimpleSocket()
s.connect("localhost:%d" % int(read_line()), timeout=5)
say("CONNECTED")
s.send("from 2.x")
say("GOT", repr(s.recv(10.0)))
"""


def test_simplesocket_talks_to_a_2x_simplesocket(contexts: Callable[..., Any]) -> None:
    ours = contexts(yoton.SimpleSocket)
    conn = ours.bind("localhost:0")
    with run_yoton2(TWO_X_SOCKET) as peer:
        peer.send_line(str(conn.port1))
        peer.expect_line("CONNECTED")
        assert ours.recv(10.0) == "from 2.x"
        ours.send("from 3")
        assert peer.expect_line("GOT") == repr("from 3")
