"""Who reads a socket: the poller thread, or the thread that waits (_poller.py).

Real contexts over TCP. The properties checked are the ones a defect would
break: a waiting thread reads its own reply (borrowing), the poller reads when
nobody waits, a waiting thread holds its sockets from one wait to the next
and the poller takes them back when it stays away, another thread that waits
takes over the sockets of one that is away, a KeyboardInterrupt in the main
thread gives them back at once, a closed connection ends a wait, several
threads waiting on one context share its sockets without losing anything, and
a bad ``YOTON_SPIN_US`` is refused with a clear error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import yoton
from yoton_core import _borrow, _poller
from yoton_core._stream import link_of
from yoton_core.testing import recv_n, wait_for

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _poller.AVAILABLE, reason="needs select.epoll"),
]


def join(server: yoton.Context, client: yoton.Context) -> tuple[Any, Any]:
    s = server.bind("localhost:0")
    c = client.connect(f"localhost:{s.port1}", timeout=5)
    wait_for(lambda: s.is_connected, what="the bound side to get its peer")
    return s, c


def _reader(conn: Any) -> _poller.SocketReader:
    link = link_of(conn)
    wait_for(lambda: link._reader is not None, what="the poller to take the socket")
    return link._reader  # type: ignore[return-value]


def test_the_waiting_thread_reads_its_own_reply(contexts: Any) -> None:
    a, b = contexts(), contexts()
    rep = yoton.RepChannel(b, "svc")
    rep.set_mode("thread")
    _s, c = join(b, a)
    req = yoton.ReqChannel(a, "svc")
    assert req.echo(0).result(10)[0] == 0
    r = _reader(c)
    before = yoton.io_statistics()
    for i in range(20):
        assert req.echo(i).result(10)[0] == i
    after = yoton.io_statistics()
    # The requester read each reply itself (the worker there each request),
    # holding the sockets from one call to the next: the poller (shared by
    # both contexts of this process) read at most stragglers.
    assert after.poller_reads - before.poller_reads < 20
    assert r.borrower is _poller.thread_state() and not r.done
    # Once the requester stays away, the poller takes its socket back.
    wait_for(lambda: r.borrower is None, what="the poller to take the socket back")


def test_the_poller_reads_when_nobody_waits(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "news")
    pub = yoton.PubChannel(a, "news")
    join(b, a)
    for i in range(50):
        pub.send(f"m{i}")
    wait_for(lambda: sub.pending == 50, what="the poller to deliver without a reader")
    assert sub.recv_all() == [f"m{i}" for i in range(50)]


def test_io_statistics_show_who_reads(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "news")
    pub = yoton.PubChannel(a, "news")
    before = yoton.io_statistics()
    join(b, a)
    wait_for(
        lambda: yoton.io_statistics().polled_sockets >= before.polled_sockets + 2,
        what="both ends of the link to be polled",
    )
    pub.send("nobody waits: the poller reads it")
    wait_for(lambda: sub.pending == 1, what="the poller to deliver")
    now = yoton.io_statistics()
    assert now.engine_running and now.poller_running and now.tickers >= 2
    assert now.poller_reads > before.poller_reads
    with pytest.raises(AttributeError):
        now.borrows = 0  # type: ignore[misc]  # a snapshot, not a live view


IDLE_LINK = """
    import sys
    import yoton
    from yoton_core.testing import wait_for

    ctx = yoton.Context()
    ctx.connect(sys.argv[1], timeout=10)
    wait_for(lambda: yoton.io_statistics().poller_reads > 0, 10, "a first heartbeat")
    before = yoton.io_statistics()
    wait_for(lambda: yoton.io_statistics().poller_reads >= before.poller_reads + 20, 30,
             "20 more heartbeats")
    after = yoton.io_statistics()
    print(after.ticks - before.ticks, after.poller_reads - before.poller_reads)
    ctx.close()
"""


def test_an_idle_link_wakes_the_engine_about_once_per_heartbeat(contexts: Any) -> None:
    """The engine ticks when a ticker needs it (Engine._ticker), not every 50 ms.

    A child process with one idle link: it sends a heartbeat every 0.2 s and
    reads the peer's as often. Counted against the heartbeats it read (no
    clock in the assertion: a loaded machine only makes ticks rarer): about
    one tick per heartbeat, where a fixed 50 ms tick makes four.
    """
    a = contexts()
    conn = a.bind("localhost:0")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(IDLE_LINK), f"localhost:{conn.port1}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ticks, reads = map(int, done.stdout.split())
    assert reads >= 20
    assert ticks <= 2 * reads + 2, (ticks, reads)


def test_a_thread_that_stays_away_gets_its_sockets_taken_back(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "quiet")
    pub = yoton.PubChannel(a, "quiet")
    s, _c = join(b, a)
    r = _reader(s)
    assert sub.recv(0.05) == ""  # borrowed, nothing came, timed out
    assert r.borrower is _poller.thread_state()  # held for the next wait
    wait_for(lambda: r.borrower is None, what="the poller to take the socket back")
    assert not _poller.get_poller()._lent
    pub.send("later")  # read by the poller now
    wait_for(lambda: sub.pending == 1, what="the poller to read after the wait")


def test_a_waiting_thread_takes_over_the_sockets_of_one_that_is_away(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_poller, "HOLD_IDLE", 60.0)  # the poller does not take them back here
    a, b = contexts(), contexts()
    mine = yoton.SubChannel(b, "mine")
    theirs = yoton.SubChannel(b, "theirs")
    pub = yoton.PubChannel(a, "theirs")
    s, _c = join(b, a)
    r = _reader(s)
    assert mine.recv(0.01) == ""  # this thread holds the socket now, and goes away
    assert r.borrower is _poller.thread_state()
    got: list[Any] = []

    def wait_theirs() -> None:
        got.append(theirs.recv(10.0))
        got.append(r.borrower is _poller.thread_state())  # it read the message itself

    t = threading.Thread(target=wait_theirs)
    t.start()
    wait_for(lambda: theirs._wakers, what="the other thread to wait")
    pub.send("for the other thread")
    t.join(10)
    assert got == ["for the other thread", True]


def test_many_threads_waiting_on_one_context_lose_nothing(contexts: Any) -> None:
    a, b = contexts(), contexts()
    n_threads, n = 4, 300
    subs = [yoton.SubChannel(b, f"ch{k}") for k in range(n_threads)]
    pubs = [yoton.PubChannel(a, f"ch{k}") for k in range(n_threads)]
    join(b, a)
    got: dict[int, list[str]] = {}

    def consume(k: int) -> None:
        got[k] = recv_n(subs[k], n, timeout=30)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for i in range(n):
        for k in range(n_threads):
            pubs[k].send(f"{k}:{i}")
    for t in threads:
        t.join(40)
    for k in range(n_threads):
        assert got[k] == [f"{k}:{i}" for i in range(n)]


def test_closing_a_borrowed_connection_ends_the_wait_cleanly(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "x")
    s, c = join(b, a)
    r = _reader(s)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(sub.recv(20.0)))
    waiter.start()
    wait_for(lambda: r.borrower is not None, what="the waiting thread to borrow the socket")
    c.close()  # the peer goes; the borrowed socket sees EOF
    wait_for(lambda: not s.is_alive, what="the connection to end")
    assert s.close_reason == "Closed from other end."
    sub.close()  # ends the wait
    waiter.join(10)
    assert not waiter.is_alive() and result == [""]
    assert r.done


KEYBOARD_INTERRUPT = """
import os, signal, sys, threading, time
import yoton
from yoton_core.testing import wait_for
from yoton_core._stream import link_of

a, b = yoton.Context(), yoton.Context()
sub = yoton.SubChannel(b, "x")
pub = yoton.PubChannel(a, "x")
s = link_of(b.bind("localhost:0"))
a.connect("localhost:%d" % s._conn.port1, timeout=5)
wait_for(lambda: s._reader is not None)
main = threading.main_thread().ident
# A shell's background job inherits SIGINT ignored, and Python then raises no
# KeyboardInterrupt: give this process the usual handler whoever started it.
signal.signal(signal.SIGINT, signal.default_int_handler)

def interrupt():
    wait_for(lambda: s._reader.borrower is not None)  # main is waiting in recv
    signal.pthread_kill(main, signal.SIGINT)

threading.Thread(target=interrupt).start()
try:
    sub.recv(30.0)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
assert s._reader.borrower is None, "the socket was not given back"
pub.send("after")
wait_for(lambda: sub.pending == 1)  # the poller reads it: nobody waits
print("DELIVERED", sub.recv(0), flush=True)
a.close(); b.close()
"""


def test_keyboard_interrupt_while_waiting_gives_the_sockets_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KEYBOARD_INTERRUPT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["INTERRUPTED", "DELIVERED", "after"]


def _python_with_spin(value: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``YOTON_SPIN_US=value``."""
    env = {**os.environ, "YOTON_SPIN_US": value}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_spin_lasts_in_proportion_to_the_work_before_it() -> None:
    """_borrow.spin_for: where a thread waits far longer than it works, its spin
    runs out (and after SPIN_MISSES of those it parks at once); where it works
    as long as it waits, it spins the whole SPIN_SECONDS, as before."""
    spin_for, full = _borrow.spin_for, 250e-6
    # A stream of 5,000 messages a second: ~5 us of work a message, 200 us apart.
    assert spin_for(5e-6, full) < 100e-6
    # A fast stream: ~100 us of work a chunk, the next ~80 us later.
    assert spin_for(100e-6, full) == full
    # A request/reply loop: ~20 us of work, the answer within ~40.
    assert spin_for(20e-6, full) >= 100e-6
    assert spin_for(0.0, full) == _borrow.SPIN_FLOOR
    assert spin_for(1.0, 0.0) == 0.0  # YOTON_SPIN_US=0 (or one CPU): no spin at all


def test_a_waiting_thread_sizes_its_spin_by_its_work_since_the_last_wait(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    works: list[float] = []
    real = _borrow.spin_for

    def spy(work: float, limit: float) -> float:
        works.append(work)
        return real(work, limit)

    monkeypatch.setattr(_borrow, "SPIN_SECONDS", 250e-6)  # (0 on a single CPU)
    monkeypatch.setattr(_borrow, "SPIN_MISSES", 10**9)  # (this thread's misses of other tests)
    monkeypatch.setattr(_borrow, "spin_for", spy)
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "sized")
    server, _client = join(b, a)
    _reader(server)  # (established and read outside trio: what a wait borrows)
    for _ in range(3):
        assert sub.recv(0.3) == ""  # borrowed, spun, parked, timed out
    assert len(works) >= 2 and all(w >= 0 for w in works), works
    # Counted from the end of the last wait (a 0.3 s one), not from its start:
    assert works[-1] < 0.3, works


@pytest.mark.parametrize("value", ["fast", "-5"])
def test_a_bad_spin_setting_is_refused_clearly(value: str) -> None:
    done = _python_with_spin(value, "import yoton")
    assert done.returncode != 0
    assert "YOTON_SPIN_US" in done.stderr and repr(value) in done.stderr


def test_spinning_can_be_turned_off() -> None:
    done = _python_with_spin("0", "from yoton_core import _borrow; print(_borrow.SPIN_SECONDS)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.0"


def test_without_the_poller_trio_reads(contexts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # What platforms without epoll do (and TLS streams always): trio's receive
    # loop reads, nothing is borrowed, and everything still works.
    monkeypatch.setattr(yoton.StreamConnection, "poll_reads", False)
    a, b = contexts(), contexts()
    rep = yoton.RepChannel(b, "svc")
    rep.set_mode("thread")
    sub = yoton.SubChannel(b, "news")
    s, c = join(b, a)
    assert link_of(s)._reader is None and link_of(c)._reader is None
    req = yoton.ReqChannel(a, "svc")
    pub = yoton.PubChannel(a, "news")
    for i in range(20):
        assert req.echo(i).result(10) == (i, hex(b.id))
        pub.send(f"m{i}")
    assert recv_n(sub, 20) == [f"m{i}" for i in range(20)]


@pytest.mark.parametrize("poll_reads", [True, False], ids=["poller", "trio"])
def test_large_messages_are_read_into_their_own_bytes(
    contexts: Any, monkeypatch: pytest.MonkeyPatch, poll_reads: bool
) -> None:
    # Both readers receive a large payload's rest with recv_into its final
    # bytes object (_bytesfill); small messages around them are untouched.
    monkeypatch.setattr(yoton.StreamConnection, "poll_reads", poll_reads)
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "blobs", yoton.BINARY)
    s, c = join(b, a)
    if poll_reads:
        _reader(s)  # the poller takes the socket once the link is served
    else:
        assert link_of(s)._reader is None
    pub = yoton.PubChannel(a, "blobs", yoton.BINARY)
    sizes = [70_000, 5, (1 << 20) + 3, 12, 9 << 20, 65_536]
    blobs = [bytes([i]) * 3 + os.urandom(n - 3) if n > 3 else b"s" * n for i, n in enumerate(sizes)]
    for blob in blobs:
        pub.send(blob)
    got = recv_n(sub, len(blobs), timeout=30)
    assert [len(m) for m in got] == sizes
    assert got == blobs
    assert all(type(m) is bytes for m in got)
    assert s.is_alive and c.is_alive


def _spin_pair(contexts: Any) -> tuple[yoton.SubChannel, yoton.PubChannel, Any]:
    """A SubChannel and a PubChannel on slot "spin", linked over tcp; and the bind."""
    a, b = contexts(2)
    sub = yoton.SubChannel(a, "spin")
    pub = yoton.PubChannel(b, "spin")
    server = a.bind("localhost:0")
    b.connect(f"localhost:{server.port1}", timeout=5)
    wait_for(lambda: server.is_connected, what="the link")
    return sub, pub, server


@pytest.mark.skipif(not _borrow.SPIN_SECONDS, reason="spinning is off (one CPU or YOTON_SPIN_US=0)")
def test_spinning_stops_while_it_does_not_pay_and_resumes_when_it_does(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a busy machine the peer is often not running while we spin: the spin
    # only takes its CPU (a loaded 2-core VM: 614 us per round trip spinning,
    # ~100 without). A thread whose spins keep running out parks at once.
    sub, pub, server = _spin_pair(contexts)
    st = _poller.thread_state()
    st.spin_misses = st.waits = 0
    for _ in range(_borrow.SPIN_MISSES + 2):
        assert sub.recv(0.01) == ""  # nothing comes: every spin runs out
    assert st.spin_misses == _borrow.SPIN_MISSES
    # The next probe spins (long enough here for the message to come meanwhile,
    # whatever the work before it: spin_for has its own test).
    monkeypatch.setattr(_borrow, "SPIN_SECONDS", 30.0)
    monkeypatch.setattr(_borrow, "spin_for", lambda work, limit: limit)
    st.waits = _borrow.SPIN_PROBE - 1

    def send_once_waiting() -> None:
        wait_for(lambda: sub._wakers, what="the reader to wait")
        pub.send("now")

    t = threading.Thread(target=send_once_waiting)
    t.start()
    assert sub.recv(10) == "now"
    t.join()
    assert st.spin_misses == 0


def test_a_spinning_thread_gives_its_cpu_away_between_polls(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spin that keeps its CPU makes whoever is queued for that CPU wait until
    # the spin runs out -- on a busy machine, often the very peer it waits for
    # (the slowest 1 % of req/rep round trips were such waits). Between two
    # polls it yields; where nobody waits for the CPU the yield returns at once.
    sub, pub, server = _spin_pair(contexts)
    _reader(server)  # the poller reads it: the reader can borrow it
    yields: list[int] = []
    monkeypatch.setattr(_borrow, "_yield", lambda: yields.append(1), raising=False)
    monkeypatch.setattr(_borrow, "SPIN_SECONDS", 30.0)
    monkeypatch.setattr(_borrow, "spin_for", lambda work, limit: limit)  # (the whole 30 s)
    st = _poller.thread_state()
    st.spin_misses = 0

    def send_once_spinning() -> None:
        wait_for(lambda: sub._wakers, what="the reader to wait")
        try:
            wait_for(lambda: yields, timeout=2.0, what="the spinning reader to yield")
        finally:
            pub.send("now")

    t = threading.Thread(target=send_once_spinning)
    t.start()
    assert sub.recv(10) == "now"  # read while spinning: no sleep in between
    t.join()
    assert len(yields) >= 1
    assert st.spin_misses == 0  # it came during the spin
