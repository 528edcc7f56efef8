"""Limits that tests/test_bad_input.py does not already cover.

* ``Context(handshake_timeout=...)`` on both sides, and during authentication;
* ``max_message_size`` between two real contexts, and on every sending channel;
* bounded queues: the RepChannel work queue and the sync-mode inbox cap.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest

import yoton
from yoton_core._sync import SAFETY_FACTOR
from yoton_core._wire import Package
from yoton_core.testing import wait_for

TIMEOUT = 10.0


@pytest.fixture(params=["tcp", "unix"])
def stream_scheme(request: pytest.FixtureRequest) -> str:
    if request.param == "unix":
        request.getfixturevalue("rundir")
    return request.param


def raw_connect(conn: yoton.Connection) -> socket.socket:
    if conn.scheme == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(conn.hostname1)
        return s
    return socket.create_connection(("127.0.0.1", conn.port1), timeout=TIMEOUT)


def read_until_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def address_of(conn: yoton.Connection) -> str:
    return f"{conn.scheme}://localhost:{conn.port1}"


# -- handshake timeout -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, "3", True, float("nan")])
def test_bad_handshake_timeout(bad: object) -> None:
    with pytest.raises(ValueError, match="handshake_timeout"):
        yoton.Context(handshake_timeout=bad)  # type: ignore[arg-type]


def test_context_handshake_timeout_drops_a_silent_client(stream_scheme, contexts) -> None:
    a = contexts(handshake_timeout=0.3)
    conn = a.bind(f"{stream_scheme}://localhost:0")
    assert conn.handshake_timeout == 0.3
    with raw_connect(conn) as s:
        assert read_until_eof(s) == b""  # dropped, and told nothing
    assert conn.is_waiting
    contexts().connect(address_of(conn), timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "a real peer after the silent one")


def test_context_handshake_timeout_on_the_connect_side(contexts) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        port = listener.getsockname()[1]
        with pytest.raises(yoton.TimeoutError, match="Handshake timed out"):
            contexts(handshake_timeout=0.3).connect(f"tcp://localhost:{port}", timeout=TIMEOUT)
    finally:
        listener.close()


def test_a_stall_during_authentication_is_dropped(stream_scheme, contexts, caplog) -> None:
    a = contexts(auth_key="k", handshake_timeout=0.3)
    conn = a.bind(f"{stream_scheme}://localhost:0")
    with caplog.at_level(logging.WARNING, logger="yoton"), raw_connect(conn) as s:
        s.sendall(b"YOTON!%016x.%d\r\nYOTON-AUTH1 HELLO\r\n" % (0xABC, os.getpid()))
        got = read_until_eof(s)  # then say nothing more
        assert got.startswith(b"YOTON!") and b"YOTON-AUTH1 CHALLENGE " in got
        wait_for(lambda: "timed out" in caplog.text, TIMEOUT, "the reason")
    contexts(auth_key="k").connect(address_of(conn), timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "a real peer")


# -- maximum message size ----------------------------------------------------------------


def test_receiver_limit_closes_the_link_between_contexts(stream_scheme, contexts) -> None:
    small = contexts(max_message_size=1000)
    big = contexts()
    conn = small.bind(f"{stream_scheme}://localhost:0")
    other = big.connect(address_of(conn), timeout=TIMEOUT)
    sub = yoton.SubChannel(small, "t", yoton.BINARY)
    pub = yoton.PubChannel(big, "t", yoton.BINARY)
    pub.send(b"x" * 1000)
    assert sub.recv(TIMEOUT) == b"x" * 1000
    pub.send(b"y" * 2000)  # fine for the sender, too large for the receiver
    wait_for(lambda: not conn.is_alive, TIMEOUT, "the receiver to close")
    assert "2000" in (conn.close_reason or "") and "1000" in (conn.close_reason or "")
    wait_for(lambda: not other.is_alive, TIMEOUT, "the sender to notice")
    assert sub.recv(False) == b""  # the large message was not delivered


def test_every_sending_channel_checks_the_limit_before_the_wire(contexts) -> None:
    a, b = contexts(max_message_size=200), contexts()
    conn = a.bind("inproc://limits")
    b.connect("inproc://limits", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the link")
    state = yoton.StateChannel(a, "s")  # (made late, it asks for the state: one package)
    a.flush()
    before = conn.stats.packages_sent
    with pytest.raises(ValueError, match="maximum message size"):
        state.send("z" * 500)
    req = yoton.ReqChannel(a, "calc")
    with pytest.raises(ValueError, match="maximum message size"):
        req.add("q" * 500)
    pub = yoton.PubChannel(a, "p", yoton.OBJECT)
    with pytest.raises(ValueError, match="maximum message size"):
        pub.send(["w" * 500])
    a.flush()
    assert conn.stats.packages_sent == before  # nothing reached the link
    pub.send(["fits"])  # and the channel still works
    a.flush()
    assert conn.stats.packages_sent == before + 1


@pytest.mark.parametrize("bad", [0, -5, 1.5, "big"])
def test_bad_max_message_size(bad: object) -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        yoton.Context(max_message_size=bad)  # type: ignore[arg-type]


# -- bounded queues ----------------------------------------------------------------------


def test_replier_work_queue_is_bounded(contexts) -> None:
    """Unsolicited requests (no pre-request) cannot grow a replier's queue without bound."""
    a = contexts(queue_params=(4, "old"))
    b = contexts()
    rep = yoton.RepChannel(a, "svc")  # mode off: nothing is served, everything queues
    conn = a.bind("inproc://bounded-rep")
    b.connect("inproc://bounded-rep", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the link")
    assert rep._slot_in is not None
    for k in range(1, 21):
        b._send_package(Package(b"\x00request", rep._slot_in, b.id, 0, a.id, k))
    wait_for(lambda: rep.dropped == 16, TIMEOUT, "the excess requests to be dropped")
    assert len(rep._work) == 4


def test_sync_mode_inbox_has_a_hard_cap(contexts) -> None:
    """A publisher that ignores sync mode (e.g. yoton 2.x) cannot fill memory."""
    a = contexts(queue_params=(2, "old"))
    b = contexts()
    sub = yoton.SubChannel(a, "t")
    sub.set_sync_mode(True)
    conn = a.bind("inproc://bounded-sync")
    b.connect("inproc://bounded-sync", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the link")
    cap = 2 * SAFETY_FACTOR
    assert sub._slot_in is not None
    for k in range(cap + 50):
        b._send_package(Package(b"%d" % k, sub._slot_in, b.id))
    wait_for(lambda: sub.dropped == 50, TIMEOUT, "the excess to be dropped")
    assert sub.pending == cap
    assert sub.recv(False) == "50"  # policy "old": the oldest went
