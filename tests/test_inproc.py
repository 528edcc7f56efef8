"""The in-process transport: names, by-reference delivery, no file descriptors,
the queue policy and counters, closing, flush and fork."""

from __future__ import annotations

import os
import threading

import pytest

import yoton
import yoton_inproc
from yoton_core.testing import wait_for

TIMEOUT = 10.0


def _open_fds() -> set[str]:
    """This process's file descriptors with what they point to."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list descriptors")
def test_no_file_descriptors_are_opened(contexts):
    a, b, warm_a, warm_b = contexts(4)
    # The shared IO engine opens a few descriptors of its own when it starts.
    warm_a.bind("inproc://warm-up")
    warm_b.connect("inproc://warm-up", timeout=TIMEOUT)
    before = _open_fds()
    conn = a.bind("inproc://no-fds")
    b.connect("inproc://no-fds", timeout=TIMEOUT)
    pub, sub = yoton.PubChannel(a, "t"), yoton.SubChannel(b, "t")
    for i in range(100):
        pub.send(str(i))
    assert sub.recv(TIMEOUT) == "0"
    conn.close()
    assert _open_fds() - before == set()


def test_payload_is_handed_over_by_reference(contexts):
    a, b, c = contexts(3)
    a.bind("inproc://ref-ab")
    b.connect("inproc://ref-ab", timeout=TIMEOUT)
    b.bind("inproc://ref-bc")
    c.connect("inproc://ref-bc", timeout=TIMEOUT)
    pub = yoton.PubChannel(a, "blob", yoton.BINARY)
    subs = [yoton.SubChannel(ctx, "blob", yoton.BINARY) for ctx in (b, c)]
    blob = os.urandom(1 << 20)
    pub.send(blob)
    for sub in subs:  # one hop and two hops: the very same object
        assert sub.recv(TIMEOUT) is blob


def test_each_context_stamps_its_own_package(contexts):
    # A package is shared by reference between contexts, but the receive
    # order stamps (used by select_sub_channel) must stay per context.
    a, b = contexts(2)
    a.bind("inproc://stamps")
    b.connect("inproc://stamps", timeout=TIMEOUT)
    local_sub = yoton.SubChannel(a, "s")
    remote_sub = yoton.SubChannel(b, "s")
    pub = yoton.PubChannel(a, "s")
    pub.send("x")
    wait_for(lambda: remote_sub.pending == 1, TIMEOUT, "the message at b")
    local_data, remote_data = local_sub._queue[0], remote_sub._queue[0]
    local_seq, remote_seq = local_sub._seq_at(0), remote_sub._seq_at(0)
    assert local_data is remote_data  # the very payload object, in both contexts
    # Each context stamped its own receive order (a also got b's NEW_CONNECTION).
    assert 1 <= local_seq <= a._recv_seq and 1 <= remote_seq <= b._recv_seq


def test_names_and_host_port_forms(contexts):
    a, b = contexts(2)
    named = a.bind("inproc://worker-1")
    assert (named.hostname1, named.port1) == ("worker-1", 0)
    assert "worker-1" in yoton_inproc.bound_names()
    conn = b.connect("inproc://worker-1", timeout=TIMEOUT)
    assert "worker-1" not in yoton_inproc.bound_names()  # one bind, one peer
    assert (conn.hostname2, conn.port2, conn.pid2) == ("worker-1", 0, os.getpid())
    hp = a.bind("inproc://localhost:chat")
    assert (hp.hostname1, hp.port1) == ("127.0.0.1", yoton.port_hash("chat"))
    # host:port is parsed like TCP: same place however it is spelled.
    b.connect(f"inproc://127.0.0.1:{yoton.port_hash('chat')}", timeout=TIMEOUT)
    wait_for(lambda: hp.is_connected, TIMEOUT, "the host:port peer")


def test_port_zero_and_max_tries(contexts):
    a, b = contexts(2)
    free = a.bind("inproc://localhost:0")
    assert 1024 <= free.port1 <= 65535
    b.connect(f"inproc://localhost:{free.port1}", timeout=TIMEOUT)
    base = yoton.port_hash("svc")
    ports = [a.bind("inproc://localhost:svc", max_tries=5).port1 for _ in range(3)]
    assert ports == [base, base + 1, base + 2]
    with pytest.raises(OSError, match="address in use: an inproc context is already bound"):
        a.bind("inproc://localhost:svc")
    with pytest.raises(OSError, match="Could not bind to any of the 3 ports tried"):
        a.bind("inproc://localhost:svc", max_tries=3)


def test_unknown_name_times_out_with_the_bound_names(contexts):
    a, b = contexts(2)
    a.bind("inproc://present")
    with pytest.raises(yoton.ConnectError, match="'inproc://absent': No inproc context .*present"):
        b.connect("inproc://absent", timeout=0.1)
    assert b.connections_all == []


def test_connect_waits_for_a_bind_that_comes_later(contexts):
    a, b = contexts(2)
    result = {}

    def connect():
        result["conn"] = b.connect("inproc://later", timeout=TIMEOUT)

    t = threading.Thread(target=connect)
    t.start()
    registry = yoton_inproc._inproc._registry_cond
    wait_for(
        lambda: registry._waiters,  # type: ignore[attr-defined]  # CPython's Condition internals
        TIMEOUT,
        "connect() to wait for the name",
    )
    bound = a.bind("inproc://later")
    t.join(TIMEOUT)
    assert result["conn"].is_connected
    # The peer may pair before bind() returns; the connection is listed once.
    assert [c for c in a.connections_all if c is bound] == [bound]


def test_self_connect_is_refused_and_the_bind_stays(contexts):
    a, b = contexts(2)
    conn = a.bind("inproc://self")
    with pytest.raises(ConnectionRefusedError, match="cannot connect to self"):
        a.connect("inproc://self", timeout=0.1)
    assert conn.is_waiting and "self" in yoton_inproc.bound_names()
    b.connect("inproc://self", timeout=TIMEOUT)


@pytest.mark.parametrize(
    "mode, kept",
    [("old", ["0", "16", "17", "18", "19", "20"]), ("new", ["0", "1", "2", "3", "4", "5"])],
)
def test_full_outgoing_queue_discards_by_policy_and_counts(contexts, mode, kept):
    a = contexts(queue_params=(5, mode))
    b = contexts()
    conn = a.bind("inproc://full-" + mode)
    b.connect("inproc://full-" + mode, timeout=TIMEOUT)
    pub, sub = yoton.PubChannel(a, "q"), yoton.SubChannel(b, "q")
    # Holding b's routing lock stalls delivery in the engine thread, so a's
    # outgoing queue fills up behind the first package.
    with b._lock:
        pub.send("0")
        wait_for(lambda: conn.stats.queued == 0, TIMEOUT, "the first package to leave")
        for i in range(1, 21):
            pub.send(str(i))
        assert conn.stats.queued == 5 and conn.stats.packages_dropped == 15
    assert [sub.recv(TIMEOUT) for _ in kept] == kept
    conn.flush(TIMEOUT)
    assert sub.recv(False) == ""
    assert conn.stats.packages_sent == 6


def test_a_backlog_is_routed_in_batches_of_max_batch_in_order(contexts, monkeypatch):
    monkeypatch.setattr("yoton_inproc._inproc.MAX_BATCH", 3)
    a, b = contexts(2)
    ca = a.bind("inproc://backlog")
    cb = b.connect("inproc://backlog", timeout=TIMEOUT)
    pub, sub = yoton.PubChannel(a, "q"), yoton.SubChannel(b, "q")
    ca.flush(TIMEOUT)
    sent = ca.stats.packages_sent
    sizes = []
    deliver = cb.deliver

    def recording(batch):
        sizes.append(len(batch) // 2)
        deliver(batch)

    monkeypatch.setattr(cb, "deliver", recording)
    with b._lock:  # stalls the engine in the first delivery (as above)
        pub.send("0")
        wait_for(lambda: ca.stats.queued == 0, TIMEOUT, "the first package to leave")
        for i in range(1, 11):
            pub.send(str(i))
        assert ca.stats.queued == 10
    ca.flush(TIMEOUT)
    assert [sub.recv(TIMEOUT) for _ in range(11)] == [str(i) for i in range(11)]
    assert sizes == [1, 3, 3, 3, 1]  # the ten taken at once, routed three at a time
    assert ca.stats.queued == 0 and ca.stats.packages_sent - sent == 11


def test_counters_count_payload_bytes(contexts):
    a, b = contexts(2)
    ca = a.bind("inproc://count")
    cb = b.connect("inproc://count", timeout=TIMEOUT)
    ca.flush(TIMEOUT)
    cb.flush(TIMEOUT)
    base_sent, base_recv = ca.stats.packages_sent, cb.stats.packages_received
    pub = yoton.PubChannel(a, "n", yoton.BINARY)
    for _ in range(10):
        pub.send(b"x" * 100)
    ca.flush(TIMEOUT)
    assert ca.stats.packages_sent - base_sent == 10
    assert cb.stats.packages_received - base_recv == 10
    assert ca.stats.bytes_sent >= 1000 and cb.stats.bytes_received >= 1000


def test_flush_means_delivered(contexts):
    a, b = contexts(2)
    ca = a.bind("inproc://flushed")
    b.connect("inproc://flushed", timeout=TIMEOUT)
    pub, sub = yoton.PubChannel(a, "f"), yoton.SubChannel(b, "f")
    for i in range(5000):
        pub.send(str(i))
    ca.flush(TIMEOUT)
    assert sub.pending == 5000  # already routed into b, no waiting needed


def test_flush_on_a_closed_connection_raises(contexts):
    a, b = contexts(2)
    ca = a.bind("inproc://fc")
    b.connect("inproc://fc", timeout=TIMEOUT)
    ca.close()
    with pytest.raises(yoton.ConnectionClosedError, match="Closed on command"):
        ca.flush(1.0)


def test_close_waiting_connection_frees_the_name(contexts):
    a, b = contexts(2)
    conn = a.bind("inproc://freed")
    conn.close()
    assert conn.close_reason == "Closed on command."
    assert "freed" not in yoton_inproc.bound_names()
    with pytest.raises(ConnectionRefusedError):
        b.connect("inproc://freed", timeout=0.05)
    a.bind("inproc://freed")
    b.connect("inproc://freed", timeout=TIMEOUT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Forking a threaded process is what the test is about (Python 3.12+ warns).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_starts_without_the_parents_names(contexts):
    a = contexts()
    a.bind("inproc://parent-only")
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        os._exit(0 if yoton_inproc.bound_names() == [] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "parent-only" in yoton_inproc.bound_names()
