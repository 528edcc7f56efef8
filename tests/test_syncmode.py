"""Sync mode: a full SubChannel slows its publishers.

The protocol: docs/protocol.md#sync-mode; 2.x's defects fixed here:
docs/protocol.md#differences-from-2x, items 6, 9 and 24.

The big test sends a 1,000,000-message burst from a publisher that is much
faster than the subscriber (which decodes and checks every message in another
process) and asserts that every message arrives, in order. 2.x would either
drop (no sync mode) or crawl at one message per second (its sync mode).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from yoton2 import Yoton2Proc

import yoton
from yoton_core import _sync
from yoton_core.testing import wait_for as wait_until

pytestmark = pytest.mark.timeout(120)

GENEROUS = 10.0


def join(a: yoton.Context, b: yoton.Context) -> None:
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=GENEROUS)
    wait_until(lambda: a.connection_count and b.connection_count)


def as_int(m: bytes) -> int:
    return int.from_bytes(m, "little")


class Publisher(threading.Thread):
    """Sends n 4-byte counters from a thread; ``sent`` counts progress."""

    def __init__(self, pub: yoton.PubChannel, n: int) -> None:
        super().__init__(daemon=True)
        self.pub = pub
        self.n = n
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        send = self.pub.send
        try:
            for i in range(self.n):
                send(i.to_bytes(4, "little"))
                self.sent = i + 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def read_all(sub: yoton.SubChannel, n: int) -> list[int]:
    out: list[int] = []
    deadline = time.monotonic() + 60
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} messages arrived"
        msgs = sub.recv_all()
        if not msgs:
            m = sub.recv(1.0)
            msgs = [m] if m else []
        out += [as_int(m) for m in msgs]
    return out


def sync_pair(made_contexts, slot, queue_n=None):
    """Two linked contexts, a publisher and a sync-mode subscriber on ``slot``.

    Returned once the publisher heard the subscriber's window: from then on it
    is held to it from the first message; a burst sent before the
    announcement came is bounded by "full" only.
    """
    p = yoton.Context()
    s = yoton.Context(queue_params=(queue_n, "old")) if queue_n else yoton.Context()
    made_contexts += [p, s]
    pub = yoton.PubChannel(p, slot, yoton.BINARY)
    sub = yoton.SubChannel(s, slot, yoton.BINARY)
    sub.set_sync_mode(True)
    join(p, s)
    wait_until(lambda: pub._sync_windows, what="the subscriber's window")
    return p, s, pub, sub


def blocked_pair(made_contexts, n):
    """A sync-mode sub that does not read and a publisher thread it blocked."""
    # Held to the subscriber's window from the first message: before its
    # announcement arrives only "full" holds a publisher back, and under load
    # the whole burst could go out before that came (seen beside a CPU hog).
    _p, _s, pub, sub = sync_pair(made_contexts, "data")
    sender = Publisher(pub, n)
    sender.start()
    wait_until(
        lambda: pub._sync_blocked and getattr(pub, "_sync_waits", 0), what="the publisher blocked"
    )
    return pub, sub, sender


# -- the burst ---------------------------------------------------------------------------

SUBSCRIBER = """
import sys, time
import yoton

n = int(sys.argv[2])
ctx = yoton.Context()
sub = yoton.SubChannel(ctx, "burst", yoton.BINARY)
sub.set_sync_mode(True)
ctx.connect("tcp://localhost:%d" % int(sys.argv[1]), timeout=10)
print("READY", flush=True)
# Read nothing until the test says GO: it does once the publisher waits for
# us in sync mode (without sync mode it never does, and the test fails).
sys.stdin.readline()
expected = 0
out_of_order = 0
max_pending = 0
recv_all = sub.recv_all
while expected < n:
    max_pending = max(max_pending, sub.pending)
    msgs = recv_all()
    if not msgs:
        m = sub.recv(10.0)
        if not m:
            break
        msgs = [m]
    for m in msgs:
        if int.from_bytes(m, "little") != expected:
            out_of_order += 1
        expected += 1
print("RESULT", expected, out_of_order, sub.dropped, max_pending, flush=True)
"""


def test_sync_subscriber_loses_nothing_of_a_million_message_burst(made_contexts):
    n = 1_000_000
    ctx = yoton.Context()
    made_contexts.append(ctx)
    pub = yoton.PubChannel(ctx, "burst", yoton.BINARY)
    conn = ctx.bind("tcp://localhost:0")  # the child is another process
    child = Yoton2Proc(
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SUBSCRIBER), str(conn.port1), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
    )
    sender = Publisher(pub, n)
    try:
        child.expect_line("READY", timeout=GENEROUS)
        wait_until(lambda: ctx.connection_count == 1)
        # Held to the child's window from the first message (what a publisher
        # sends before it heard of a subscriber is bounded by "full" only).
        wait_until(lambda: pub._sync_windows, what="the subscriber's window")
        sender.start()
        # The child reads nothing meanwhile: the sender must come to wait for
        # it in sync mode. Deciding by this, not by speeds: a child that reads
        # as fast as the sender sends never makes it wait, and its connection's
        # congestion can hold it through a short full spell (seen on 3.10).
        wait_until(lambda: pub._sync_waiting, GENEROUS, "the publisher to wait in sync mode")
        assert sender.is_alive() and sender.sent < n
        assert child.proc.stdin is not None
        child.proc.stdin.write("GO\n")
        child.proc.stdin.flush()
        result = child.expect_line("RESULT", timeout=90).split()
        sender.join(GENEROUS)
        assert not sender.is_alive() and sender.error is None
    finally:
        child.kill()
    received, out_of_order, dropped, max_pending = map(int, result)
    assert (received, out_of_order, dropped) == (n, 0, 0)
    # The window kept the inbox within the configured size (default 10,000:
    # "full" at 256 plus one window of 4,872), not just far from the burst's.
    assert max_pending <= 10_000


# -- the inbox stays within its size --------------------------------------------------------


@pytest.mark.parametrize("size", [5_000, 1_000])
@pytest.mark.parametrize("scheme", ["tcp", "unix", "inproc"])
def test_a_paused_sync_subscriber_stays_within_its_queue_size(scheme, size, rundir, contexts):
    """queue_params=(size, "old"), a burst of 15,000 at a subscriber that reads
    nothing until its publisher is held back: the inbox never holds more than size.

    "full" alone let it reach 4,100-13,700 (what the publisher pushed before the
    word arrived, however late that was; so with 1,000 it always failed); the
    subscriber's window counts what is on its way.
    """
    n = 15_000
    p, s = contexts(2, queue_params=(size, "old"))
    conn = p.bind(f"{scheme}://localhost:0")
    s.connect(f"{scheme}://localhost:{conn.port1}", timeout=GENEROUS)
    wait_until(lambda: p.connection_count and s.connection_count)
    pub = yoton.PubChannel(p, "burst", yoton.BINARY)
    sub = yoton.SubChannel(s, "burst", yoton.BINARY)
    sub.set_sync_mode(True)
    # A publisher is held to the window once it heard of the subscriber (its
    # announcement follows set_sync_mode at once; a burst sent before it can
    # overshoot, as with 2.x). The test starts the burst after that.
    wait_until(lambda: pub._sync_windows, what="the subscriber's announcement")
    sender = Publisher(pub, n)
    peak = 0

    def paused() -> bool:
        # The publisher is held back and everything it sent is in the inbox.
        return bool(pub._sync_waiting and sender.sent and sub.pending == sender.sent)

    def subscriber() -> None:
        nonlocal peak
        deadline = time.monotonic() + 60
        while not paused() and sender.is_alive() and time.monotonic() < deadline:
            yoton.process_events()  # no reading meanwhile
            peak = max(peak, sub.pending)
        peak = max(peak, sub.pending)

    sender.start()
    reader = threading.Thread(target=subscriber, daemon=True)
    reader.start()
    reader.join(90)
    assert peak <= size, f"{peak} messages in an inbox of {size}"
    assert paused(), "the publisher was not held back"
    assert read_all(sub, n) == list(range(n))  # all of them, in order, none twice
    sender.join(GENEROUS)
    assert sender.error is None
    assert sub.dropped == 0


# -- blocking and waking --------------------------------------------------------------------


def test_publisher_blocks_while_the_subscriber_is_full_and_wakes_on_ok(made_contexts):
    n = 50_000
    pub, sub, sender = blocked_pair(made_contexts, n)
    assert sender.is_alive() and sender.sent < n
    assert sub.pending < n  # the burst did not all pile up
    assert sub.sync_mode
    got = read_all(sub, n)
    sender.join(GENEROUS)
    assert not sender.is_alive() and sender.error is None
    assert got == list(range(n))
    assert sub.dropped == 0
    wait_until(lambda: not pub._sync_blocked, what="the final ok")


def test_reading_in_batches_releases_the_publisher_too(made_contexts):
    """recv_many does sync mode's bookkeeping after each batch, as recv does."""
    n = 20_000
    pub, sub, sender = blocked_pair(made_contexts, n)
    got = [as_int(m) for m in sub.recv_many(n)]  # all it holds, below its low mark
    sync = sub._sync
    assert sync is not None and (sync._scheduled or not sync.full)  # the "ok" is on its way
    deadline = time.monotonic() + 60
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages arrived"
        got += [as_int(m) for m in sub.recv_many(100, 1.0)]
    sender.join(GENEROUS)
    assert not sender.is_alive() and sender.error is None
    assert got == list(range(n))
    assert sub.dropped == 0
    wait_until(lambda: not pub._sync_blocked, what="the final ok")


def test_sync_mode_does_not_drop_at_the_queue_limit(made_contexts):
    """queue_params N bounds a normal inbox; in sync mode the publisher waits instead."""
    p, s, pub, sync_sub = sync_pair(made_contexts, "data", queue_n=100)
    plain_sub = yoton.SubChannel(s, "DATA2", yoton.BINARY)
    plain_pub = yoton.PubChannel(p, "data2", yoton.BINARY)
    n = 20_000
    for i in range(n):
        plain_pub.send(i.to_bytes(4, "little"))
    wait_until(lambda: plain_sub.dropped == n - 100, what="the plain inbox overflowing")
    sender = Publisher(pub, n)
    sender.start()
    assert read_all(sync_sub, n) == list(range(n))
    sender.join(GENEROUS)
    assert sync_sub.dropped == 0


def test_send_many_waits_for_a_sync_subscriber_as_send_does(made_contexts):
    """A batch far larger than a paused subscriber's queue: held back, nothing dropped."""
    _p, _s, pub, sub = sync_pair(made_contexts, "batch", queue_n=100)
    n = 5_000
    done: list[int] = []
    sender = threading.Thread(
        target=lambda: done.append(pub.send_many(i.to_bytes(4, "little") for i in range(n))),
        daemon=True,
    )
    sender.start()
    wait_until(lambda: pub._sync_waiting, what="the batch held back by the subscriber")
    assert not done and sub.pending <= 100  # within the paused subscriber's queue
    assert read_all(sub, n) == list(range(n))
    sender.join(GENEROUS)
    assert done == [n] and sub.dropped == 0


def test_pub_and_sync_sub_in_one_context(made_contexts):
    ctx = yoton.Context()
    made_contexts.append(ctx)
    pub = yoton.PubChannel(ctx, "local", yoton.BINARY)
    sub = yoton.SubChannel(ctx, "local", yoton.BINARY)
    sub.set_sync_mode(True)
    sender = Publisher(pub, 20_000)
    sender.start()
    wait_until(lambda: pub._sync_blocked, what="the local publisher blocked")
    assert read_all(sub, 20_000) == list(range(20_000))
    sender.join(GENEROUS)
    assert sender.error is None


def test_leaving_sync_mode_releases_the_publisher(made_contexts):
    pub, sub, sender = blocked_pair(made_contexts, 50_000)
    sub.set_sync_mode(False)
    sub.set_sync_mode(False)  # idempotent
    assert not sub.sync_mode
    sender.join(GENEROUS)
    assert not sender.is_alive() and sender.sent == 50_000


def test_closing_a_full_sync_subscriber_releases_the_publisher(made_contexts):
    """2.x left publishers locked and broke the next recv() with a TypeError (item 9)."""
    pub, sub, sender = blocked_pair(made_contexts, 50_000)
    sub.close()
    sender.join(GENEROUS)
    assert not sender.is_alive() and sender.error is None
    # What arrived before the close stays readable, in order, with no error.
    first = sub.recv(False)
    rest = sub.recv_all()
    got = [int.from_bytes(m, "little") for m in [first, *rest]]
    assert got and got == list(range(len(got)))
    assert sub.recv(False) == b""  # then the empty message, as for any empty inbox


def test_closing_the_publisher_wakes_its_blocked_sender(made_contexts, monkeypatch):
    """A sender blocked by a full subscriber returns (with the closed channel's
    error) when its PubChannel is closed, not when the lock expires."""
    monkeypatch.setattr(_sync, "LOCK_EXPIRY", 3600.0)  # only close() can release it now
    pub, sub, sender = blocked_pair(made_contexts, 50_000)
    wait_until(lambda: pub._sync_waiting, what="the sender waiting")
    pub.close()
    sender.join(GENEROUS)
    assert not sender.is_alive(), "pub.close() left its sender blocked"
    assert isinstance(sender.error, OSError), sender.error  # send on a closed channel
    assert sender.sent < 50_000


def test_a_lock_expires_when_the_subscriber_goes_silent(made_contexts, monkeypatch):
    monkeypatch.setattr(_sync, "LOCK_EXPIRY", 0.2)
    p, s = yoton.Context(), yoton.Context()
    made_contexts += [p, s]
    pub = yoton.PubChannel(p, "data")
    liar = yoton.SubChannel(s, "data")  # says "full" once and never again
    join(p, s)
    liar._send(b"full")
    wait_until(lambda: pub._sync_blocked)
    pub.send("goes out once the lock expired")
    assert not pub._sync_blocked
    assert liar.recv(GENEROUS) == "goes out once the lock expired"


SILENT_SUBSCRIBER = """
import sys, threading
import yoton
ctx = yoton.Context()
sub = yoton.SubChannel(ctx, "data", yoton.BINARY)
sub.set_sync_mode(True)
ctx.connect("tcp://localhost:%d" % int(sys.argv[1]), timeout=10)
print("READY", flush=True)
threading.Event().wait(60)  # never reads
"""


def test_a_dead_subscriber_does_not_block_the_publisher(made_contexts):
    ctx = yoton.Context()
    made_contexts.append(ctx)
    pub = yoton.PubChannel(ctx, "data", yoton.BINARY)
    conn = ctx.bind("tcp://localhost:0")  # the child is another process
    child = Yoton2Proc(
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SILENT_SUBSCRIBER), str(conn.port1)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
    )
    try:
        child.expect_line("READY", timeout=GENEROUS)
        wait_until(lambda: ctx.connection_count == 1)
        # Held to the child's window before sending: what a publisher sends
        # before it heard of a subscriber is bounded by "full" only, and on a
        # loaded machine all 200,000 could go out before that came.
        wait_until(lambda: pub._sync_windows, what="the subscriber's window")
        sender = Publisher(pub, 200_000)
        sender.start()
        wait_until(lambda: pub._sync_blocked, what="the publisher blocked")
        assert sender.is_alive()
        child.kill()
        sender.join(GENEROUS * 3)  # released when the connection closes, not after a crawl
        assert not sender.is_alive() and sender.error is None
    finally:
        child.kill()
    assert not pub._sync_blocked


def test_sync_mode_is_an_explicit_flag_and_subclasses_keep_their_deposit(contexts) -> None:
    """The router inlines a SubChannel's inbox unless told otherwise, by a flag
    (BaseChannel._inbox_inline), not by finding a method replaced on the instance;
    a subclass with its own ``_deposit`` sees every message."""
    a, b = contexts(), contexts()
    join(a, b)
    sub = yoton.SubChannel(b, "flag", yoton.BINARY)
    assert sub._inbox_inline
    sub.set_sync_mode(True)
    assert not sub._inbox_inline and "_deposit" not in vars(sub)
    pub = yoton.PubChannel(a, "flag", yoton.BINARY)
    for i in range(300):  # beyond "full" at 256: the sync inbox took them all
        pub.send(i.to_bytes(2, "little"))
    got = [as_int(m) for m in recv_n_sync(sub, 300)]
    assert got == list(range(300))
    sub.set_sync_mode(False)
    assert sub._inbox_inline

    seen: list[bytes] = []

    class Counting(yoton.SubChannel):
        def _deposit(self, pkg):
            seen.append(pkg.data)
            super()._deposit(pkg)

    counting = Counting(b, "counted", yoton.BINARY)
    assert not counting._inbox_inline
    counted = yoton.PubChannel(a, "counted", yoton.BINARY)
    for i in range(50):
        counted.send(i.to_bytes(2, "little"))
    wait_until(lambda: counting.pending == 50, 10, "the counted messages")
    assert [as_int(m) for m in seen] == list(range(50))


def recv_n_sync(sub: yoton.SubChannel, n: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} arrived"
        m = sub.recv(0.5)
        if m:
            out.append(m)
    return out


def test_sync_words_are_said_in_the_engine_thread_only(made_contexts, monkeypatch):
    """Every transition and acknowledgement of a sync-mode subscriber runs in the
    engine thread, so its words go out in the order it decided them.

    A NEW_CONNECTION is routed by whichever thread reads the socket (the poller,
    or a reader that borrowed the sockets); the "full" or window announcement it
    calls for used to be said right there, racing the engine. An acknowledgement
    the engine had decided before it saw the inbox fill then went out after the
    "full", which a 2.x publisher takes as "ok": it was never held
    (test_our_sync_subscriber_throttles_a_2x_publisher, now and then).
    """
    from yoton_core._engine import get_engine

    engine = get_engine()
    said: list[tuple[bytes, bool]] = []
    real = _sync.SubSync._say

    def say(self, word, dest_id=0, dest_seq=0):
        said.append((word, engine.in_engine_thread()))
        return real(self, word, dest_id, dest_seq)

    monkeypatch.setattr(_sync.SubSync, "_say", say)
    hub, s = yoton.Context(), yoton.Context()
    made_contexts += [hub, s]
    sub = yoton.SubChannel(s, "data", yoton.BINARY)
    sub.set_sync_mode(True)
    sync = sub._sync
    assert sync is not None
    join(hub, s)
    wait_until(lambda: said, what="the window announced")
    for full in (False, True):
        if full:  # a full subscriber repeats "full" when a context joins
            pub = yoton.PubChannel(hub, "data", yoton.BINARY)
            for i in range(_sync.HIGH_WATER + 1):
                pub.send(i.to_bytes(4, "little"))
            wait_until(lambda: sync.full, what="the subscriber full")
        del said[:]
        joiner = yoton.Context()
        made_contexts.append(joiner)
        join(hub, joiner)  # its NEW_CONNECTION reaches s
        word = _sync.FULL if full else _sync.OK

        def said_it(word: bytes = word) -> bool:
            return any(x == word for x, _ in said)

        wait_until(said_it, what=f"{word!r} said")
        assert [w for w, in_engine in said if not in_engine] == []
