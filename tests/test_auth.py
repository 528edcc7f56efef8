"""Shared-secret authentication: the pure exchange (_auth.py) and every transport.

A peer without the key (or with another one) must be refused before any of
its packages is routed, with a reason on both sides; with no key anywhere the
2.x line exchange is unchanged (the interop tests cover that).
"""

from __future__ import annotations

import logging
import os
import socket

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core._auth import (
    MAGIC,
    NO_KEY_REASON,
    Authenticator,
    _mac,
    is_auth_message,
    normalize_auth_key,
    pairing_problem,
)
from yoton_core.testing import wait_for

TIMEOUT = 10.0
ID_B, ID_C = 0x1111, 0x2222
NB, NC = b"b" * 16, b"c" * 16


def pair(key_b: bytes = b"k", key_c: bytes = b"k") -> tuple[Authenticator, Authenticator]:
    return (
        Authenticator("bind", key_b, ID_B, ID_C, nonce=NB),
        Authenticator("connect", key_c, ID_C, ID_B, nonce=NC),
    )


def run(bind: Authenticator, conn: Authenticator) -> None:
    """Shuttle bytes between the two machines until neither has anything to say."""
    to_c = bind.initiate()
    to_b = conn.initiate()
    while to_c or to_b:
        to_b, to_c = (conn.receive_data(to_c) if to_c else b""), b""
        if to_b:
            to_c = bind.receive_data(to_b)


# -- the pure exchange -------------------------------------------------------------------


def test_same_key_authenticates_both_ways_and_keeps_what_follows() -> None:
    b, c = pair()
    challenge = b.initiate()
    assert challenge.startswith(MAGIC) and is_auth_message(challenge)
    response = c.receive_data(challenge)
    ok = b.receive_data(response)
    assert b.state == Authenticator.DONE
    c.receive_data(ok + b"first frame")
    assert c.state == Authenticator.DONE
    assert c.leftover == b"first frame"
    c.receive_data(b" more")
    assert c.leftover == b"first frame more"


def test_byte_by_byte_delivery() -> None:
    b, c = pair()
    out = b""
    for byte in b.initiate():
        out += c.receive_data(bytes([byte]))
    ok = b""
    for byte in out:
        ok += b.receive_data(bytes([byte]))
    for byte in ok:
        c.receive_data(bytes([byte]))
    assert b.state == c.state == Authenticator.DONE


def test_wrong_key_is_refused_with_reasons_on_both_sides() -> None:
    b, c = pair(b"right", b"wrong")
    reply = b.receive_data(c.receive_data(b.initiate()))
    assert b.state == Authenticator.FAILED and "wrong key" in (b.error or "")
    assert reply == b"YOTON-AUTH1 FAIL wrong key\r\n"
    c.receive_data(reply)
    assert c.state == Authenticator.FAILED
    assert "wrong key" in (c.error or "") and "refused us" in (c.error or "")


def test_the_key_never_crosses_the_wire() -> None:
    key = b"super secret key material"
    b, c = pair(key, key)
    wire = b.initiate()
    wire += c.receive_data(wire)
    wire += b.receive_data(wire[len(b.initiate()) :])
    assert key not in wire and key.hex().encode() not in wire


def test_reflected_answer_does_not_verify() -> None:
    """An impostor bind side without the key echoes the client's proof back as its own."""
    _, c = pair()
    response = c.receive_data(b"YOTON-AUTH1 CHALLENGE %s\r\n" % NB.hex().encode())
    mac_c = response.split()[-1]
    c.receive_data(b"YOTON-AUTH1 OK " + mac_c + b"\r\n")
    assert c.state == Authenticator.FAILED and "wrong key" in (c.error or "")


def test_echoed_challenge_is_refused() -> None:
    """A connect side that answers with the bind side's own nonce (a reflection) fails.

    Even with a MAC that verifies: the nonce of the answer must be the peer's
    own, fresh one, so that the bind side's nonce never appears in both places
    (the MAC here is computed with the key, as a reflected one would be).
    """
    b, _ = pair()
    b.initiate()
    valid_mac = _mac(b"k", "connect", NB, NB, ID_B, ID_C)
    reply = b.receive_data(
        b"YOTON-AUTH1 RESPONSE %s %s\r\n" % (NB.hex().encode(), valid_mac.hex().encode())
    )
    assert b.state == Authenticator.FAILED and "wrong key" in (b.error or "")
    assert reply == b"YOTON-AUTH1 FAIL wrong key\r\n"
    # the same answer with a fresh nonce of its own (and its MAC) is accepted
    b2, _ = pair()
    b2.initiate()
    good_mac = _mac(b"k", "connect", NB, NC, ID_B, ID_C)
    b2.receive_data(
        b"YOTON-AUTH1 RESPONSE %s %s\r\n" % (NC.hex().encode(), good_mac.hex().encode())
    )
    assert b2.state == Authenticator.DONE


def test_replayed_response_fails_against_a_fresh_challenge() -> None:
    b1, c1 = pair()
    response = c1.receive_data(b1.initiate())
    b2 = Authenticator("bind", b"k", ID_B, ID_C)  # a new connection: a random nonce
    b2.initiate()
    b2.receive_data(response)
    assert b2.state == Authenticator.FAILED and "wrong key" in (b2.error or "")


def test_ids_are_bound_into_the_proof() -> None:
    b = Authenticator("bind", b"k", ID_B, 0x9999, nonce=NB)  # the peer claimed another id
    _, c = pair()
    b.receive_data(c.receive_data(b.initiate()))
    assert b.state == Authenticator.FAILED


def test_nonces_are_random() -> None:
    seen = {Authenticator("bind", b"k", 1, 2).initiate() for _ in range(50)}
    assert len(seen) == 50


@pytest.mark.parametrize("role", ["bind", "connect"])
def test_non_auth_data_means_the_peer_has_no_key(role: str) -> None:
    a = Authenticator(role, b"k", 1, 2)  # type: ignore[arg-type]
    a.initiate()
    frame = b"\x59\x4f\x54\x4f\x4e\x00\x00\x00" + bytes(48)  # what a keyless peer sends next
    reply = a.receive_data(frame[:6] + b"x" + frame[7:])
    assert a.state == Authenticator.FAILED
    assert (a.error or "").startswith("Authentication required")
    assert "Context(auth_key=...)" in (a.error or "")
    assert reply.startswith(b"YOTON-AUTH1 FAIL")


def test_garbled_and_overlong_lines_fail() -> None:
    b, _ = pair()
    b.initiate()
    assert b.receive_data(b"YOTON-AUTH1 RESPONSE nothex\r\n").startswith(b"YOTON-AUTH1 FAIL")
    assert b.state == Authenticator.FAILED
    b2, _ = pair()
    b2.receive_data(MAGIC + b"x" * 400)
    assert b2.state == Authenticator.FAILED and "over-long" in (b2.error or "")


def test_peer_without_key_reply_reads_as_required() -> None:
    _, c = pair()
    c.receive_data(b"YOTON-AUTH1 FAIL the connecting context has no auth_key\r\n")
    assert (c.error or "").startswith("Authentication required")


@pytest.mark.parametrize(
    "key, expected", [("pässword", "pässword".encode()), (b"k", b"k"), (bytearray(b"ab"), b"ab")]
)
def test_key_normalisation(key: object, expected: bytes) -> None:
    assert normalize_auth_key(key) == expected
    assert normalize_auth_key(None) is None


@pytest.mark.parametrize("bad, exc", [("", ValueError), (b"", ValueError), (123, TypeError)])
def test_bad_keys_are_refused(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="auth_key"):
        yoton.Context(auth_key=bad)  # type: ignore[arg-type]


def test_pairing_rule_for_transports_without_bytes() -> None:
    assert pairing_problem(None, None) is None
    assert pairing_problem(b"k", b"k") is None
    assert pairing_problem(None, b"k")[0] == NO_KEY_REASON  # type: ignore[index]
    for ours, theirs in ((None, b"k"), (b"k", None), (b"k", b"j")):
        problem = pairing_problem(ours, theirs)
        assert problem is not None and all(r.startswith("Authentication") for r in problem)


# -- over the transports ---------------------------------------------------------------


@pytest.fixture(params=["tcp", "unix", "inproc"])
def scheme(request: pytest.FixtureRequest) -> str:
    if request.param == "unix":
        request.getfixturevalue("rundir")
    return request.param


def test_same_key_works_for_pubsub_and_reqrep(scheme: str, contexts) -> None:
    a, b = contexts(auth_key="s3cret"), contexts(auth_key=b"s3cret")
    conn = a.bind(f"{scheme}://localhost:0")
    b.connect(f"{scheme}://localhost:{conn.port1}", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the bound end")
    sub = yoton.SubChannel(a, "news")
    yoton.PubChannel(b, "news").send("authenticated")
    assert sub.recv(TIMEOUT) == "authenticated"

    class Calc(yoton.RepChannel):
        def add(self, x: int, y: int) -> int:
            return x + y

    rep = Calc(a, "calc")
    rep.set_mode("thread")
    assert yoton.ReqChannel(b, "calc").add(2, 3).result(TIMEOUT) == 5


def test_keyed_bind_side_routes_to_the_peer_before_its_connect_returns(
    scheme: str, contexts
) -> None:
    """The bind side holds its final OK until its end is registered (as without a key)."""
    for attempt in range(10):
        a, b, c = (contexts(auth_key="k") for _ in range(3))
        pub, sub = yoton.PubChannel(a, "news"), yoton.SubChannel(c, "news")
        first = a.bind(f"{scheme}://localhost:0")
        b.connect(f"{scheme}://localhost:{first.port1}", timeout=TIMEOUT)

        def linked(first: yoton.Connection = first) -> bool:
            return first.is_connected

        wait_for(linked, TIMEOUT, "the bound end")
        hop = b.bind(f"{scheme}://localhost:0")
        c.connect(f"{scheme}://localhost:{hop.port1}", timeout=TIMEOUT)  # (no waiting for b)
        pub.send(f"try {attempt}")
        assert sub.recv(TIMEOUT) == f"try {attempt}"


@pytest.mark.parametrize(
    "bind_key, connect_key, connect_words, bind_words",
    [
        ("right", "wrong", "wrong key", "wrong key"),
        ("right", None, "Authentication required", "Authentication required"),
        (None, "right", "Authentication required", "Authentication required"),
    ],
)
def test_mismatch_is_refused_before_routing(
    scheme: str, contexts, caplog, bind_key, connect_key, connect_words, bind_words
) -> None:
    """Both sides refuse with a reason, whichever side lacks the key."""
    a = contexts(auth_key=bind_key)
    intruder = contexts(auth_key=connect_key)
    sub = yoton.SubChannel(a, "news")
    # Queued before connecting: would go out at once if the link came up.
    yoton.PubChannel(intruder, "news").send("must not arrive")
    conn = a.bind(f"{scheme}://localhost:0")
    address = f"{scheme}://localhost:{conn.port1}"
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with pytest.raises(ConnectionRefusedError, match=connect_words) as info:
            intruder.connect(address, timeout=TIMEOUT)
        assert "Context(auth_key=...)" in str(info.value) or "wrong key" in str(info.value)
        # The bind side says why, and keeps waiting for a real peer.
        wait_for(
            lambda: any(bind_words in r.getMessage() for r in caplog.records),
            TIMEOUT,
            "the bind side's reason",
        )
        assert conn.is_waiting
        friend = contexts(auth_key=bind_key)
        friend.connect(address, timeout=TIMEOUT)
        yoton.PubChannel(friend, "news").send("welcome")
        assert sub.recv(TIMEOUT) == "welcome"
    assert sub.recv(False) == ""  # nothing else arrived
    assert not any(c.id2 == intruder.id for c in a.connections)


def test_yoton2_peer_is_refused_by_a_keyed_context(contexts, caplog) -> None:
    a = contexts(auth_key="k")
    sub = yoton.SubChannel(a, "news")
    conn = a.bind("tcp://localhost:0")
    script = """
    ctx = yoton.Context()
    pub = yoton.PubChannel(ctx, "news")
    pub.send("from 2.x before connecting")
    conn = ctx.connect("localhost:%d" % int(read_line()), timeout=5)
    pub.send("from 2.x")
    wait_until(lambda: not conn.is_connected)
    say("CONNECTED_NOW", conn.is_connected)
    """
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with run_yoton2(script) as child:
            child.send_line(str(conn.port1))
            assert child.expect_line("CONNECTED_NOW", TIMEOUT * 2) == "False"
        wait_for(
            lambda: any("Authentication required" in r.getMessage() for r in caplog.records),
            TIMEOUT,
            "the refusal",
        )
    assert conn.is_waiting  # still free for a real peer
    friend = contexts(auth_key="k")
    friend.connect(f"tcp://localhost:{conn.port1}", timeout=TIMEOUT)
    yoton.PubChannel(friend, "news").send("friend")
    assert sub.recv(TIMEOUT) == "friend"  # nothing of the 2.x peer came first
    assert sub.recv(False) == ""  # nothing else arrived


def test_keyed_context_refuses_a_yoton2_server(contexts) -> None:
    script = """
    ctx = yoton.Context()
    sub = yoton.SubChannel(ctx, "news")
    conn = ctx.bind("localhost:0")
    say("PORT", conn.port1)
    say("GOT", repr(sub.recv(block=float(read_line()))))
    """
    b = contexts(auth_key="k")
    yoton.PubChannel(b, "news").send("must not reach the 2.x peer")
    with run_yoton2(script) as child:
        port = int(child.expect_line("PORT"))
        with pytest.raises(ConnectionRefusedError, match="Authentication required.*2.x"):
            b.connect(f"tcp://localhost:{port}", timeout=TIMEOUT)
        child.send_line("0.5")
        assert child.expect_line("GOT", TIMEOUT * 2) == "''"


def test_raw_client_with_a_forged_answer_is_refused(contexts, caplog) -> None:
    a = contexts(auth_key="k")
    conn = a.bind("tcp://localhost:0")
    with socket.create_connection(("127.0.0.1", conn.port1), timeout=TIMEOUT) as s:
        s.sendall(b"YOTON!%016x.%d\r\n" % (0xABC, os.getpid()))
        got = b""
        while got.count(b"\r\n") < 2:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        line, challenge = got.split(b"\r\n")[:2]
        assert line.startswith(b"YOTON!") and challenge.startswith(b"YOTON-AUTH1 CHALLENGE ")
        s.sendall(b"YOTON-AUTH1 RESPONSE %s %s\r\n" % (b"ab" * 16, b"cd" * 32))
        rest = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    assert rest == b"YOTON-AUTH1 FAIL wrong key\r\n"
    assert conn.is_waiting
