"""Bad input from the network and from the user.

A real Context is bound on TCP and one raw socket per case sends something
wrong: before the handshake (the bind keeps waiting and a real peer still gets
in on the same port) or after a valid handshake (that connection closes with a
reason, and the context's other connection keeps delivering). User mistakes
raise ValueError/TypeError/OSError with a message that says what was wrong.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import tracemalloc
from collections.abc import Iterator

import pytest

import yoton
from yoton_core.testing import wait_for
from yoton_tcp import TcpConnection

pytestmark = pytest.mark.timeout(60)

HEADER = struct.Struct("<7Q")
CONTROL = b"YOTON   "
RAW_ID = 0x0BADC0DE00000001
#: A heartbeat (docs/protocol.md#connection-level-packages): slot 1 (dummy), no
#: payload, all other fields 0.
HEARTBEAT = HEADER.pack(struct.unpack("<Q", CONTROL)[0], 1, 0, 0, 0, 0, 0)


def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def read_until_eof(s: socket.socket, limit: int = 1 << 16) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    data = b""
    try:
        while len(data) < limit:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        assert chunk, f"server closed during its handshake line (got {data!r})"
        data += chunk
    return data


def raw_handshake(port: int) -> socket.socket:
    """A raw socket that completed a valid handshake as the connecting side."""
    s = raw_connect(port)
    s.sendall(b"YOTON!%016x.%d\r\n" % (RAW_ID, os.getpid()))
    line = read_line(s)
    assert line.startswith(b"YOTON!") and line.endswith(b"\r\n")
    return s


def header(length: int, slot: int = 1234567, seq: int = 1, control: bytes = CONTROL) -> bytes:
    (word,) = struct.unpack("<Q", control)
    return HEADER.pack(word, slot, RAW_ID, seq, 0, 0, length)


class Server:
    """A context with one healthy connection to a real peer, plus a bind for raw sockets."""

    def __init__(self, max_message_size: int = 2**30) -> None:
        self.ctx = yoton.Context(max_message_size=max_message_size)
        self.peer = yoton.Context()
        self.sub = yoton.SubChannel(self.ctx, "health")
        self.pub = yoton.PubChannel(self.peer, "health")
        good = self.ctx.bind("localhost:0")
        self.peer.connect(f"localhost:{good.port1}", timeout=5)
        wait_for(lambda: good.is_connected, what="the healthy connection")
        # The peer's join announcement (NEW_CONNECTION) is routed before what
        # it sends next: once this arrives, no raw peer of a test gets it relayed.
        self.pub.send("joined")
        assert self.sub.recv(10) == "joined"
        self.good = good
        self.n = 0

    def bind(self) -> yoton.Connection:
        return self.ctx.bind("localhost:0")

    def assert_healthy(self) -> None:
        """The healthy connection still delivers, and a new real peer can still join."""
        self.n += 1
        text = f"still alive {self.n}"
        self.pub.send(text)
        assert self.sub.recv(10) == text
        assert self.good.is_connected
        conn = self.bind()
        other = yoton.Context()
        try:
            c2 = other.connect(f"localhost:{conn.port1}", timeout=5)
            wait_for(lambda: conn.is_connected, what="a new real peer to get in")
            assert c2.id2 == self.ctx.id
        finally:
            other.close()

    def close(self) -> None:
        self.peer.close()
        self.ctx.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def assert_real_peer_joins(conn: yoton.Connection, ctx: yoton.Context) -> None:
    """A real yoton peer can still connect to the bind ``conn`` waits on."""
    assert conn.is_waiting
    other = yoton.Context()
    try:
        c2 = other.connect(f"localhost:{conn.port1}", timeout=5)
        wait_for(lambda: conn.is_connected, what="the real peer to get in")
        assert c2.id2 == ctx.id and conn.id2 == other.id
    finally:
        other.close()


# -- before the handshake ----------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x01\x02garbage\xff" * 10, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"yoton!"],
    ids=["garbage", "http", "lowercase-magic"],
)
def test_non_yoton_handshake_is_refused(server: Server, garbage: bytes) -> None:
    conn = server.bind()
    s = raw_connect(conn.port1)
    s.sendall(garbage)
    assert read_until_eof(s) == b"ERROR: this is Yoton.\r\n"
    s.close()
    assert_real_peer_joins(conn, server.ctx)
    server.assert_healthy()


def test_unparsable_yoton_line_is_refused(server: Server) -> None:
    conn = server.bind()
    s = raw_connect(conn.port1)
    s.sendall(b"YOTON!not-hex.12\r\n")
    assert read_until_eof(s) == b"ERROR: could not parse id.\r\n"
    s.close()
    assert_real_peer_joins(conn, server.ctx)


def test_endless_handshake_line_is_refused(server: Server) -> None:
    conn = server.bind()
    s = raw_connect(conn.port1)
    try:
        s.sendall(b"YOTON!" + b"1" * 100_000)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may hang up before it read everything
    assert read_until_eof(s) in (b"ERROR: could not parse id.\r\n", b"")
    s.close()
    assert_real_peer_joins(conn, server.ctx)


def test_stalled_handshake_is_dropped(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TcpConnection, "handshake_timeout", 0.3)
    conn = server.bind()
    s = raw_connect(conn.port1)
    # The server drops us (EOF) once the handshake timeout passed, sending nothing.
    assert read_until_eof(s) == b""
    s.close()
    assert_real_peer_joins(conn, server.ctx)
    server.assert_healthy()


def test_real_peer_gets_in_while_others_stall(server: Server) -> None:
    """Silent clients (more than max_pending_handshakes of them) do not keep a peer out.

    The handshake timeout stays at its default, so the real peer getting in
    proves it did not wait for the stalled ones to time out.
    """
    conn = server.bind()
    stalled = [raw_connect(conn.port1) for _ in range(TcpConnection.max_pending_handshakes + 4)]
    try:
        assert_real_peer_joins(conn, server.ctx)
        for s in stalled:  # once the peer is in, the bind stops serving the others
            assert read_until_eof(s) == b""
    finally:
        for s in stalled:
            s.close()


def test_client_side_refuses_a_non_yoton_server() -> None:
    """connect() to something that is not yoton fails with an OSError naming the reply."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ctx = yoton.Context()

    def serve() -> None:
        s, _ = listener.accept()
        s.recv(100)
        s.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        s.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(OSError, match="HTTP/1.1 400"):
            ctx.connect(f"localhost:{port}", timeout=5)
        assert ctx.connection_count == 0 and ctx.connections_all == []
    finally:
        t.join(5)
        listener.close()


# -- after a valid handshake -------------------------------------------------------


def hosted(server: Server) -> tuple[yoton.Connection, socket.socket]:
    conn = server.bind()
    s = raw_handshake(conn.port1)
    wait_for(lambda: conn.is_connected, what="the raw peer to be accepted")
    assert conn.id2 == RAW_ID
    return conn, s


def test_valid_package_from_raw_socket_is_delivered(server: Server) -> None:
    """Sanity check of the raw framing used below: a correct package arrives."""
    sub = yoton.SubChannel(server.ctx, "raw")
    conn, s = hosted(server)
    slot = yoton.slot_hash("raw.txt.pub-sub")
    s.sendall(header(5, slot=slot) + b"hello")
    assert sub.recv(10) == "hello"
    s.close()
    assert conn.wait_closed(10)


def test_wrong_control_bytes(server: Server) -> None:
    conn, s = hosted(server)
    s.sendall(header(3, control=b"NOTYOTON") + b"abc")
    assert conn.wait_closed(10)
    assert "Lost track of the stream" in (conn.close_reason or "")
    sent = read_until_eof(s)  # ends by the server hanging up (a timeout would raise)
    assert len(sent) < 1 << 16 and sent == HEARTBEAT * (len(sent) // HEADER.size), sent
    s.close()
    server.assert_healthy()


def test_random_bytes_after_handshake(server: Server) -> None:
    conn, s = hosted(server)
    rnd = random.Random(1234)
    try:
        s.sendall(bytes(rnd.getrandbits(8) for _ in range(20_000)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert conn.wait_closed(10)
    assert "Lost track of the stream" in (conn.close_reason or "")
    s.close()
    server.assert_healthy()


def test_length_beyond_maximum_message_size() -> None:
    server = Server(max_message_size=1024)
    try:
        conn, s = hosted(server)
        tracemalloc.start()
        try:
            # Only the header: the connection must close on it, not wait for 1 TiB.
            s.sendall(header(2**40))
            assert conn.wait_closed(10)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        reason = conn.close_reason or ""
        assert str(2**40) in reason and "1024" in reason, reason
        assert peak < 16 * 2**20, f"closing on a bogus length allocated {peak} bytes"
        s.close()
        server.assert_healthy()
    finally:
        server.close()


def test_an_over_limit_package_sent_whole_closes_at_once() -> None:
    """An over-limit package that arrives whole, in the same write as good ones.

    The package before it is delivered, the big one and everything after it
    are not, and the connection closes: decided on the header, so this test
    fails fast (a sentinel after the big package) instead of waiting for a
    close that never comes.
    """
    server = Server(max_message_size=1024)
    try:
        sub = yoton.SubChannel(server.ctx, "whole", yoton.BINARY)
        conn, s = hosted(server)
        slot = yoton.slot_hash("whole.bin.pub-sub")
        s.sendall(
            header(4, slot=slot, seq=1)
            + b"good"
            + header(2000, slot=slot, seq=2)
            + b"B" * 2000
            + header(8, slot=slot, seq=3)
            + b"sentinel"
        )
        wait_for(lambda: not conn.is_alive or sub.pending >= 2, what="the close (or the bug)")
        assert sub.recv_all() == [b"good"]  # delivered before the close; nothing after it
        assert conn.wait_closed(10)
        reason = conn.close_reason or ""
        assert "2000" in reason and "1024" in reason, reason
        s.close()
    finally:
        server.close()


def test_message_at_the_maximum_is_accepted() -> None:
    server = Server(max_message_size=1024)
    try:
        sub = yoton.SubChannel(server.ctx, "edge", yoton.BINARY)
        conn, s = hosted(server)
        slot = yoton.slot_hash("edge.bin.pub-sub")
        s.sendall(header(1024, slot=slot) + b"x" * 1024)
        assert sub.recv(10) == b"x" * 1024
        s.sendall(header(1025, slot=slot, seq=2))
        assert conn.wait_closed(10)
        assert "1025" in (conn.close_reason or "")
        s.close()
    finally:
        server.close()


def test_truncated_payload_then_eof(server: Server) -> None:
    conn, s = hosted(server)
    s.sendall(header(1000) + b"only ten b")
    s.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(10)
    reason = conn.close_reason or ""
    expected = "in the middle of a package (66 of 1056 bytes received)."
    assert reason == f"Other end dropped the connection {expected}"
    s.close()
    # No spinning receive loop: the engine still serves the other connection promptly.
    server.assert_healthy()


def test_large_payload_cut_short_is_dropped_unseen(server: Server) -> None:
    # 3 of 4 MiB: far enough for the receiver to have moved the payload into
    # its own bytes object and to recv_into it (_bytesfill); what was filled
    # must never be delivered.
    sub = yoton.SubChannel(server.ctx, "cut", yoton.BINARY)
    conn, s = hosted(server)
    slot = yoton.slot_hash("cut.bin.pub-sub")
    s.sendall(header(5, slot=slot) + b"whole")
    s.sendall(header(4 << 20, slot=slot, seq=2) + b"p" * (3 << 20))
    s.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(10)
    reason = conn.close_reason or ""
    assert f"{56 + (3 << 20)} of {56 + (4 << 20)} bytes received" in reason, reason
    assert sub.recv(0) == b"whole"
    assert sub.recv(0) == b""  # the cut payload is gone, not delivered half-filled
    s.close()
    server.assert_healthy()


def test_truncated_header_then_eof(server: Server) -> None:
    conn, s = hosted(server)
    s.sendall(header(10)[:30])
    s.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(10)
    assert "header" in (conn.close_reason or "")
    s.close()
    server.assert_healthy()


def test_close_package_from_raw_peer(server: Server) -> None:
    conn, s = hosted(server)
    s.sendall(header(0, slot=1, seq=1))  # zero length, source_seq 1: CLOSE
    assert conn.wait_closed(10)
    assert conn.close_reason == "Closed from other end."
    s.close()
    server.assert_healthy()


# -- user mistakes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("localhost", "host:port"),
        ("localhost:", "empty port"),
        (":5000", "empty host"),
        ("localhost:99999", "99999"),
        ("localhost:80", "1024"),
        ("localhost:-5", "-5"),
        ("localhost:chat+x", "offset"),
        ("bad scheme://localhost:5000", "scheme"),
    ],
)
def test_bad_addresses(address: str, words: str) -> None:
    ctx = yoton.Context()
    for call in (ctx.bind, ctx.connect):
        with pytest.raises(ValueError, match=words) as info:
            call(address)
        assert repr(address) in str(info.value) or words in str(info.value)
    assert ctx.connections_all == []


def test_unknown_scheme_lists_known_ones() -> None:
    ctx = yoton.Context()
    with pytest.raises(ValueError, match="tcp"):
        ctx.bind("nosuchscheme://localhost:5000")


def test_bad_types() -> None:
    ctx = yoton.Context()
    with pytest.raises(TypeError, match="address"):
        ctx.bind(5000)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Context"):
        yoton.PubChannel("not a context", "x")
    with pytest.raises(TypeError, match="slot_base"):
        yoton.PubChannel(ctx, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message_type"):
        yoton.SubChannel(ctx, "x", "txt")
    with pytest.raises(TypeError, match="timeout"):
        ctx.connect("localhost:5000", timeout="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        ctx.bind("localhost:0", name=3)  # type: ignore[arg-type]
    text = yoton.PubChannel(ctx, "t")
    binary = yoton.PubChannel(ctx, "b", yoton.BINARY)
    obj = yoton.PubChannel(ctx, "o", yoton.OBJECT)
    with pytest.raises(ValueError, match="str"):
        text.send(b"bytes")
    with pytest.raises(ValueError, match="bytes"):
        binary.send("text")
    with pytest.raises(ValueError, match="bytes"):
        binary.send(bytearray(b"x"))
    with pytest.raises(ValueError, match="Unsupported type"):
        obj.send({1, 2})
    with pytest.raises(ValueError):
        obj.send(2**64)
    sub = yoton.SubChannel(ctx, "t")
    with pytest.raises(TypeError, match="block"):
        sub.recv("yes")
    with pytest.raises(ValueError, match="block"):
        sub.recv(-1)
    ctx.close()


def test_a_bad_block_is_refused_also_when_a_message_is_waiting() -> None:
    """The answer must not depend on whether the inbox happens to be empty."""
    ctx = yoton.Context()
    pub, sub = yoton.PubChannel(ctx, "b"), yoton.SubChannel(ctx, "b")
    pub.send("waiting")
    for bad, error in (("yes", TypeError), (-1, ValueError), (float("nan"), ValueError)):
        with pytest.raises(error, match="block must be"):
            sub.recv(bad)
    assert sub.recv(False) == "waiting"  # and nothing was taken by the refused calls
    ctx.close()


def test_recv_remembers_only_a_block_it_found_valid() -> None:
    """recv skips the checks for the very number it last waited with (a loop's
    timeout); a refused one, given again, is refused again."""
    ctx = yoton.Context()
    pub, sub = yoton.PubChannel(ctx, "b"), yoton.SubChannel(ctx, "b")
    timeout = 0.01
    assert sub.recv(timeout) == ""  # nothing came: waited, and found the number valid
    pub.send("one")
    pub.send("two")
    assert sub.recv(timeout) == "one"
    nan, negative = float("nan"), -1.5
    for bad in (nan, nan, negative, negative, "yes", "yes"):  # each object twice
        with pytest.raises((TypeError, ValueError), match="block must be"):
            sub.recv(bad)
    assert sub.recv(timeout) == "two"  # nothing was taken by the refused calls
    assert sub.recv(timeout) == ""  # and the remembered timeout still times out
    ctx.close()


def test_block_inf_waits_like_true() -> None:
    """2.x programs pass float("inf"); a deadline at infinity used to overflow."""
    ctx = yoton.Context()
    pub, sub = yoton.PubChannel(ctx, "inf"), yoton.SubChannel(ctx, "inf")
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(sub.recv(float("inf"))))
    reader.start()
    wait_for(lambda: sub._waiters or sub._wakers, 10.0, "the reader to wait")
    pub.send("late")
    reader.join(10.0)
    assert got == ["late"]
    with pytest.raises(TypeError, match="block must be"):
        yoton.process_events("soon")  # type: ignore[arg-type]  # the error under test
    yoton.process_events(False)
    ctx.close()


def test_send_on_closed_channel_raises_oserror() -> None:
    ctx = yoton.Context()
    pub = yoton.PubChannel(ctx, "closing")
    pub.send("fine")
    pub.close()
    with pytest.raises(OSError, match="closed"):
        pub.send("not fine")
    ctx.close()


def test_too_large_message_is_refused_before_sending() -> None:
    ctx = yoton.Context(max_message_size=100)
    pub = yoton.PubChannel(ctx, "big", yoton.BINARY)
    with pytest.raises(ValueError, match="maximum message size"):
        pub.send(b"x" * 101)
    pub.send(b"x" * 100)
    ctx.close()
