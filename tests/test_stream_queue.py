"""The direct-write path of stream connections (_stream_queue.py), white-box.

A user thread may write a package to an idle socket itself; these tests drive
that ownership protocol by hand on a real socket pair (the engine's part is
played by the test) and check what a defect would break: bytes leave in push
order, a partial write is finished before anything queued after it, nothing
is written while the sender owns the socket or after direct writes are
switched off, and the flush accounting counts a package only once it is out.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import yoton
from yoton_core import _fan, _stream_queue
from yoton_core._decoder import FrameDecoder
from yoton_core._stream import link_of
from yoton_core._stream_link import StreamLink
from yoton_core._stream_queue import DIRECT_BATCH, FRAME_MAX
from yoton_core._wire import HEADER, HEARTBEAT_BYTES, Package, encode_package, package_header
from yoton_core.testing import recv_n, wait_for
from yoton_tcp import TcpConnection

SLOT = 12345


@pytest.fixture
def link() -> Iterator[tuple[StreamLink, socket.socket, socket.socket]]:
    ctx = yoton.Context()
    conn = link_of(TcpConnection(ctx))  # the connection's queue and direct path
    a, b = socket.socketpair()
    a.setblocking(False)
    conn._send_event = threading.Event()  # type: ignore[assignment]  # the sender's wake-up
    conn._enable_direct(a)
    try:
        yield conn, a, b
    finally:
        conn._enable_direct(None)
        a.close()
        b.close()


def _pkg(i: int, size: int = 10) -> Package:
    return Package(str(i).encode().ljust(size, b"."), SLOT, 7, i + 1)


def _push(conn: StreamLink, pkg: Package) -> None:
    conn._conn.send_package(package_header(pkg), pkg.data)  # what the context calls


def _idle(conn: StreamLink) -> None:
    """Make the next push look like the first in a while (the "quiet" rule)."""
    conn._last_idle_push = -1e9


def _busy(conn: StreamLink) -> None:
    """Make the next push look like part of a stream: queued, not written directly."""
    conn._last_idle_push = float("inf")


def _read_all(b: socket.socket, n_packages: int) -> list[Package]:
    dec = FrameDecoder()
    out: list[Package] = []
    b.settimeout(10)
    while len(out) < n_packages:
        chunk = b.recv(1 << 20)
        assert chunk, "socket closed early"
        out.extend(p for p in dec.feed(chunk) if isinstance(p, Package))
    return out


def test_idle_push_is_written_by_the_pushing_thread(link) -> None:
    conn, _a, b = link
    _idle(conn)
    _push(conn, _pkg(1))
    assert conn.queued_count() == 0
    assert conn._retired() == conn._pushed == 1
    assert not conn._send_event.is_set()  # the engine was not needed
    assert [p.data for p in _read_all(b, 1)] == [_pkg(1).data]


def test_a_push_after_a_receive_is_written_at_once(link, monkeypatch: pytest.MonkeyPatch) -> None:
    # A push soon after another one is taken for part of a stream and queued
    # for the engine to batch -- unless the link received something in
    # between: then it answers (a reply) or goes on (the next request after a
    # reply), and waiting for the engine would add its wake-up to a round trip.
    conn, _a, b = link
    monkeypatch.setattr(_stream_queue, "DIRECT_QUIET", 60.0)  # every push is "soon"
    conn._last_idle_push = time.monotonic()
    _push(conn, _pkg(1))
    assert conn.queued_count() == 1  # nothing received since the last push: queued
    conn._outq.clear()  # (as if the sender had written it)
    assert conn._receive(HEARTBEAT_BYTES)  # something arrives
    _push(conn, _pkg(2))
    assert conn.queued_count() == 0
    assert conn._direct_written == 1
    assert [p.data for p in _read_all(b, 1)] == [_pkg(2).data]
    _push(conn, _pkg(3))  # nothing received since: a stream again
    assert conn.queued_count() == 1
    assert conn._direct_written == 1


def test_no_direct_write_while_the_sender_owns_the_socket(link) -> None:
    conn, _a, b = link
    assert conn._start_writing() is None
    _idle(conn)
    _push(conn, _pkg(1))
    assert conn.queued_count() == 1  # queued for the sender, not written
    assert not conn._stop_writing()  # the sender may not leave with work queued
    conn._outq.clear()
    assert conn._stop_writing()


def test_switched_off_means_queued(link) -> None:
    conn, _a, _b = link
    conn._enable_direct(None)
    _idle(conn)
    _push(conn, _pkg(1))
    assert conn.queued_count() == 1
    assert conn._retired() == 0


def test_partial_write_is_finished_first_and_counted_once(link) -> None:
    conn, a, b = link
    # Fill the socket buffer with whole packages, so the stream stays decodable.
    filler = encode_package(_pkg(0, 1000))
    n_fill = 0
    rest = b""  # of a filler package the full buffer took only in part
    while True:
        try:
            n = a.send(filler)
        except BlockingIOError:
            break
        n_fill += 1
        if n < len(filler):
            rest = filler[n:]
            break
    big = _pkg(1, 60000)
    _idle(conn)
    _push(conn, big)  # the buffer is full: at most part of it goes out
    assert conn._partial is not None
    assert conn._send_event.wait(10)  # the engine is asked to finish it
    assert conn._retired() == 0  # not out yet: flush() must still wait
    _push(conn, _pkg(2))  # queued behind the remainder
    assert conn.queued_count() == 2

    # Play the sender: take the socket, write the remainder, then the queue.
    reader_out: list[Package] = []
    reader = threading.Thread(target=lambda: reader_out.extend(_read_all(b, n_fill + 2)))
    reader.start()
    partial = conn._start_writing()
    assert partial is not None and conn._partial is None
    a.setblocking(True)
    a.sendall(rest)  # (the test's own bytes were first in the stream)
    a.sendall(partial)
    conn._partial_written()
    item = conn._outq.popleft()  # a finished frame, or (header, payload)
    a.sendall(item if isinstance(item, bytes) else HEADER.pack(*item[0]) + item[1])
    conn._written += 1
    a.setblocking(False)
    assert conn._stop_writing()
    reader.join(20)
    assert conn._retired() == conn._pushed == 2
    got = [p.data for p in reader_out]
    assert got == [_pkg(0, 1000).data] * n_fill + [big.data, _pkg(2).data]


def test_a_broadcast_packs_each_frame_once_and_never_mixes_them(contexts) -> None:
    # A broadcast pushes one header object to every link, and the frame packed
    # for the first link is reused for the others (Context._frame_of). Every
    # message here has the same size and its own content: a frame reused for
    # the wrong header would show up as a repeated or missing message. The
    # relay passes each on to two more links the same way.
    pub_ctx, relay, a, b, c = contexts(5)
    pub = yoton.PubChannel(pub_ctx, "fan", yoton.BINARY)
    subs = []
    for ctx, server in ((a, pub_ctx), (b, pub_ctx), (relay, pub_ctx), (c, relay)):
        bound = server.bind("localhost:0")
        ctx.connect(f"localhost:{bound.port1}", timeout=5)

        def linked(bound: yoton.Connection = bound) -> bool:
            return bound.is_connected

        wait_for(linked, what="a link")
    second = relay.bind("localhost:0")
    d = contexts()
    d.connect(f"localhost:{second.port1}", timeout=5)
    wait_for(lambda: second.is_connected, what="the relay's second link")
    for ctx in (a, b, c, d):
        subs.append(yoton.SubChannel(ctx, "fan", yoton.BINARY))
    n = 3000
    for i in range(n):
        pub.send(b"%06d" % i)
    for sub in subs:
        assert recv_n(sub, n) == [b"%06d" % i for i in range(n)]
    # Most of them took Context._send's fan-out path, whose appends each link
    # counts from its _fan_base: every package pushed is written (none left,
    # none counted twice), so flushing ends.
    assert pub_ctx._fan_out is not None and len(pub_ctx._fan_out) == 3
    for conn in pub_ctx.connections:
        conn.flush(10)
        q = link_of(conn)
        assert q.queued_count() == 0 and q._retired() == q._pushed_now() >= n


def test_fan_out_counts_hold_through_large_packages_and_links_that_come_and_go(contexts) -> None:
    # The fan-out path does not count its appends one by one: a link counts
    # every package its context numbered since its _fan_base (_stream_queue,
    # "Counters"). Large packages (through send_package), a link that joins
    # mid-stream and one that leaves must keep the count exact: flush must
    # neither end early (a count too low) nor time out (too high), and once
    # all is out, what was written is what was pushed.
    pub_ctx, a, b = contexts(3)
    pub = yoton.PubChannel(pub_ctx, "count", yoton.BINARY)
    sub_a = yoton.SubChannel(a, "count", yoton.BINARY)
    sub_b = yoton.SubChannel(b, "count", yoton.BINARY)
    big = b"L" * (FRAME_MAX + 1)
    msgs = [b"%06d" % i for i in range(3000)]
    sent = [big if i % 500 == 250 else m for i, m in enumerate(msgs)]

    def stream() -> None:
        for m in sent:
            pub.send(m)

    def check() -> None:
        for conn in pub_ctx._connected:
            conn.flush(10)
            q = link_of(conn)
            assert q.queued_count() == 0
            assert q._retired() == q._pushed_now() >= len(sent)

    def uncounted() -> list[bytes]:
        # Small sends until every link holds appends its _pushed does not count
        # yet, so that the fan's change that follows has some to settle.
        tail: list[bytes] = []
        while any(q._fan_base == pub_ctx._send_seq for q in pub_ctx._fan_out or ()):
            assert len(tail) < 10_000, "the fan-out path appended nothing"
            tail.append(b"t%05d" % len(tail))
            pub.send(tail[-1])
        return tail

    bound_a = a.bind("localhost:0")
    to_a = pub_ctx.connect(f"localhost:{bound_a.port1}", timeout=5)
    wait_for(lambda: bound_a.is_connected, what="the link to a")
    stream()
    check()
    tail_1 = uncounted()
    bound_b = b.bind("localhost:0")
    pub_ctx.connect(f"localhost:{bound_b.port1}", timeout=5)
    wait_for(lambda: pub_ctx._fan_out is not None and len(pub_ctx._fan_out) == 2, what="b")
    stream()
    check()
    tail_2 = uncounted()
    to_a.close()
    wait_for(lambda: len(pub_ctx._connected) == 1, what="the link to a to go")
    stream()
    check()
    assert recv_n(sub_a, 2 * len(sent) + len(tail_1) + len(tail_2)) == sent + tail_1 + sent + tail_2
    assert recv_n(sub_b, 2 * len(sent) + len(tail_2)) == sent + tail_2 + sent


def test_links_of_other_transports_turn_the_fan_out_path_off(contexts) -> None:
    # Context._send appends frames to queues itself only while every link is
    # a stream queue of ours (_fan.fan_links); beside an inproc link
    # each package goes through every connection's send_package, and both
    # subscribers still get everything in order. When the inproc link goes,
    # the path comes back for the TCP link alone.
    pub_ctx, a, b = contexts(3)
    pub = yoton.PubChannel(pub_ctx, "mixed", yoton.BINARY)
    bound = a.bind("localhost:0")
    pub_ctx.connect(f"localhost:{bound.port1}", timeout=5)
    b.bind("inproc://fan-mixed")
    inproc = pub_ctx.connect("inproc://fan-mixed", timeout=5)
    subs = [yoton.SubChannel(ctx, "mixed", yoton.BINARY) for ctx in (a, b)]
    wait_for(lambda: len(pub_ctx._connected) == 2, what="both links")
    assert pub_ctx._fan_out is None
    n = 2000
    msgs = [b"%06d" % i for i in range(n)]
    for m in msgs:
        pub.send(m)
    for sub in subs:
        assert recv_n(sub, n) == msgs
    inproc.close()
    wait_for(lambda: len(pub_ctx._connected) == 1, what="the inproc link to go")
    assert pub_ctx._fan_out == (link_of(pub_ctx._connected[0]),)
    for m in msgs:
        pub.send(m)
    assert recv_n(subs[0], n) == msgs


# -- a pusher's own batches, and the sender's wake-ups ------------------------------


def _fill_socket(a: socket.socket) -> tuple[int, bytes]:
    """Fill ``a``'s send buffer with whole filler packages; (count, unsent rest of the last)."""
    filler = encode_package(_pkg(0, 1000))
    n_fill = 0
    while True:
        try:
            n = a.send(filler)
        except BlockingIOError:
            return n_fill, b""
        n_fill += 1
        if n < len(filler):
            return n_fill, filler[n:]


def test_a_stream_goes_out_in_the_pushers_own_batches(link) -> None:
    conn, _a, b = link
    n = 2 * DIRECT_BATCH + 50
    _idle(conn)
    for i in range(n):
        _push(conn, _pkg(i))
    # The first went out directly; the second woke the sender (which has not
    # run); the pusher sent every DIRECT_BATCH queued frames itself.
    assert conn._direct_written >= 2 * DIRECT_BATCH
    assert conn.queued_count() < DIRECT_BATCH
    assert conn._send_event.wait(10) and conn._wake_pending
    assert conn._retired() + conn.queued_count() == conn._pushed == n
    # Play the sender for the rest: every package arrives once, in push order.
    partial = conn._start_writing()
    assert partial is None
    rest = b"".join(conn._outq)
    conn._outq.clear()
    b_reader_out = _read_all_after(b, rest, conn, n)
    assert [p.data for p in b_reader_out] == [_pkg(i).data for i in range(n)]


def test_the_push_after_a_pushers_batch_is_queued_not_written_alone(link) -> None:
    # A stream empties the queue only with the pusher's own batches; the push
    # that finds it empty then is part of the stream, whatever the "quiet"
    # rule's clock says (a batch takes longer than DIRECT_QUIET): written on
    # its own, it would cost a system call per batch for one package.
    conn, _a, b = link
    _idle(conn)
    _push(conn, _pkg(0))  # quiet: written directly
    for i in range(1, DIRECT_BATCH + 2):  # queued; the last push sends them as a batch
        _push(conn, _pkg(i))
    assert conn.queued_count() == 0 and conn._direct_written == DIRECT_BATCH + 2
    _push(conn, _pkg(DIRECT_BATCH + 2))
    assert conn.queued_count() == 1 and conn._direct_written == DIRECT_BATCH + 2
    n = DIRECT_BATCH + 3
    rest = b"".join(conn._outq)
    conn._outq.clear()
    assert conn._start_writing() is None
    got = _read_all_after(b, rest, conn, n)
    assert [p.data for p in got] == [_pkg(i).data for i in range(n)]


def _read_all_after(b: socket.socket, rest: bytes, conn: StreamLink, n: int) -> list[Package]:
    """Write ``rest`` as the sender would (blocking), then read ``n`` packages from ``b``."""
    out: list[Package] = []
    reader = threading.Thread(target=lambda: out.extend(_read_all(b, n)))
    reader.start()
    a = conn._direct_sock
    assert a is not None
    a.setblocking(True)
    a.sendall(rest)
    a.setblocking(False)
    reader.join(20)
    return out


def test_no_batch_of_the_pusher_while_the_sender_writes(link) -> None:
    conn, _a, _b = link
    assert conn._start_writing() is None
    for i in range(2 * DIRECT_BATCH):
        _push(conn, _pkg(i))
    assert conn.queued_count() == 2 * DIRECT_BATCH  # all for the sender
    assert conn._retired() == 0


def test_a_batch_the_socket_takes_in_part_is_finished_by_the_sender(link) -> None:
    conn, a, b = link
    n_fill, rest = _fill_socket(a)
    _busy(conn)
    _push(conn, _pkg(1))  # queued
    conn._wake_pending = True  # (as if the sender's wake-up were on its way)
    for i in range(2, DIRECT_BATCH + 2):
        _push(conn, _pkg(i))
    # The pusher's batch did not fit: it is the sender's partial write now,
    # and what comes after waits behind it.
    assert conn._partial is not None and conn._partial_count == DIRECT_BATCH + 1
    assert conn._retired() == 0
    _push(conn, _pkg(DIRECT_BATCH + 2))
    assert conn.queued_count() == 2
    out: list[Package] = []
    reader = threading.Thread(target=lambda: out.extend(_read_all(b, n_fill + DIRECT_BATCH + 2)))
    reader.start()
    partial = conn._start_writing()
    assert partial is not None
    a.setblocking(True)
    a.sendall(rest)
    a.sendall(partial)
    conn._partial_written()
    assert conn._retired() == DIRECT_BATCH + 1  # the whole batch, once it is out
    a.sendall(conn._outq.popleft())
    conn._written += 1
    a.setblocking(False)
    assert conn._stop_writing()
    reader.join(20)
    got = [p.data for p in out][n_fill:]
    assert got == [_pkg(i).data for i in range(1, DIRECT_BATCH + 3)]
    assert conn._retired() == conn._pushed == DIRECT_BATCH + 2


def test_a_large_package_leaves_the_queue_to_the_sender(link) -> None:
    conn, _a, _b = link
    _busy(conn)
    _push(conn, _pkg(0))  # queued
    _push(conn, _pkg(1, FRAME_MAX + 1))  # a (header, payload), never joined by a pusher
    for i in range(2, DIRECT_BATCH + 2):
        _push(conn, _pkg(i))
    assert conn._batch_blocked  # the pusher tried once, and left it to the sender
    assert conn.queued_count() == DIRECT_BATCH + 2 and conn._retired() == 0
    assert [p[0][3] if isinstance(p, tuple) else None for p in conn._outq][1] == 2  # order kept
    assert conn._start_writing() is None
    conn._outq.clear()
    assert conn._stop_writing()
    assert not conn._batch_blocked


def test_the_sender_is_not_woken_while_it_writes(link) -> None:
    conn, _a, _b = link
    _busy(conn)
    _push(conn, _pkg(1))  # queued, and the sender is woken
    assert conn._send_event.wait(10) and conn._wake_pending
    conn._send_event.clear()  # the sender runs...
    assert conn._start_writing() is None
    conn._outq.clear()
    _push(conn, _pkg(2))  # ...and looks at the queue again before it stops
    assert not conn._send_event.wait(0.05)
    assert not conn._stop_writing()  # it does: the package is there
    conn._outq.clear()
    assert conn._stop_writing() and not conn._wake_pending
    _busy(conn)
    _push(conn, _pkg(3))  # after that, a push wakes it again
    assert conn._send_event.wait(10) and conn._wake_pending


def test_flush_reads_its_count_under_the_context_lock_within_its_timeout(contexts) -> None:
    # flush takes the context lock a moment to read the fan's count exactly
    # (_fan.py); a lock that is not free within the timeout is a timeout, not
    # a hang, and None still means no limit.
    pub_ctx, sub_ctx = contexts(2)
    bound = sub_ctx.bind("localhost:0")
    conn = pub_ctx.connect(f"localhost:{bound.port1}", timeout=5)
    yoton.PubChannel(pub_ctx, "f").send("x")
    conn.flush(None)
    pub_ctx._lock.acquire()
    try:
        with pytest.raises(yoton.TimeoutError, match="context busy"):
            conn.flush(0.05)
    finally:
        pub_ctx._lock.release()
    conn.flush(5)


def test_a_send_interrupted_in_the_fan_loop_counts_nothing_a_link_did_not_get(contexts) -> None:
    # The fan's bases count each package for every link of the fan (_fan.py).
    # A send that fails half way -- here the second link's send_package
    # raises, as a Ctrl-C could -- must not leave the third link counting a
    # package it never got: its flush would wait for it forever.
    pub_ctx, *peers = contexts(4)
    pub = yoton.PubChannel(pub_ctx, "intr", yoton.BINARY)
    subs = {}
    for peer in peers:
        sub = yoton.SubChannel(peer, "intr", yoton.BINARY)
        bound = peer.bind("localhost:0")
        subs[pub_ctx.connect(f"localhost:{bound.port1}", timeout=5)] = sub
    wait_for(lambda: pub_ctx._fan_out is not None and len(pub_ctx._fan_out) == 3, what="3 links")
    first, failing, last = (link._conn for link in pub_ctx._fan_out)

    def interrupted(header, data):
        raise RuntimeError("interrupted")

    failing.send_package = interrupted  # (the loop calls link._conn.send_package)
    with pytest.raises(RuntimeError, match="interrupted"):
        pub.send(b"lost")  # (idle queues: every link takes send_package)
    del failing.send_package
    pub.send(b"after")
    for conn in (first, failing, last):
        conn.flush(5)  # none waits for the package that the failure stopped
    for conn in (first, last):
        q = link_of(conn)
        assert q._retired() == q._pushed_now()
    assert recv_n(subs[first], 2) == [b"lost", b"after"]
    assert recv_n(subs[last], 1) == [b"after"]
    assert recv_n(subs[failing], 1) == [b"after"]


def test_push_frames_queues_a_relayed_run_at_once_or_not_at_all(link) -> None:
    # A relay's run (Router._relay_run): all its frames are queued and, the
    # link idle, sent by the pushing thread in one go; past the context's
    # queue limit none is, and each goes through send_package instead.
    conn, _a, b = link
    pkgs = [_pkg(i) for i in range(6)]
    frames = [encode_package(p) for p in pkgs]
    conn._context.queue_params = (5, "new")
    assert not _fan.push_frames(conn, frames)
    assert not conn._outq and conn._pushed == 0
    conn._context.queue_params = (100, "new")
    assert _fan.push_frames(conn, frames)
    assert [p.data for p in _read_all(b, 6)] == [p.data for p in pkgs]
    assert not conn._outq and conn._pushed == conn._direct_written == 6
