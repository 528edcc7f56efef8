"""The NATS transport when things go wrong, across servers, secured, and bridged.

Real servers only: a three-node cluster with routes, a server killed and
restarted on its port, servers that require a password, a token or TLS
(certificates from trustme), and a context relaying between a bus and TCP.
"""

from __future__ import annotations

import ssl
import time

import pytest

import yoton
from yoton_core.testing import wait_for


@pytest.fixture
def made():
    contexts = []

    def make(address=None, how="connect", **kw):
        ctx = yoton.Context()
        contexts.append(ctx)
        if address is None:
            return ctx
        return ctx, getattr(ctx, how)(address, **kw)

    yield make
    for ctx in contexts:
        ctx.close()


def flags_of(conn):
    """The ``timedout`` flags of ``conn``, as a list that grows (events processed on read)."""
    flags: list[bool] = []
    conn.timedout.bind(lambda c, flag: flags.append(flag))
    return flags


def seen(flags, value):
    yoton.process_events()
    return value in flags


def warm(pub, sub, word="warm", timeout=10.0):
    """Publish until the subscriber hears it (interest crosses cluster routes later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.send(word)
        if sub.recv(0.05) == word:
            while sub.recv(0.05):  # drain the other warm-ups
                pass
            return
    raise AssertionError("the subscription never became active across the cluster")


# -- a cluster is one network ------------------------------------------------------------------


def test_contexts_on_three_servers_are_one_network(nats_cluster, made):
    urls = [s.url for s in nats_cluster.servers]
    a, _ = made(f"{urls[0]}/net")
    b, _ = made(f"{urls[1]}/net")
    c, _ = made(f"{urls[2]}/net")
    # state reaches every server's contexts
    st = yoton.StateChannel(a, "st")
    st.send("v")
    st_c = yoton.StateChannel(c, "st")
    yoton.StateChannel(b, "st")
    wait_for(lambda: st_c.recv() == "v", 10, "the state across the cluster")
    # req/rep across servers
    rep = yoton.RepChannel(b, "svc")
    rep.set_mode("thread")
    req = yoton.ReqChannel(c, "svc")
    assert req.echo("hop").result(10)[0] == "hop"
    # pub/sub across servers, in order across slots
    subs = [yoton.SubChannel(c, f"o{i}", yoton.OBJECT) for i in range(2)]
    pubs = [yoton.PubChannel(a, f"o{i}", yoton.OBJECT) for i in range(2)]
    for p, s in zip(pubs, subs, strict=True):
        warm(p, s)
    n = 4000
    for i in range(n):
        pubs[i % 2].send(i)
    wait_for(lambda: sum(s.pending for s in subs) == n, 20, f"all {n} messages")
    got: list[int] = []
    while (ch := yoton.select_sub_channel(*subs)) is not None:
        got.extend(ch.recv_selected())
    assert got == list(range(n))


# -- a lost server ---------------------------------------------------------------------------------


def test_kill_and_restart_the_server(nats_server, made):
    bus = f"{nats_server.url}/faults"
    a, ca = made(bus)
    b, cb = made(bus)
    ca.timeout = cb.timeout = 1.0
    fa, fb = flags_of(ca), flags_of(cb)
    sub = yoton.SubChannel(b, "t")
    pub = yoton.PubChannel(a, "t")
    pub.send("before")
    assert sub.recv(5.0) == "before"
    nats_server.kill()
    wait_for(lambda: seen(fa, True) and seen(fb, True), 5, "timedout(True) on both")
    assert ca.is_alive and cb.is_alive  # reconnecting, not closed
    nats_server.start()
    wait_for(lambda: seen(fa, False) and seen(fb, False), 10, "timedout(False) on both")
    # Subscriptions are back: traffic flows again.
    pub.send("after")
    assert sub.recv(5.0) == "after"
    # What was sent while the server was away was queued and sent after it.
    assert ca.stats.packages_dropped == 0


def test_states_are_resent_after_a_reconnect(nats_server, made):
    bus = f"{nats_server.url}/re-state"
    a, ca = made(bus)
    b, cb = made(bus)
    st_a, st_b = yoton.StateChannel(a, "s"), yoton.StateChannel(b, "s")
    fa = flags_of(ca)
    nats_server.kill()
    wait_for(lambda: seen(fa, True), 5, "timedout(True)")
    st_a.send("set while the server was away")  # queued, sent after the reconnect
    nats_server.start()
    wait_for(lambda: st_b.recv() == "set while the server was away", 15, "the state")


def test_reconnect_to_another_server_of_the_cluster(nats_cluster, made):
    first, _, third = nats_cluster.servers
    # a knows only the first server; the cluster announced the others.
    a, ca = made(f"{first.url}/move")
    b, _ = made(f"{third.url}/move")
    fa = flags_of(ca)
    sub = yoton.SubChannel(b, "m")
    pub = yoton.PubChannel(a, "m")
    warm(pub, sub)
    first.kill()
    wait_for(lambda: seen(fa, True), 5, "timedout(True)")
    wait_for(lambda: seen(fa, False), 15, "timedout(False) after moving to another server")
    warm(pub, sub, "moved")


def test_giving_up_closes_with_the_reason(nats_server, made):
    a, ca = made(f"{nats_server.url}/gone", reconnect_timeout=0.3)
    nats_server.kill()
    assert ca.wait_closed(10)
    assert "Lost the NATS server" in ca.close_reason
    assert "0.3 s" in ca.close_reason


def test_nobody_at_the_address_raises_connect_error_at_once(made):
    ctx = made()
    t0 = time.monotonic()
    with pytest.raises(yoton.ConnectError, match="cannot connect to the NATS server"):
        ctx.connect("nats://127.0.0.1:1/bus", timeout=5)
    assert time.monotonic() - t0 < 4


# -- security -------------------------------------------------------------------------------------


def test_user_and_password(nats_server_factory, made):
    server = nats_server_factory(user="alice", password="s3cret")
    a, _ = made(f"nats://alice:s3cret@127.0.0.1:{server.port}/sec")
    b, _ = made(f"{server.url}/sec", user="alice", password="s3cret")
    sub = yoton.SubChannel(b, "x")
    yoton.PubChannel(a, "x").send("authorised")
    assert sub.recv(5.0) == "authorised"
    ctx = made()
    t0 = time.monotonic()
    with pytest.raises(yoton.ConnectError, match="authorization failed") as info:
        ctx.connect(f"nats://alice:wrong@127.0.0.1:{server.port}/sec", timeout=10)
    assert time.monotonic() - t0 < 5  # at once, not after the timeout
    assert "Authorization Violation" in str(info.value)


def test_token(nats_server_factory, made):
    server = nats_server_factory(token="t0ken")
    a, _ = made(f"nats://t0ken@127.0.0.1:{server.port}/tok")
    sub = yoton.SubChannel(a, "x")
    b, _ = made(f"{server.url}/tok", token="t0ken")
    yoton.PubChannel(b, "x").send("ok")
    assert sub.recv(5.0) == "ok"
    with pytest.raises(yoton.ConnectError, match="authorization failed"):
        made().connect(f"nats://nope@127.0.0.1:{server.port}/tok", timeout=10)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(d / "cert.pem"), str(d / "key.pem"), client


@pytest.mark.parametrize("first", [False, True], ids=["upgrade-after-info", "handshake-first"])
def test_tls(nats_server_factory, made, certs, first):
    cert, key, client_ctx = certs
    server = nats_server_factory(tls=(cert, key), tls_handshake_first=first)
    bus = f"{server.url}/tls"
    a, _ = made(bus, ssl_context=client_ctx, tls_handshake_first=first)
    b, _ = made(bus, ssl_context=client_ctx, tls_handshake_first=first)
    sub = yoton.SubChannel(b, "x")
    yoton.PubChannel(a, "x").send("over TLS")
    assert sub.recv(5.0) == "over TLS"
    # Not trusting the server's certificate fails, and says so.
    with pytest.raises(yoton.ConnectError, match="TLS|certificate"):
        made().connect(bus, timeout=5, ssl_context=ssl.create_default_context(),
                       tls_handshake_first=first)  # fmt: skip


def test_tls_asked_for_but_not_offered_is_refused(nats_server, made, certs):
    with pytest.raises(yoton.ConnectError, match="offers no TLS"):
        made().connect(f"{nats_server.url}/x", timeout=5, ssl_context=certs[2])


# -- bridging -------------------------------------------------------------------------------------


def test_a_context_bridges_a_bus_and_tcp_both_ways_without_duplicates(nats_server, made):
    bus = f"{nats_server.url}/bridge"
    a, _ = made(bus)  # on the bus only
    bridge, _ = made(bus)  # on the bus, and bound on TCP; has no channels itself
    tcp = bridge.bind("tcp://localhost:0")
    c, _ = made(f"tcp://localhost:{tcp.port1}")  # behind the bridge
    wait_for(lambda: tcp.is_connected, 10, "the tcp link")
    sub_c = yoton.SubChannel(c, "to-c", yoton.OBJECT)
    sub_a = yoton.SubChannel(a, "to-a", yoton.OBJECT)
    pub_a = yoton.PubChannel(a, "to-c", yoton.OBJECT)
    pub_c = yoton.PubChannel(c, "to-a", yoton.OBJECT)
    warm(pub_a, sub_c, "w")
    warm(pub_c, sub_a, "w")
    for i in range(200):
        pub_a.send(i)
        pub_c.send(i)
    assert [sub_c.recv(5.0) for _ in range(200)] == list(range(200))
    assert [sub_a.recv(5.0) for _ in range(200)] == list(range(200))
    a.flush()
    c.flush()
    assert sub_a.recv(0.2) is None and sub_c.recv(0.2) is None  # no duplicates
    # req/rep through the bridge, both directions
    rep_c = yoton.RepChannel(c, "at-c")
    rep_c.set_mode("thread")
    rep_a = yoton.RepChannel(a, "at-a")
    rep_a.set_mode("thread")
    assert yoton.ReqChannel(a, "at-c").echo(1).result(10)[0] == 1
    assert yoton.ReqChannel(c, "at-a").echo(2).result(10)[0] == 2
    # state through the bridge
    st_a, st_c = yoton.StateChannel(a, "st"), yoton.StateChannel(c, "st")
    st_c.send("from behind the bridge")
    wait_for(lambda: st_a.recv() == "from behind the bridge", 10, "the state across the bridge")


def test_lame_duck_mode_moves_a_context_to_another_server(nats_cluster, made):
    first, second, _ = nats_cluster.servers
    a, ca = made(f"{first.url}/ldm")
    b, _ = made(f"{second.url}/ldm")
    fa = flags_of(ca)
    sub = yoton.SubChannel(b, "m")
    pub = yoton.PubChannel(a, "m")
    warm(pub, sub)
    first.lame_duck()  # the server tells its clients (INFO ldm) before it goes
    wait_for(lambda: seen(fa, True) and seen(fa, False), 15, "a move to another server")
    assert ca.is_connected
    warm(pub, sub, "moved")


def test_many_pieces_through_a_small_max_payload_and_drops_counted(nats_server_factory, made):
    server = nats_server_factory(max_payload=4096)
    bus = f"{server.url}/small"
    a, _ = made(bus)
    b, _ = made(bus)
    sub = yoton.SubChannel(b, "big", yoton.BINARY)
    pub = yoton.PubChannel(a, "big", yoton.BINARY)
    blobs = [bytes([i]) * (300_000 + i) for i in range(5)]
    for blob in blobs:
        pub.send(blob)
    assert [sub.recv(10.0) for _ in blobs] == blobs
    # A receiver with a smaller max_message_size drops what is over it, and counts it.
    small = yoton.Context(max_message_size=100_000)
    try:
        conn = small.connect(bus)
        sub_small = yoton.SubChannel(small, "big", yoton.BINARY)
        pub.send(blobs[0])
        pub.send(b"fits")
        assert sub_small.recv(10.0) == b"fits"
        assert conn.stats.packages_dropped == 1
    finally:
        small.close()


def test_a_silent_server_is_timed_out_and_forgiven_when_it_speaks_again(nats_server, made):
    import os
    import signal

    a, ca = made(f"{nats_server.url}/silent")
    ca.timeout = 1.0
    fa = flags_of(ca)
    os.kill(nats_server.pid, signal.SIGSTOP)  # frozen: the socket stays open
    try:
        wait_for(lambda: seen(fa, True), 5, "timedout(True) from silence")
    finally:
        os.kill(nats_server.pid, signal.SIGCONT)
    wait_for(lambda: seen(fa, False), 10, "timedout(False) once the server answers")
    assert ca.is_connected


def test_closing_while_reconnecting_ends_at_once(nats_server, made):
    a, ca = made(f"{nats_server.url}/closing")
    fa = flags_of(ca)
    nats_server.kill()
    wait_for(lambda: seen(fa, True), 5, "timedout(True)")
    t0 = time.monotonic()
    ca.close()
    assert ca.wait_closed(5)
    assert ca.close_reason == "Closed on command."
    assert time.monotonic() - t0 < 3


def test_an_address_may_list_several_servers(nats_server, made):
    a, ca = made(f"nats://127.0.0.1:1,127.0.0.1:{nats_server.port}/several")
    assert ca.is_connected and ca.port2 == nats_server.port


def test_a_leaf_node_server_extends_the_bus(nats_server_factory, made):
    hub = nats_server_factory(leafnode_port=0)
    leaf = nats_server_factory(leaf_remotes=[hub.leaf_url])
    a, _ = made(f"{hub.url}/leafy")
    b, _ = made(f"{leaf.url}/leafy")
    sub = yoton.SubChannel(b, "l")
    pub = yoton.PubChannel(a, "l")
    warm(pub, sub)  # the leaf connection forms, and interest crosses it, a moment later
    rep = yoton.RepChannel(a, "svc")
    rep.set_mode("thread")
    assert yoton.ReqChannel(b, "svc").echo("via leaf").result(10)[0] == "via leaf"


def test_a_password_never_shows_in_an_error(nats_server_factory, made):
    server = nats_server_factory(user="alice", password="s3cret")
    with pytest.raises(yoton.ConnectError) as info:
        made().connect(f"nats://alice:wr0ng-pass@127.0.0.1:{server.port}/sec", timeout=10)
    assert "wr0ng-pass" not in str(info.value) and "alice:***@" in str(info.value)
    with pytest.raises(ValueError) as bad_port:
        made().connect("nats://alice:s3cret@127.0.0.1:notaport/sec")
    assert "s3cret" not in str(bad_port.value)
