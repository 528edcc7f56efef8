"""A transport that is not a stream connection lets the core read its socket
(``yoton.transport.engine().watch_socket``, ``yoton_core/_socketwatch.py``).

The transport under test, ``sockpair``, joins contexts of one process through
a real Unix socket pair and is written on public names only: packages travel
as yoton frames, decoded by :class:`FrameDecoder` in its ``receive``, and a
writer thread per connection writes (``send_package`` never blocks). What is
checked is what a defect would break: a thread waiting for a reply reads it
itself (not the poller), the poller reads when nobody waits, many waiting
threads share one socket without losing or reordering anything and never run
``receive`` at once, reading ends once (EOF, ``receive`` returning False or
raising, a failed read) and ``stop`` ends it for good, bad arguments are
refused, a pipe works as well as a socket, and a forked child never reads its
parent's socket.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import yoton
from yoton import InvalidArgumentError
from yoton.transport import (
    ConnectError,
    Connection,
    FrameDecoder,
    SocketWatch,
    engine,
    hookimpl,
    pack_header,
    parse_host_port,
)
from yoton_core import _poller
from yoton_core.testing import recv_n, wait_for

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _poller.AVAILABLE, reason="needs select.epoll"),
]

_bound: dict[str, SockPairConnection] = {}
_lock = threading.Lock()


class SockPairConnection(Connection):
    """sockpair://host:port: contexts of one process, one Unix socket pair per link."""

    scheme = "sockpair"

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        self._sock: socket.socket | None = None
        self._watch: SocketWatch | None = None
        self._decoder = FrameDecoder(context.max_message_size)
        self._outq: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._key = ""
        # What the tests look at: who ran receive(), and how reading ended.
        self.readers: list[tuple[str, bytes]] = []
        self.ended_with: list[BaseException | None] = []
        self.inside = 0
        self.most_inside = 0
        self.hook: Callable[[bytes], object] | None = None

    def open_bind(self, address: str, max_tries: int) -> None:
        host, port = parse_host_port(address)
        with _lock:
            port = port or next(p for p in range(1024, 65536) if f"{host}:{p}" not in _bound)
            self._key = f"{host}:{port}"
            _bound[self._key] = self
        self.set_waiting(host, port)

    def open_connect(self, address: str, timeout: float) -> None:
        host, port = parse_host_port(address)
        with _lock:
            peer = _bound.pop(f"{host}:{port}", None)
        if peer is None:
            raise ConnectError(f"nobody is bound at sockpair://{host}:{port}")
        mine, theirs = socket.socketpair()
        self._start(mine)
        peer._start(theirs)
        pid = os.getpid()
        self.set_established(peer.context.id, pid, hosting=False, hostname2=host, port2=port)
        peer.set_established(self.context.id, pid, hosting=True)

    def _start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        threading.Thread(target=self._write, args=(sock,), daemon=True).start()
        self._watch = engine().watch_socket(self, sock, self._receive, self._ended)

    def _receive(self, data: bytes) -> object:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            self.readers.append((threading.current_thread().name, data))
            if self.hook is not None:
                verdict = self.hook(data)
                if verdict is not None:
                    return verdict
            flat = self._decoder.feed_raw(data)
            if flat:
                self.count_received(len(flat) // 2, len(data))
                self.deliver(flat)
            return True
        finally:
            self.inside -= 1

    def _ended(self, exc: BaseException | None) -> None:
        self.ended_with.append(exc)
        self._outq.put(None)
        self.set_closed("Closed from other end." if exc is None else f"Reading failed: {exc}")

    def _write(self, sock: socket.socket) -> None:  # our writer thread: may block
        try:
            while (data := self._outq.get()) is not None:
                view = memoryview(data)
                while view:
                    try:
                        view = view[sock.send(view) :]
                    except BlockingIOError:
                        select.select([], [sock], [], 1.0)
            sock.shutdown(socket.SHUT_WR)  # the peer reads EOF after everything we sent
        except OSError:
            pass
        finally:
            # None comes after reading ended (by itself or by stop()): nobody
            # reads the socket any more, and nobody else writes to it.
            sock.close()

    def send_package(self, header: Any, payload: bytes) -> None:
        self._outq.put(pack_header(header) + payload)
        self.count_sent(1, len(payload))

    def flush(self, timeout: float = 3.0) -> None:
        pass

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        with _lock:
            if _bound.get(self._key) is self:
                del _bound[self._key]
        self._outq.put(None)
        if self._watch is not None:
            self._watch.stop()  # then nobody reads the socket: it may be closed
        self.set_closed(reason)


class _Plugin:
    @hookimpl
    def yoton_connection_types(self) -> list[type[Connection]]:
        return [SockPairConnection]


@pytest.fixture(autouse=True)
def sockpair() -> Iterator[None]:
    plugin = _Plugin()
    yoton.plugin_manager().register(plugin)
    try:
        yield
    finally:
        yoton.plugin_manager().unregister(plugin)


def join(server: yoton.Context, client: yoton.Context) -> tuple[Any, Any]:
    s = server.bind("sockpair://localhost:0")
    c = client.connect(f"sockpair://localhost:{s.port1}", timeout=5)
    assert isinstance(s, SockPairConnection) and isinstance(c, SockPairConnection)
    assert s._watch is not None and c._watch is not None
    return s, c


def is_borrowed(conn: SockPairConnection) -> bool:
    """A thread waiting for yoton data holds the socket and waits on it now
    (the core's own state; a thread also holds it for a while after a wait).

    Read under the reader's lock, under which the poller decides to take a
    socket back: seen here, the holder keeps it until its wait ends."""
    assert conn._watch is not None
    reader = conn._watch._reader
    with reader.lock:
        holder = reader.borrower
        return holder is not None and holder.waiting


def test_the_waiting_thread_reads_its_own_reply(contexts: Any) -> None:
    a, b = contexts(), contexts()
    borrowed = threading.Event()

    class Svc(yoton.RepChannel):
        def wait_then_echo(self, x: Any) -> Any:
            # Reply only once the requester waits: it then holds its socket,
            # and nothing but that thread can read the reply.
            wait_for(lambda: is_borrowed(c), what="the requester to wait")
            borrowed.set()
            return x

        def hello(self) -> str:
            return "hi"

    svc = Svc(b, "svc")
    svc.set_mode("thread")
    s, c = join(b, a)
    req = yoton.ReqChannel(a, "svc")
    # (The worker started before the link: it slept on its queue, not on the
    # socket, until the first request.)
    assert req.hello().result(10) == "hi"
    c.readers.clear()
    s.readers.clear()
    main = threading.current_thread().name
    for i in range(5):
        wait_for(lambda: is_borrowed(s), what="the worker to wait for requests")
        borrowed.clear()
        assert req.wait_then_echo(i).result(10) == i
        assert borrowed.is_set()
        assert c.readers and {who for who, _ in c.readers} == {main}, c.readers
        c.readers.clear()
    # The worker read the requests it waited for itself, too.
    assert s.readers and {who for who, _ in s.readers} == {svc_thread(s)}, s.readers
    assert not c._watch.done
    # Held for the next wait a while, then taken back by the poller.
    wait_for(lambda: c._watch._reader.borrower is None, what="the poller to take it back")


def svc_thread(s: SockPairConnection) -> str:
    names = {who for who, _ in s.readers}
    assert len(names) == 1 and names.pop().startswith("yoton-rep-"), s.readers
    return s.readers[0][0]


def test_the_poller_reads_when_nobody_waits(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "news")
    pub = yoton.PubChannel(a, "news")
    s, _c = join(b, a)
    before = yoton.io_statistics()
    for i in range(20):
        pub.send(f"m{i}")
    wait_for(lambda: sub.pending == 20, what="the poller to deliver without a reader")
    assert {who for who, _ in s.readers} == {"yoton-poller"}
    assert yoton.io_statistics().poller_reads > before.poller_reads
    assert sub.recv_all() == [f"m{i}" for i in range(20)]


def test_many_waiting_threads_share_the_socket_in_order(contexts: Any) -> None:
    a, b = contexts(), contexts()
    n_threads, n = 4, 400
    subs = [yoton.SubChannel(b, f"ch{k}") for k in range(n_threads)]
    pubs = [yoton.PubChannel(a, f"ch{k}") for k in range(n_threads)]
    s, _c = join(b, a)
    got: dict[int, list[str]] = {}

    def consume(k: int) -> None:
        got[k] = recv_n(subs[k], n, timeout=30)

    threads = [threading.Thread(target=consume, args=(k,), name=f"c{k}") for k in range(n_threads)]
    for t in threads:
        t.start()
    for i in range(n):
        for k in range(n_threads):
            pubs[k].send(f"{k}:{i}")
    for t in threads:
        t.join(40)
    for k in range(n_threads):
        assert got[k] == [f"{k}:{i}" for i in range(n)]
    assert s.most_inside == 1  # one thread at a time in receive()
    assert s.stats.packages_received >= n_threads * n


def test_eof_ends_reading_once_and_unlists_the_socket(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "x")
    s, c = join(b, a)
    before = yoton.io_statistics().polled_sockets
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(sub.recv(20.0)))
    waiter.start()
    wait_for(lambda: is_borrowed(s), what="the waiting thread to borrow")
    c.close()  # our writer shuts its side: the borrowed socket reads EOF
    wait_for(lambda: not s.is_alive, what="the connection to end")
    assert s.close_reason == "Closed from other end."
    assert s.ended_with == [None] and s._watch.done
    assert yoton.io_statistics().polled_sockets < before
    sub.close()  # ends the wait
    waiter.join(10)
    assert not waiter.is_alive() and result == [""]


@pytest.mark.parametrize("how", ["returns False", "raises"])
def test_receive_ends_reading(contexts: Any, how: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "x")
    pub = yoton.PubChannel(a, "x")
    s, _c = join(b, a)
    boom = ValueError("not my kind of bytes")

    def hook(data: bytes) -> object:
        if how == "raises":
            raise boom
        return False

    s.hook = hook
    with caplog.at_level(logging.ERROR, logger="yoton"):
        pub.send("the last")
        wait_for(lambda: not s.is_alive, what="reading to end")
    assert s.ended_with == [None if how == "returns False" else boom]
    assert s._watch.done and sub.pending == 0
    logged = "error in" in caplog.text and "receive()" in caplog.text
    assert logged == (how == "raises")


def test_stop_ends_reading_for_good(contexts: Any) -> None:
    a, b = contexts(), contexts()
    sub = yoton.SubChannel(b, "x")
    pub = yoton.PubChannel(a, "x")
    s, _c = join(b, a)
    pub.send("before")
    assert sub.recv(10) == "before"
    inside: list[BaseException] = []

    def stop_inside(data: bytes) -> object:
        try:
            s._watch.stop()
        except RuntimeError as exc:
            inside.append(exc)
        return None  # go on as usual

    s.hook = stop_inside
    pub.send("stop from inside")
    assert sub.recv(10) == "stop from inside"
    assert "return False from receive() instead" in str(inside[0])
    s.hook = None
    s._watch.stop()
    s._watch.stop()  # again: nothing
    reads = len(s.readers)
    pub.send("after")
    assert sub.recv(0.3) == ""  # nobody reads the socket now (a borrower neither)
    assert len(s.readers) == reads and s.ended_with == []
    sock = s._sock
    assert sock is not None
    wait_for(lambda: select.select([sock], [], [], 0)[0], what="the bytes to wait in the socket")


def _bare(ctx: yoton.Context) -> SockPairConnection:
    return SockPairConnection(ctx)


def test_bad_arguments_are_refused(contexts: Any) -> None:
    conn = _bare(contexts())
    before = yoton.io_statistics().polled_sockets
    one, two = socket.socketpair()
    with one, two:
        with pytest.raises(InvalidArgumentError, match=r"non-blocking .*setblocking\(False\)"):
            engine().watch_socket(conn, one, bool, bool)
        one.setblocking(False)
        for size in (0, "64"):
            with pytest.raises(InvalidArgumentError, match=f"at least 1 byte, got {size!r}"):
                engine().watch_socket(conn, one, bool, bool, read_size=size)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="a yoton.transport.Connection"):
            engine().watch_socket(conn.context, one, bool, bool)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="a socket or a file descriptor"):
            engine().watch_socket(conn, "fd 3", bool, bool)  # type: ignore[arg-type]
        assert yoton.io_statistics().polled_sockets == before  # nothing was registered


def test_a_pipe_works_too(contexts: Any) -> None:
    conn = _bare(contexts())
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    got: list[bytes] = []
    ends: list[BaseException | None] = []
    try:
        watch = engine().watch_socket(conn, rfd, got.append, ends.append, read_size=3)
        assert watch is not None
        os.write(wfd, b"abcdefg")
        wait_for(lambda: b"".join(got) == b"abcdefg", what="the pipe to be read")
        assert [len(x) for x in got] == [3, 3, 1]  # read_size per read
        os.close(wfd)
        wfd = -1
        wait_for(lambda: ends == [None], what="EOF")
        assert watch.done
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


FORK = """
import os, socket
import yoton
from yoton.transport import Connection, engine

class Bare(Connection):
    scheme = "bare"

ctx = yoton.Context()
sub = yoton.SubChannel(ctx, "x")
mine, theirs = socket.socketpair()
mine.setblocking(False)
watch = engine().watch_socket(Bare(ctx), mine, lambda data: None, lambda exc: None)
to_child_r, to_child_w = os.pipe()
to_parent_r, to_parent_w = os.pipe()
pid = os.fork()
if pid == 0:  # the child: a poller of its own, and a thread that waits on ctx
    other, _keep = socket.socketpair()
    other.setblocking(False)
    engine().watch_socket(Bare(ctx), other, lambda data: None, lambda exc: None)
    os.write(to_parent_w, b"w")
    os.read(to_child_r, 1)  # the parent's socket is readable now
    for _ in range(3):
        sub.recv(0.05)  # would borrow and read the parent's socket without the fork check
    os.write(to_parent_w, b"d")
    os._exit(0)
os.read(to_parent_r, 1)
watch.stop()  # nobody in this process reads the socket now
theirs.send(b"for the parent")
os.write(to_child_w, b"g")
os.read(to_parent_r, 1)
os.waitpid(pid, 0)
print("LEFT", mine.recv(100).decode(), flush=True)
"""


def test_a_forked_child_never_reads_the_parents_socket() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LEFT for the parent"
