"""Context, connection and pub/sub behaviour over real TCP.

Tests about context logic join several contexts of this process; the ones
about processes (pids, a stopped peer, the main multi-threaded pub/sub test)
run our peer in a child process via :func:`yoton2.run_yoton`.
"""

from __future__ import annotations

import ast
import collections
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from yoton2 import Yoton2Proc, run_yoton

import yoton
from yoton_core.testing import recv_n, wait_for

pytestmark = pytest.mark.timeout(60)

needs_sigstop = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")


def process_events_until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out processing events")
        yoton.process_events(0.02)


def join(server: yoton.Context, client: yoton.Context) -> tuple[yoton.Connection, yoton.Connection]:
    """Connect ``client`` to a fresh bind of ``server``; return (server conn, client conn)."""
    s = server.bind("localhost:0")
    c = client.connect(f"localhost:{s.port1}", timeout=5)
    wait_for(lambda: s.is_connected, what="the bound side to get its peer")
    return s, c


# -- a peer of ours in another process ---------------------------------------------

PEER = """
ctx = yoton.Context()
sub = yoton.SubChannel(ctx, read_line(), yoton.BINARY)
c = ctx.connect("localhost:" + read_line(), timeout=5)
say("CONNECTED", repr((c.id1, c.id2, c.pid1, c.pid2, c.hostname1, c.port1, c.hostname2,
                       c.port2, c.is_connected, c.is_waiting, c.is_alive)))
n = 0
while True:
    line = read_line()
    if line == "count":
        got = sub.recv_all()
        n += len(got)
        say("COUNT", n, repr([m[:8] for m in got[-3:]]))
    elif line == "drain":
        deadline = time.time() + 30
        want = int(read_line())
        first = last = None
        while n < want:
            m = sub.recv(max(0.0, deadline - time.time()))  # blocks until one arrives
            if not m:
                break  # the deadline passed (messages here are never empty)
            got = [m] + sub.recv_all()
            n += len(got)
            first = got[0][:4] if first is None else first
            last = got[-1][:4]
        first = first and int.from_bytes(first, "big")
        say("COUNT", n, first, last and int.from_bytes(last, "big"))
    else:
        break
"""


@pytest.fixture
def peer_proc() -> Iterator[Yoton2Proc]:
    with run_yoton(PEER, timeout=55) as p:
        yield p


def attach_peer(
    p: Yoton2Proc, ctx: yoton.Context, slot: str
) -> tuple[yoton.Connection, tuple[Any, ...]]:
    """Bind ``ctx`` and let the child connect, subscribing to BINARY ``slot``."""
    conn = ctx.bind("localhost:0", name="child")
    p.send_line(slot)
    p.send_line(str(conn.port1))
    props = ast.literal_eval(p.expect_line("CONNECTED"))
    wait_for(lambda: conn.is_connected, what="the child to connect")
    return conn, props


# -- properties --------------------------------------------------------------------


def test_bind_and_connect_properties(contexts: Any, peer_proc: Yoton2Proc) -> None:
    ctx = contexts()
    conn = ctx.bind("localhost:0", name="srv")
    # Waiting: the local end is known at once, the peer end is not.
    assert (conn.is_alive, conn.is_waiting, conn.is_connected) == (True, True, False)
    assert conn.port1 != 0 and conn.hostname1 == "127.0.0.1"
    assert (conn.hostname2, conn.port2, conn.id2, conn.pid2) == ("", 0, 0, 0)
    assert conn.id1 == ctx.id and conn.pid1 == os.getpid() and conn.name == "srv"
    assert ctx.connection_count == 0 and ctx.connections_all == [conn]
    # port1 is the real port: it is taken.
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("127.0.0.1", conn.port1))

    peer_proc.send_line("slot")
    peer_proc.send_line(str(conn.port1))
    (id1, id2, pid1, pid2, host1, port1, host2, port2, connected, waiting, alive) = (
        ast.literal_eval(peer_proc.expect_line("CONNECTED"))
    )
    wait_for(lambda: conn.is_connected, what="hosting")
    assert (connected, waiting, alive) == (True, False, True)
    assert (conn.is_alive, conn.is_waiting, conn.is_connected) == (True, False, True)
    assert conn.status == "hosting"
    # The two ends mirror each other.
    assert id2 == ctx.id and conn.id2 == id1 and id1 != ctx.id
    assert pid2 == os.getpid() and conn.pid2 == pid1 == peer_proc.pid
    assert (host2, port2) == ("127.0.0.1", conn.port1)
    assert (conn.hostname2, conn.port2) == (host1, port1)
    assert ctx.connection_count == 1 and ctx.connections["srv"] is conn


def test_timeout_property_validation(contexts: Any) -> None:
    conn = contexts().bind("localhost:0")
    assert conn.timeout == 0.5
    conn.timeout = 2
    assert conn.timeout == 2.0 and isinstance(conn.timeout, float)
    with pytest.raises(ValueError, match="Connection.timeout must be .* >= 0.5, got 0.1"):
        conn.timeout = 0.1
    with pytest.raises(TypeError, match="timeout"):
        conn.timeout = "1"
    with pytest.raises(TypeError):
        conn.timeout = True
    with pytest.raises(TypeError, match="name"):
        conn.name = 5
    conn.name = "renamed"
    assert conn.name == "renamed"


def test_connections_collections(contexts: Any) -> None:
    a, b = contexts(), contexts()
    waiting = a.bind("localhost:0", name="waiter")
    s = a.bind("localhost:0", name="hosted")
    c = b.connect(f"localhost:{s.port1}", timeout=5, name="client")
    wait_for(lambda: s.is_connected)
    assert a.connection_count == 1
    assert list(a.connections) == [s] and a.connections["hosted"] is s
    assert set(a.connections_all) == {waiting, s}
    assert a.connections_all["waiter"] is waiting and a.connections_all["hosted"] is s
    assert a.connections_all[0] in (waiting, s)
    with pytest.raises(KeyError, match="waiter"):
        a.connections["waiter"]  # waiting connections are not in .connections
    with pytest.raises(KeyError):
        a.connections[""]
    assert b.connections["client"] is c and b.connection_count == 1
    c.close()
    wait_for(lambda: a.connection_count == 0, what="the hosted side to notice")
    assert a.connections_all["waiter"] is waiting and len(a.connections_all) == 1


def test_max_tries_and_address_in_use(contexts: Any) -> None:
    a, b = contexts(), contexts()
    first = a.bind("localhost:0")
    port = first.port1
    with pytest.raises(OSError):
        b.bind(f"localhost:{port}")
    second = b.bind(f"localhost:{port}", max_tries=3)
    assert second.port1 in (port + 1, port + 2)
    assert b.connections_all == [second]


def test_bind_again_right_after_close(contexts: Any) -> None:
    a, b = contexts(), contexts()
    conn = a.bind("localhost:0")
    port = conn.port1
    conn.close()
    assert not conn.is_alive and conn.close_reason == "Closed on command."
    conn2 = a.bind(f"localhost:{port}")  # the listening socket is really gone
    c = b.connect(f"localhost:{port}", timeout=5)
    wait_for(lambda: conn2.is_connected)
    c.close()
    conn2.wait_closed(5)
    conn3 = a.bind(f"localhost:{port}")  # also after a connection on that port
    assert conn3.is_waiting


def test_connect_to_self_fails_clearly(contexts: Any) -> None:
    a, b = contexts(), contexts()
    conn = a.bind("localhost:0")
    with pytest.raises(OSError, match="self"):
        a.connect(f"localhost:{conn.port1}", timeout=2)
    assert a.connection_count == 0 and a.connections_all == [conn]
    # The bind is still usable by someone else.
    b.connect(f"localhost:{conn.port1}", timeout=5)
    wait_for(lambda: conn.is_connected)


def test_connect_to_nobody_fails_clearly(contexts: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(OSError, match=str(port)):
            contexts().connect(f"localhost:{port}", timeout=0.2)


# -- closing -----------------------------------------------------------------------


def test_close_reasons_and_closed_signal_once(contexts: Any) -> None:
    a, b = contexts(), contexts()
    s, c = join(a, b)
    seen: list[tuple[Any, str]] = []
    s.closed.bind(lambda conn, reason: seen.append((conn, reason)))
    c.closed.bind(lambda conn, reason: seen.append((conn, reason)))
    c.close()
    assert c.close_reason == "Closed on command." and not c.is_alive
    assert s.wait_closed(10)
    assert s.close_reason == "Closed from other end."
    process_events_until(lambda: len(seen) == 2)
    c.close()  # closing again does nothing
    s.close_on_problem("again")
    for _ in range(3):
        yoton.process_events(0.02)
    assert sorted(seen, key=lambda t: t[1]) == [
        (s, "Closed from other end."),
        (c, "Closed on command."),
    ]
    assert a.connection_count == 0 and b.connection_count == 0


def test_close_right_after_connect_still_tells_the_peer(contexts: Any) -> None:
    """close() racing the start of the connection's IO task still sends CLOSE.

    It used to be lost about half of the time (the peer then reported a
    dropped connection), as could a CLOSE followed by a reset from unread data.
    """
    a, b = contexts(), contexts()
    reasons: collections.Counter[str | None] = collections.Counter()
    for _ in range(30):
        s = a.bind("localhost:0")
        c = b.connect(f"localhost:{s.port1}", timeout=5)
        c.close()
        assert s.wait_closed(10)
        reasons[s.close_reason] += 1
    assert reasons == {"Closed from other end.": 30}


def test_context_close(contexts: Any) -> None:
    a, b = contexts(), contexts()
    waiting = a.bind("localhost:0")
    s, c = join(a, b)
    pub = yoton.PubChannel(a, "x")
    a.close()
    assert waiting.close_reason == s.close_reason == "Closed by the context."
    assert c.wait_closed(10) and c.close_reason == "Closed from other end."
    assert pub.closed and a.connections_all == []
    with pytest.raises(OSError):
        pub.send("after close")
    # The context can be used again.
    pub2 = yoton.PubChannel(a, "x")
    sub2 = yoton.SubChannel(b, "x")
    join(a, b)
    pub2.send("again")
    assert sub2.recv(10) == "again"


def test_close_channels_then_send_raises(contexts: Any) -> None:
    a = contexts()
    pub = yoton.PubChannel(a, "x")
    sub = yoton.SubChannel(a, "x")
    a.close_channels()
    assert pub.closed and sub.closed
    with pytest.raises(OSError, match="closed"):
        pub.send("x")
    assert sub.recv(True) == ""  # a closed channel does not block


# -- startup queue, flush ----------------------------------------------------------


def test_startup_queue_is_sent_after_connect(contexts: Any) -> None:
    a, b = contexts(), contexts()
    pub = yoton.PubChannel(a, "early")
    for i in range(5):
        pub.send(f"early {i}")
    assert a.statistics()["startup_queue"] == 5
    sub = yoton.SubChannel(b, "early")
    join(b, a)
    assert recv_n(sub, 5) == [f"early {i}" for i in range(5)]
    assert a.statistics()["startup_queue"] == 0


@pytest.mark.parametrize("mode", ["old", "new"])
def test_startup_queue_discards_by_policy(contexts: Any, mode: str) -> None:
    a, b = contexts(queue_params=(3, mode)), contexts()
    pub = yoton.PubChannel(a, "early")
    for i in range(5):
        pub.send(str(i))
    assert a.statistics()["startup_dropped"] == 2
    sub = yoton.SubChannel(b, "early")
    # ``a`` binds: had it connected, its NEW_CONNECTION message would join the
    # three queued packages in an outgoing queue that holds three, and with
    # "old" could push out the first of them if the sender had not started yet.
    join(a, b)
    expected = ["2", "3", "4"] if mode == "old" else ["0", "1", "2"]
    assert recv_n(sub, 3) == expected


def test_flush_idle_returns(contexts: Any) -> None:
    a, b = contexts(), contexts()
    waiting = a.bind("localhost:0")
    waiting.flush(0.1)  # nothing to do on a waiting connection: returns at once
    assert waiting.is_waiting and waiting.stats.queued == 0
    s, c = join(a, b)
    sub = yoton.SubChannel(b, "f")
    yoton.PubChannel(a, "f").send("x")
    assert a.flush(5) is True
    s.flush(5)
    c.flush(5)
    assert s.stats.queued == 0 and s.stats.packages_sent >= 1  # handed to the OS
    assert sub.recv(10) == "x"


@needs_sigstop
def test_flush_times_out_while_peer_is_stopped(contexts: Any, peer_proc: Yoton2Proc) -> None:
    ctx = contexts()
    pub = yoton.PubChannel(ctx, "burst", yoton.BINARY)
    conn, _props = attach_peer(peer_proc, ctx, "burst")
    chunk = b"x" * 2**20
    os.kill(peer_proc.pid, signal.SIGSTOP)
    try:
        for _ in range(32):  # more than every socket buffer on the way can hold
            pub.send(chunk)
        with pytest.raises(yoton.TimeoutError, match="timed out"):
            conn.flush(0.5)
        with pytest.raises(TimeoutError):  # also the builtin
            ctx.flush(0.2)
        assert conn.is_connected
    finally:
        os.kill(peer_proc.pid, signal.SIGCONT)
    conn.flush(30)
    assert conn.stats.queued == 0
    peer_proc.send_line("drain")
    peer_proc.send_line("32")
    assert peer_proc.expect_line("COUNT", 40).split()[0] == "32"


@needs_sigstop
def test_timedout_after_sigstop_and_back_after_sigcont(
    contexts: Any, peer_proc: Yoton2Proc
) -> None:
    ctx = contexts()
    conn, _props = attach_peer(peer_proc, ctx, "t")
    flags: list[bool] = []
    conn.timedout.bind(lambda c, flag: flags.append(flag))
    os.kill(peer_proc.pid, signal.SIGSTOP)
    try:
        process_events_until(lambda: flags, timeout=15)
        assert flags == [True]
        assert conn.is_connected  # timed out is not closed
    finally:
        os.kill(peer_proc.pid, signal.SIGCONT)
    process_events_until(lambda: len(flags) >= 2, timeout=15)
    assert flags[:2] == [True, False]


@needs_sigstop
@pytest.mark.parametrize("mode", ["old", "new"])
def test_outgoing_queue_discards_and_counts(
    contexts: Any, peer_proc: Yoton2Proc, mode: str
) -> None:
    ctx = contexts(queue_params=(20, mode))
    pub = yoton.PubChannel(ctx, "q", yoton.BINARY)
    conn, _props = attach_peer(peer_proc, ctx, "q")
    n = 300
    os.kill(peer_proc.pid, signal.SIGSTOP)
    try:
        for i in range(n):
            pub.send(i.to_bytes(4, "big") + b"x" * 65536)
        dropped = conn.stats.packages_dropped
        assert dropped > 0
    finally:
        os.kill(peer_proc.pid, signal.SIGCONT)
    conn.flush(30)
    dropped = conn.stats.packages_dropped
    peer_proc.send_line("drain")
    peer_proc.send_line(str(n - dropped))
    count, first, last = peer_proc.expect_line("COUNT", 40).split()
    assert int(count) == n - dropped
    if mode == "old":
        assert int(last) == n - 1  # dropping the oldest keeps the newest
    else:
        assert int(first) == 0  # dropping the incoming keeps the first
    assert conn.stats.packages_sent >= n - dropped


@needs_sigstop
def test_large_packages_congest_a_stopped_peer_by_their_bytes(
    contexts: Any, peer_proc: Yoton2Proc
) -> None:
    """The byte mark (16 MiB) holds a sender long before the package mark (4,096).

    Only large packages count towards it (_stream_queue.py, "Counters"): 1 MiB
    payloads report congestion after a few dozen, whatever the socket buffers
    took; once the peer reads again it clears, and every one arrives.
    """
    ctx = contexts()
    pub = yoton.PubChannel(ctx, "big", yoton.BINARY)
    conn, _props = attach_peer(peer_proc, ctx, "big")
    chunk = b"x" * 2**20
    sent = 0
    os.kill(peer_proc.pid, signal.SIGSTOP)
    try:
        while not conn.congested and sent < 200:
            pub.send(chunk)
            sent += 1
        assert conn.congested, f"{sent} MiB queued for a stopped peer, not congested"
        assert sent < 100  # the socket buffers on the way and 16 MiB, not 4,096 packages
    finally:
        os.kill(peer_proc.pid, signal.SIGCONT)
    conn.flush(30)
    wait_for(lambda: not conn.congested, 10)
    peer_proc.send_line("drain")
    peer_proc.send_line(str(sent))
    assert peer_proc.expect_line("COUNT", 40).split()[0] == str(sent)


# -- routing -----------------------------------------------------------------------


def test_main_pubsub_multithreaded_senders_in_another_process() -> None:
    """4 threads x 3000 sends in a child process: all arrive, each thread in order.

    The child switches threads every microsecond or so, so that a send is often
    interrupted half way: numbering and queueing must be one step (the context
    lock), or packages enter the queue out of order and the receiver drops
    them as old.
    """
    script = """
    import sys
    sys.setswitchinterval(1e-6)
    ctx = yoton.Context()
    pub = yoton.PubChannel(ctx, "mt")
    c = ctx.connect("localhost:" + read_line(), timeout=5)
    say("CONNECTED")
    read_line()
    def run(k):
        for i in range(3000):
            pub.send("%d:%d" % (k, i))
    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.flush(20)
    say("DONE", c.stats.packages_dropped)
    read_line()
    """
    ctx = yoton.Context()
    try:
        sub = yoton.SubChannel(ctx, "mt")
        conn = ctx.bind("localhost:0")
        with run_yoton(script, timeout=55) as p:
            p.send_line(str(conn.port1))
            p.expect_line("CONNECTED")
            wait_for(lambda: conn.is_connected)
            p.send_line("go")
            got = recv_n(sub, 12000, timeout=40)
            assert p.expect_line("DONE") == "0"
            per_thread: dict[int, list[int]] = collections.defaultdict(list)
            for m in got:
                k, i = m.split(":")
                per_thread[int(k)].append(int(i))
            assert sorted(per_thread) == [0, 1, 2, 3]
            for k in range(4):
                assert per_thread[k] == list(range(3000)), f"thread {k} out of order"
            assert sub.pending == 0 and sub.dropped == 0
            p.send_line("bye")
    finally:
        ctx.close()


def test_multi_hop_line(contexts: Any) -> None:
    a, b, c = contexts(), contexts(), contexts()
    pub_a = yoton.PubChannel(a, "hop")
    sub_c = yoton.SubChannel(c, "hop")
    pub_c = yoton.PubChannel(c, "back", yoton.OBJECT)
    sub_a = yoton.SubChannel(a, "back", yoton.OBJECT)
    join(a, b)  # B has no channels: it only forwards
    join(b, c)
    for i in range(100):
        pub_a.send(f"m{i}")
    assert recv_n(sub_c, 100) == [f"m{i}" for i in range(100)]
    pub_c.send({"ok": (1, 2.5)})
    assert recv_n(sub_a, 1) == [{"ok": (1, 2.5)}]


def test_cycle_no_duplicates_no_self_delivery(contexts: Any) -> None:
    a, b, c = contexts(), contexts(), contexts()
    join(a, b)
    join(b, c)
    join(c, a)  # a triangle: every package can arrive by two paths
    pubs = {n: yoton.PubChannel(x, "ring") for n, x in zip("abc", (a, b, c), strict=True)}
    subs = {n: yoton.SubChannel(x, "ring") for n, x in zip("abc", (a, b, c), strict=True)}
    n = 300
    for i in range(n):
        pubs["a"].send(f"m{i}")
    pubs["a"].send("end")
    got: dict[str, list[str]] = {k: [] for k in "abc"}
    for k in "bc":
        got[k] = recv_n(subs[k], n + 1)
        # (another context's sync marker may already have arrived after "end")
        assert [m for m in got[k] if not m.startswith("sync-")][-1] == "end"
        # Everything the forwarders sent before this marker precedes it on every link.
        pubs[k].send(f"sync-{k}")
    for k in "abc":
        want = {"sync-b", "sync-c"}
        while not want <= set(got[k]):
            got[k].extend(recv_n(subs[k], 1))
    expected = collections.Counter([f"m{i}" for i in range(n)] + ["end", "sync-b", "sync-c"])
    for k in "abc":
        assert collections.Counter(got[k]) == expected, f"context {k}"
        assert subs[k].pending == 0
        msgs = [m for m in got[k] if m.startswith("m")]
        assert msgs == [f"m{i}" for i in range(n)]
    # Local delivery: a's own sub got a's messages exactly once, not again via the ring.
    assert got["a"][: n + 1] == [f"m{i}" for i in range(n)] + ["end"]


def _links_quiet(contexts: list[yoton.Context]) -> tuple[int, ...] | None:
    """Per-link package counts if every link has delivered all it sent, else None."""
    counts: list[int] = []
    for ctx in contexts:
        for conn in ctx.connections:
            peer = next(
                (
                    c
                    for x in contexts
                    for c in x.connections
                    if c.id1 == conn.id2 and c.id2 == conn.id1
                ),
                None,
            )
            assert peer is not None
            if conn.stats.queued or conn.stats.packages_sent != peer.stats.packages_received:
                return None
            counts.append(conn.stats.packages_sent)
    return tuple(counts)


def test_cycle_with_several_publishers_interleaving(contexts: Any) -> None:
    """Duplicates are dropped per source while packages of several sources interleave.

    Every context of a triangle publishes at once from its own thread, so each
    link carries the packages of all three sources mixed in one batch, and
    every package reaches every context twice. Each subscriber must get every
    message exactly once, in each source's order. (A router that keeps only
    the sequence of the last source of a batch lets the others' second copies
    through.)
    """
    ring = contexts(3)
    a, b, c = ring
    join(a, b)
    join(b, c)
    join(c, a)
    names = "abc"
    pubs = [yoton.PubChannel(x, "mix") for x in ring]
    subs = [yoton.SubChannel(x, "mix") for x in ring]
    n = 2000
    go = threading.Barrier(3)

    def publish(k: int) -> None:
        go.wait()
        for i in range(n):
            pubs[k].send(f"{names[k]}{i}")

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [recv_n(sub, 3 * n, timeout=30) for sub in subs]
    # Wait until the network is quiet: every link delivered all it sent, twice alike.
    last: list[tuple[int, ...] | None] = [None]

    def quiet() -> bool:
        now = _links_quiet(ring)
        settled = now is not None and now == last[0]
        last[0] = now
        return settled

    wait_for(quiet, timeout=30, what="every link to deliver what it sent")
    assert sum(x.statistics()["duplicates_dropped"] for x in ring) >= 3 * n  # a real cycle
    for k, sub in enumerate(subs):
        got[k].extend(sub.recv_all())
        assert len(got[k]) == 3 * n, f"context {names[k]} got {len(got[k]) - 3 * n} extra"
        for source in names:
            mine = [m for m in got[k] if m[0] == source]
            assert mine == [f"{source}{i}" for i in range(n)], (names[k], source)


def test_duplicate_suppression_keeps_each_sources_sequence_within_a_batch(
    contexts: Any,
) -> None:
    """The router, fed one batch that interleaves two sources and repeats them.

    Deterministic: the batch is built here and handed to the context's router
    as a transport does, so the interleaving does not depend on timing.
    """
    from yoton_core._wire import make_header

    a, b = contexts(2)
    _s, conn = join(a, b)
    sub = yoton.SubChannel(b, "batch")
    slot = sub._slot_in
    assert slot is not None
    x, y = 0xAAAA0001, 0xBBBB0002

    def pkg(source: int, seq: int) -> list[Any]:
        data = f"{source:x}-{seq}".encode()
        return [make_header(data, slot, source, seq), data]

    batch = [*pkg(x, 1), *pkg(y, 1), *pkg(x, 2), *pkg(y, 2), *pkg(x, 1), *pkg(y, 2), *pkg(x, 3)]
    b._route(conn, batch)
    b._route(conn, [*pkg(x, 2), *pkg(y, 1), *pkg(y, 3), *pkg(x, 3)])  # the second paths
    assert sub.recv_all() == [
        f"{x:x}-1",
        f"{y:x}-1",
        f"{x:x}-2",
        f"{y:x}-2",
        f"{x:x}-3",
        f"{y:x}-3",
    ]


def _echo_service(requester: yoton.Context, replier: yoton.Context) -> yoton.ReqChannel:
    rep = yoton.RepChannel(replier, "svc")
    rep.set_mode("thread")
    req = yoton.ReqChannel(requester, "svc")
    assert req.echo("warm").result(10)[0] == "warm"  # (routes are learned on the way)
    return req


def test_a_relay_sends_packages_for_one_context_only_its_way(contexts: Any) -> None:
    # A star: a and b talk request/reply through the hub h; c, another spoke,
    # must not get their directed packages (2.x flooded every one of them).
    h, a, b, c = contexts(), contexts(), contexts(), contexts()
    join(h, a)
    join(h, b)
    _h_c, c_conn = join(h, c)
    req = _echo_service(a, b)
    seen_by_c = c_conn.stats.packages_received
    n = 50
    for i in range(n):
        assert req.echo(i).result(10) == (i, hex(b.id))
    # Each call is a request and a reply, both directed: none of them reached c.
    assert c_conn.stats.packages_received - seen_by_c < n
    assert h._routes[a.id].id2 == a.id and h._routes[b.id].id2 == b.id


def test_a_route_through_a_closed_link_is_forgotten(contexts: Any) -> None:
    # a - h - b, then b leaves and comes back through another relay g: h must
    # not keep sending a's packages for b to the dead link.
    h, g, a, b = contexts(), contexts(), contexts(), contexts()
    join(h, a)
    join(h, g)
    h_b, b_h = join(h, b)
    req = _echo_service(a, b)
    assert h._routes[b.id] is h_b
    b_h.close()
    wait_for(lambda: not h_b.is_alive and b.id not in h._routes, what="h to forget the route")
    join(g, b)
    assert req.echo(2).result(10) == (2, hex(b.id))  # flooded until learned again


def test_new_connection_mid_stream_breaks_nothing(contexts: Any) -> None:
    a, b, c = contexts(), contexts(), contexts()
    pub = yoton.PubChannel(a, "stream")
    sub_b = yoton.SubChannel(b, "stream")
    sub_c = yoton.SubChannel(c, "stream")
    join(b, a)
    for i in range(200):
        pub.send(f"m{i}")
    join(b, c)  # c's connect broadcasts NEW_CONNECTION through b to a
    for i in range(200, 400):
        pub.send(f"m{i}")
    assert recv_n(sub_b, 400) == [f"m{i}" for i in range(400)]
    got_c: list[str] = []
    while not got_c or got_c[-1] != "m399":  # c's first message depends on when it joined
        got_c += recv_n(sub_c, 1)
    nums = [int(m[1:]) for m in got_c]
    assert nums == list(range(nums[0], 400)) and nums[0] <= 200
    assert sub_b.pending == 0


# -- channels ----------------------------------------------------------------------


def test_slots_are_case_insensitive(contexts: Any) -> None:
    a, b = contexts(), contexts()
    pub = yoton.PubChannel(a, "  News Ü")
    sub = yoton.SubChannel(b, "news ü")
    other = yoton.SubChannel(b, "news u")
    join(a, b)
    pub.send("hi")
    assert sub.recv(10) == "hi"
    assert other.recv(False) == ""
    assert pub.slot_outgoing == "  News Ü.txt.pub-sub"


def test_slot_not_free(contexts: Any) -> None:
    a = contexts()
    p = yoton.PubChannel(a, "dup")
    with pytest.raises(ValueError, match="Slot not free"):
        yoton.PubChannel(a, "DUP")
    yoton.SubChannel(a, "dup")  # a Sub may share the base
    with pytest.raises(ValueError, match="Slot not free"):
        yoton.SubChannel(a, "Dup")
    yoton.PubChannel(a, "dup", yoton.OBJECT)  # another type is another slot
    p.close()
    yoton.PubChannel(a, "dup")  # free again after close


def test_local_delivery_pub_and_sub_in_one_context(contexts: Any) -> None:
    a = contexts()
    pub = yoton.PubChannel(a, "self")
    sub = yoton.SubChannel(a, "self")
    pub.send("to myself")
    assert sub.recv(5) == "to myself"


def test_local_delivery_follows_channels_that_come_and_go(contexts: Any) -> None:
    """A sending stream looks its local receiver up once (Context._send's cache):
    a SubChannel opened, closed or replaced between sends must still be seen."""
    a = contexts()
    pub = yoton.PubChannel(a, "self")
    pub.send("nobody")  # (no receiver yet: what is remembered is "none")
    sub = yoton.SubChannel(a, "self")
    pub.send("first")
    assert sub.recv(5) == "first"
    sub.close()
    pub.send("closed")  # must not reach the closed channel
    assert sub.pending == 0
    again = yoton.SubChannel(a, "self")
    pub.send("second")
    assert again.recv(5) == "second"
    assert again.pending == 0  # nothing from before it was opened


def test_a_reader_sleeping_in_recv_is_woken_by_every_local_send(contexts: Any) -> None:
    """Deposits notify a sleeping reader once per sleep (BaseChannel._notify): each
    new sleep must be woken again. Ping-pong, so the reader sleeps before each send."""
    a = contexts()
    pub = yoton.PubChannel(a, "pingpong", yoton.OBJECT)
    sub = yoton.SubChannel(a, "pingpong", yoton.OBJECT)
    got: queue.Queue[Any] = queue.Queue()

    def reader() -> None:
        for _ in range(100):
            got.put(sub.recv(10))  # (None: not woken in time)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    for i in range(100):
        wait_for(lambda: sub._waiters == 1, what="the reader to sleep in recv")
        pub.send(i)
        assert got.get(timeout=20) == i
    t.join(10)


def test_select_sub_channel_keeps_arrival_order(contexts: Any) -> None:
    a, b = contexts(), contexts()
    pubs = {k: yoton.PubChannel(a, k) for k in "xyz"}
    subs = {k: yoton.SubChannel(b, k) for k in "xyz"}
    join(a, b)
    order = "xxyzzzyxyyxzxz" * 20
    sent = []
    for i, k in enumerate(order):
        pubs[k].send(f"{k}{i}")
        sent.append(f"{k}{i}")
    wait_for(lambda: sum(s.pending for s in subs.values()) == len(order))
    got: list[str] = []
    while True:
        ch = yoton.select_sub_channel(*subs.values())
        if ch is None:
            break
        chunk = ch.recv_selected()
        assert chunk, "a selected channel gives at least one message"
        got.extend(chunk)
    assert got == sent
    with pytest.raises(TypeError):
        yoton.select_sub_channel(pubs["x"])  # type: ignore[arg-type]


def test_recv_block_values(contexts: Any) -> None:
    a, b = contexts(), contexts()
    pub = yoton.PubChannel(a, "blk", yoton.OBJECT)
    sub = yoton.SubChannel(b, "blk", yoton.OBJECT)
    join(a, b)
    assert sub.recv(False) is None and sub.recv(0) is None and sub.recv(None) is None
    pub.send(1)
    assert sub.recv(5) == 1  # an int works (2.x raised ValueError)
    pub.send(2)
    assert sub.recv(5.0) == 2
    pub.send(3)
    assert sub.recv(True) == 3
    assert sub.recv(1) is None  # nothing came: the empty message


def test_iteration_does_not_stop_at_falsy_messages(contexts: Any) -> None:
    a, b = contexts(), contexts()
    pub = yoton.PubChannel(a, "falsy", yoton.OBJECT)
    sub = yoton.SubChannel(b, "falsy", yoton.OBJECT)
    join(a, b)
    values = [0, "", [], None, False, {}, 0.0, 1]
    for v in values:
        pub.send(v)
    wait_for(lambda: sub.pending == len(values))
    got = list(sub)
    assert got == values and [type(v) for v in got] == [type(v) for v in values]
    assert list(sub) == []


@pytest.mark.parametrize("mode", ["old", "new"])
def test_channel_inbox_discards_by_policy(contexts: Any, mode: str) -> None:
    a, b = contexts(), contexts(queue_params=(5, mode))
    pub = yoton.PubChannel(a, "inbox")
    sub = yoton.SubChannel(b, "inbox")
    join(a, b)
    for i in range(12):
        pub.send(str(i))
    wait_for(lambda: sub.pending + sub.dropped == 12, what="all 12 to be deposited or dropped")
    assert sub.dropped == 7 and sub.pending == 5
    expected = ["7", "8", "9", "10", "11"] if mode == "old" else ["0", "1", "2", "3", "4"]
    assert sub.recv_all() == expected


@pytest.mark.parametrize("mode", ["old", "new"])
def test_channel_inbox_discards_by_policy_in_one_context(contexts: Any, mode: str) -> None:
    """Context._send appends to a local inbox itself: the same limit and policy."""
    a = contexts(queue_params=(5, mode))
    pub = yoton.PubChannel(a, "inbox")
    sub = yoton.SubChannel(a, "inbox")
    for i in range(12):
        pub.send(str(i))
    assert sub.dropped == 7 and sub.pending == 5  # (delivered in the sending thread)
    expected = ["7", "8", "9", "10", "11"] if mode == "old" else ["0", "1", "2", "3", "4"]
    assert sub.recv_all() == expected


def test_queue_params_validation() -> None:
    assert yoton.Context().queue_params == (10000, "old")
    assert yoton.Context(queue_params=(10, "NEW")).queue_params == (10, "new")
    for bad in (
        [10, "old"],
        (0, "old"),
        (-1, "new"),
        ("10", "old"),
        (10, "middle"),
        (10,),
        (True, "old"),
        (10, None),
    ):
        with pytest.raises(ValueError, match="queue_params"):
            yoton.Context(queue_params=bad)  # type: ignore[arg-type]
    ctx = yoton.Context()
    with pytest.raises(ValueError):
        ctx.queue_params = (5, "sideways")
    assert ctx.queue_params == (10000, "old")
