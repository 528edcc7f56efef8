"""The NATS transport on a real nats-server: one bus, every pattern, filtering.

Contexts in this process each have their own server connection (a real
socket to a real server), so most checks run here; the ones about separate
processes start real child processes. Faults, clusters, security and
bridging are in ``test_nats_faults.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import yoton
from yoton_core.testing import wait_for


@pytest.fixture
def bus(nats_server, request):
    """``nats://127.0.0.1:<port>/<test name>``: a fresh bus on a fresh server."""
    return f"{nats_server.url}/{request.node.name[:40].replace('[', '_').replace(']', '')}"


@pytest.fixture
def make():
    """Factory of contexts joined to a bus; all closed after the test."""
    made = []

    def join(address, how="connect", **kw):
        ctx = yoton.Context()
        made.append(ctx)
        conn = getattr(ctx, how)(address, **kw)
        return ctx, conn

    yield join
    for ctx in made:
        ctx.close()


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python child process running ``code`` (stdin kept open; EOF ends it)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect_line(proc: subprocess.Popen, word: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None and proc.stderr is not None  # (pipes: child)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(word):
            return line[len(word) :].strip()
    proc.kill()
    raise AssertionError(f"child never said {word!r}: {proc.stderr.read()[-3000:]}")


# -- joining and the basic patterns ---------------------------------------------------------


def test_bind_and_connect_both_join_and_return_a_nats_connection(bus, make):
    a, ca = make(bus, "bind")
    b, cb = make(bus)
    assert ca.scheme == cb.scheme == "nats"
    assert type(ca).__name__ == "NatsConnection"
    assert ca.is_connected and cb.is_connected and not ca.is_waiting
    sub = yoton.SubChannel(a, "news")
    yoton.PubChannel(b, "news").send("from the connector")
    assert sub.recv(5.0) == "from the connector"
    sub2 = yoton.SubChannel(b, "back")
    yoton.PubChannel(a, "back").send("from the binder")
    assert sub2.recv(5.0) == "from the binder"


def test_every_pattern_across_processes(bus, make):
    proc = child(
        """
        import sys, yoton
        class Svc(yoton.RepChannel):
            def add(self, a, b):
                return a + b
        ctx = yoton.Context()
        rep = Svc(ctx, "svc"); rep.set_mode("thread")
        state = yoton.StateChannel(ctx, "mood"); state.send("sunny")
        sub = yoton.SubChannel(ctx, "up"); pub = yoton.PubChannel(ctx, "down")
        ctx.connect(sys.argv[1], timeout=10)
        print("READY", flush=True)
        for _ in range(3):
            pub.send("echo " + sub.recv(20.0))
        sys.stdin.read()
        """,
        bus,
    )
    assert proc.stdin is not None and proc.stderr is not None  # (pipes: child)
    try:
        expect_line(proc, "READY")
        a, _ = make(bus)
        # state: a late joiner gets the current state
        mood = yoton.StateChannel(a, "mood")
        wait_for(lambda: mood.recv() == "sunny", 10, "the state from the other process")
        # req/rep
        req = yoton.ReqChannel(a, "svc")
        assert req.add(2, 3).result(10) == 5
        # pub/sub both ways
        down = yoton.SubChannel(a, "down")
        up = yoton.PubChannel(a, "up")
        for i in range(3):
            up.send(f"m{i}")
            assert down.recv(10.0) == f"echo m{i}"
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()


def test_a_context_joining_by_bind_takes_part_in_state_sync(bus, make):
    a, _ = make(bus)
    st_a = yoton.StateChannel(a, "s")
    st_a.send("first")
    b = yoton.Context()
    st_b = yoton.StateChannel(b, "s")
    try:
        b.bind(bus)
        wait_for(lambda: st_b.recv() == "first", 10, "the state reaching the binder")
        st_b.send("second")
        wait_for(lambda: st_a.recv() == "second", 10, "the binder's state reaching others")
        # A third context joining later (by bind) gets the newest state.
        c, _ = make(bus, "bind")
        st_c = yoton.StateChannel(c, "s")
        wait_for(lambda: st_c.recv() == "second", 10, "the state reaching a late binder")
    finally:
        b.close()


def test_reqrep_balances_between_repliers(bus, make):
    class Who(yoton.RepChannel):
        tag: str

        def who(self):
            return self.tag

    tags = []
    for tag in ("x", "y"):
        ctx, _ = make(bus)
        rep = Who(ctx, "who")
        rep.tag = tag
        rep.set_mode("thread")
        tags.append(tag)
    r, _ = make(bus)
    req = yoton.ReqChannel(r, "who")
    futures = [req.who() for _ in range(40)]
    got = {f.result(10) for f in futures}
    assert got == {"x", "y"}


def test_the_core_reads_the_server_connections_and_a_waiting_thread_its_reply(bus, make):
    """The plain-TCP server connections are read by the core (``watch_socket``):
    counted among its polled sockets, and borrowed by the threads that wait
    (the requester's ``result()``, the RepChannel worker), which so read what
    they wait for themselves, with no hand-off between threads."""
    before = yoton.io_statistics()

    class Echo(yoton.RepChannel):
        def again(self, x):
            return x

    b, _ = make(bus)
    Echo(b, "echo").set_mode("thread")
    a, _ = make(bus)
    req = yoton.ReqChannel(a, "echo")
    assert [req.again(i).result(10) for i in range(20)] == list(range(20))
    after = yoton.io_statistics()
    assert after.polled_sockets >= before.polled_sockets + 2
    assert after.borrows > before.borrows  # (these contexts have no other link)


def test_a_thread_holding_the_server_connection_still_gets_the_servers_answers(
    bus, make, monkeypatch
):
    """Making a channel and closing a context wait for the server's PONG, which
    comes on the server connection; a thread that has just received holds it
    (for its next wait). It gives it back before it blocks, or the PONG would
    sit unread until the poller takes the connection back (after 5 ms; made
    60 s here, so that the test cannot pass by waiting)."""
    import yoton_nats._connection as nats_connection
    from yoton_core import _poller

    monkeypatch.setattr(_poller, "HOLD_IDLE", 60.0)
    monkeypatch.setattr(nats_connection, "SUBSCRIBE_WAIT", 60.0)
    monkeypatch.setattr(nats_connection, "CLOSE_GRACE", 60.0)
    a, _ = make(bus)
    b, _ = make(bus)

    def held_by_a_waiting_thread():
        return any(r.borrower is not None and r.borrower.waiting for r in a._readers)

    class Hold(yoton.RepChannel):
        def hold(self, i):
            # Answer once the requester waits: it then holds a's server
            # connection, and reads the reply itself (and keeps holding it).
            wait_for(held_by_a_waiting_thread, what="the requester to wait")
            return i

    Hold(b, "hold").set_mode("thread")
    req = yoton.ReqChannel(a, "hold")
    before = yoton.io_statistics().borrows
    done = threading.Event()

    def work():
        for i in range(3):
            assert req.hold(i).result(10) == i  # this thread now holds a's server connection
            yoton.SubChannel(a, f"more{i}")  # returns once the server's PONG was read
        a.close()  # flushes: a PONG again
        done.set()

    worker = threading.Thread(target=work, daemon=True)
    try:
        worker.start()
        assert done.wait(20), "a PONG waited in a socket held by the thread waiting for it"
        assert yoton.io_statistics().borrows > before
    finally:
        monkeypatch.undo()
        if _poller._poller is not None:
            _poller._poller._wake.wake()  # (it may sleep with the patched HOLD_IDLE)
    worker.join(10)


def test_sync_mode_holds_a_fast_publisher_and_loses_nothing(bus, make):
    import threading

    a, _ = make(bus)
    pub = yoton.PubChannel(a, "flood", yoton.OBJECT)  # there when the subscriber joins
    b = yoton.Context(queue_params=(1000, "old"))
    try:
        sub = yoton.SubChannel(b, "flood", yoton.OBJECT)
        sub.set_sync_mode(True)
        b.connect(bus)  # announces its window, which holds the publisher from then on
        wait_for(lambda: pub._sync_windows, 10, "the publisher to hear of the window")
        n = 20000  # more than N: without sync mode the inbox would drop the oldest

        def publish() -> None:
            for i in range(n):
                pub.send(i)

        sender = threading.Thread(target=publish)
        sender.start()
        wait_for(lambda: getattr(pub, "_sync_waits", 0) > 0, 10, "the publisher to be held")
        got: list[int] = []
        while len(got) < n:
            m = sub.recv(10.0)
            if m is None:
                break
            got.append(m)
        sender.join(10)
        assert got == list(range(n))
        assert sub.dropped == 0
    finally:
        b.close()


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_async_face(bus, make, loop):
    import asyncio

    import trio

    a, _ = make(bus)
    b, _ = make(bus)
    sub = yoton.SubChannel(b, "aio")
    rep = yoton.RepChannel(b, "aio-rep")
    rep.set_mode("thread")
    req = yoton.ReqChannel(a, "aio-rep")
    pub = yoton.PubChannel(a, "aio")

    async def main():
        pub.send("hello")
        assert await sub.recv_async(5.0) == "hello"
        assert (await req.echo("hi"))[0] == "hi"

    if loop == "trio":
        trio.run(main)
    else:
        asyncio.run(main())


# -- the server filters ---------------------------------------------------------------------


def test_a_context_receives_only_the_slots_it_listens_to(bus, make):
    a, ca = make(bus)
    b, cb = make(bus)
    c, cc = make(bus)
    sub_b = yoton.SubChannel(b, "wanted")
    pub = yoton.PubChannel(a, "wanted")
    other = yoton.PubChannel(a, "unwanted")
    payload = "x" * 1000
    before_c = cc.stats.bytes_received
    for _ in range(200):
        pub.send(payload)
        other.send(payload)
    wait_for(lambda: sub_b.pending == 200, 10, "200 messages at b")
    ca.flush()
    cb.flush()
    cc.flush()  # a PING/PONG with the server: what it sent us arrived
    # b got the 200 it listens to (200 KB), not the 200 others; c (no channels) nothing.
    assert 200_000 <= cb.stats.bytes_received < 260_000
    assert cc.stats.bytes_received - before_c < 2_000


def test_subscriptions_follow_channels_made_and_closed(bus, make):
    a, _ = make(bus)
    b, cb = make(bus)
    pub = yoton.PubChannel(a, "topic")
    # No slow-joiner window: the first message after the channel exists arrives.
    for i in range(20):
        sub = yoton.SubChannel(b, "topic")
        pub.send(f"m{i}")
        assert sub.recv(5.0) == f"m{i}"
        sub.close()
    b.flush()
    got = cb.stats.packages_received
    for _ in range(100):
        pub.send("nobody listens")
    a.flush()
    b.flush()
    assert cb.stats.packages_received - got < 5


def test_a_package_for_one_context_goes_to_that_context_only(bus, make):
    rep_ctx, _ = make(bus)
    rep = yoton.RepChannel(rep_ctx, "svc")
    rep.set_mode("thread")
    a, _ = make(bus)
    bystander, cx = make(bus)
    yoton.ReqChannel(bystander, "svc")  # listens for replies on the same slot
    req = yoton.ReqChannel(a, "svc")
    assert req.echo("warm").result(10)
    bystander.flush()
    before = cx.stats.bytes_received
    for _ in range(50):
        assert req.echo("y" * 2000).result(10)[0] == "y" * 2000
    bystander.flush()
    # 50 replies of 2 KB went to a; the bystander saw at most small broadcasts.
    assert cx.stats.bytes_received - before < 20_000


# -- large messages, order ------------------------------------------------------------------


def test_4_mib_messages_through_a_server_with_the_default_max_payload(bus, make, nats_server):
    a, _ = make(bus)
    b, _ = make(bus)
    sub = yoton.SubChannel(b, "big", yoton.BINARY)
    pub = yoton.PubChannel(a, "big", yoton.BINARY)
    blobs = [os.urandom(4 << 20) for _ in range(3)]
    for blob in blobs:
        pub.send(blob)
    for blob in blobs:
        got = sub.recv(20.0)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()


def test_one_publishers_packages_arrive_in_order_across_slots(bus, make):
    a, _ = make(bus)
    b, _ = make(bus)
    subs = [yoton.SubChannel(b, f"slot{i}", yoton.OBJECT) for i in range(3)]
    pubs = [yoton.PubChannel(a, f"slot{i}", yoton.OBJECT) for i in range(3)]
    n = 6000
    for i in range(n):
        pubs[i % 3].send(i)
    wait_for(lambda: sum(s.pending for s in subs) == n, 20, f"all {n} messages")
    got: list[int] = []
    while (ch := yoton.select_sub_channel(*subs)) is not None:
        got.extend(ch.recv_selected())
    # Nothing dropped as "out of order" and the interleaving is the sent one.
    assert got == list(range(n))


# -- configuration --------------------------------------------------------------------------


SWAP_PROGRAM = """
import sys
import yoton

name = sys.argv[1]
server, client = yoton.Context(), yoton.Context()
conn = server.bind(f"localhost:{name}", max_tries=16)
offset = conn.port1 - yoton.port_hash(name)
link = client.connect(f"localhost:{name}+{offset}", timeout=10.0)
news = yoton.SubChannel(client, "news", yoton.OBJECT)
replies = yoton.SubChannel(server, "replies")
yoton.PubChannel(server, "news", yoton.OBJECT).send({"n": 1, "text": "hello"})
print(news.recv(10.0)["text"])
yoton.PubChannel(client, "replies").send("hi back")
print(replies.recv(10.0))
print(type(link).__name__, link.scheme, link.port2 == conn.port1)
free = server.bind("localhost:0")
print("port0", free.port1 != 0)
server.close()
client.close()
"""


def test_plain_host_port_programs_run_on_nats_by_configuration(tmp_path, nats_server):
    script = tmp_path / "app.py"
    script.write_text(SWAP_PROGRAM)
    env = dict(os.environ, YOTON_TRANSPORT="nats", YOTON_NATS_URL=nats_server.url)
    out = subprocess.run(
        [sys.executable, str(script), f"swap-{os.getpid()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello", "hi back", "NatsConnection nats True", "port0 True"]


def test_two_binds_to_port_0_get_different_buses(monkeypatch, nats_server, make):
    monkeypatch.setenv("YOTON_NATS_URL", nats_server.url)
    a, ca = make("nats://localhost:0", "bind")
    b, cb = make("nats://localhost:0", "bind")
    assert ca.port1 and cb.port1 and ca.port1 != cb.port1
    c, _ = make(f"nats://localhost:{ca.port1}")
    sub = yoton.SubChannel(a, "x")
    yoton.PubChannel(c, "x").send("same bus")
    assert sub.recv(5.0) == "same bus"


@pytest.mark.parametrize(
    "address, words",
    [
        ("nats://127.0.0.1:4222/", "bus name"),
        ("nats://127.0.0.1:notaport/bus", "host:port"),
        ("nats://localhost", "host:port"),
    ],
)
def test_bad_addresses_say_what_is_wrong(address, words):
    ctx = yoton.Context()
    with pytest.raises(ValueError, match=words):
        ctx.connect(address)


def test_auth_key_is_refused_with_a_clear_error(bus):
    ctx = yoton.Context(auth_key="secret")
    with pytest.raises(yoton.InvalidArgumentError, match="no meaning on a NATS bus"):
        ctx.connect(bus)


def test_unknown_keywords_are_named(bus):
    ctx = yoton.Context()
    with pytest.raises(yoton.InvalidArgumentError, match="no option 'colour'"):
        ctx.connect(bus, colour="red")


def test_garbage_on_the_bus_is_dropped_and_the_context_lives_on(bus, make, nats_server):
    import socket

    from yoton_nats._address import bus_token

    a, ca = make(bus)
    sub = yoton.SubChannel(a, "g")
    b, _ = make(bus)
    pub = yoton.PubChannel(b, "g")
    raw = socket.create_connection(("127.0.0.1", nats_server.port))
    raw.recv(4096)
    subject = f"yoton.{bus_token(bus.rsplit('/', 1)[1])}.x"
    raw.sendall(
        b'CONNECT {"verbose":false}\r\nPUB ' + subject.encode() + b" 5\r\njunk!\r\nPING\r\n"
    )
    raw.recv(4096)
    raw.close()
    pub.send("still fine")
    assert sub.recv(5.0) == "still fine"
    assert ca.is_connected


def test_a_context_joins_a_bus_once(bus, make):
    a, first = make(bus)
    with pytest.raises(yoton.ConnectError, match="already"):
        a.connect(bus)
    first.close()
    a.connect(bus)  # after leaving, it may join again


def test_the_readme_example_runs_as_written(tmp_path, nats_server):
    """The NATS page's example: two processes on one bus (tests/test_readme.py skips
    it: it needs a server)."""
    import pathlib
    import re

    section = (pathlib.Path(__file__).parent.parent / "docs" / "nats.md").read_text()
    found = re.search(r"```python\n(# (?:readme|docs)-test: skip.*?)```", section, re.S)
    assert found is not None, "the example is gone from docs/nats.md"
    code = found.group(1)
    head, rest = code.split("# process 1\n")
    one, two = rest.split("# process 2\n")
    env = dict(os.environ, YOTON_NATS_URL=nats_server.url)
    procs = []
    for i, body in enumerate((one, two)):
        script = tmp_path / f"p{i + 1}.py"
        script.write_text(head + body)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert outs[1][0].splitlines() == ["5", "ready"]


def test_a_join_reaches_only_the_contexts_that_act_on_it(bus, make):
    watcher, cw = make(bus)
    yoton.SubChannel(watcher, "news")
    holder, ch = make(bus)
    st = yoton.StateChannel(holder, "shared")
    st.send("v")
    watcher.flush()
    before_watcher, before_holder = cw.stats.packages_received, ch.stats.packages_received
    for _ in range(10):  # joins of contexts without channels concern nobody
        make(bus)
    late, _ = make(bus)
    late_state = yoton.StateChannel(late, "shared")  # made after the join: it asks
    wait_for(lambda: late_state.recv() == "v", 10, "the state re-sent to a late channel")
    watcher.flush()
    holder.flush()
    assert cw.stats.packages_received == before_watcher
    assert ch.stats.packages_received - before_holder <= 2  # the late channel's request


# Forking a process with threads is what this test is about (Python >= 3.12 warns).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_joins_the_bus_with_its_own_links(bus, make):
    import multiprocessing

    a, _ = make(bus)  # the parent's engine and links exist before the fork
    sub = yoton.SubChannel(a, "from-child")

    def child_main(address):
        ctx = yoton.Context()
        ctx.connect(address, timeout=10)
        pub = yoton.PubChannel(ctx, "from-child")
        for _ in range(50):
            pub.send("hello from a forked child")
        ctx.flush()
        ctx.close()

    proc = multiprocessing.get_context("fork").Process(target=child_main, args=(bus,))
    proc.start()
    assert sub.recv(10.0) == "hello from a forked child"
    proc.join(20)
    assert proc.exitcode == 0


def test_a_bus_named_host_port_says_where_it_looked(monkeypatch):
    monkeypatch.setenv("YOTON_NATS_URL", "nats://127.0.0.1:1")
    ctx = yoton.Context()
    with pytest.raises(yoton.ConnectError) as info:
        ctx.connect("nats://127.0.0.1:4222", timeout=2)
    text = str(info.value)
    assert "names a bus" in text and "$YOTON_NATS_URL" in text
    assert "'nats://127.0.0.1:4222/BUS'" in text
