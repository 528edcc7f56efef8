"""Tests of clientserver: RequestServer and do_request.

The protocol: docs/protocol.md#clientserver; 2.x's defects fixed here:
docs/protocol.md#differences-from-2x, item 21.

Everything runs over real TCP sockets on localhost; yoton 2.x runs in a child
process (see ``yoton2.py``). Nothing waits with fixed sleeps: handlers signal
threading.Events, and "the server dropped this client" is observed as EOF (or
a reset) on the client's socket.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core.testing import wait_for

pytestmark = pytest.mark.timeout(60)

GENEROUS = 10.0  # seconds; a deadline for things that take milliseconds


class Recorder(yoton.RequestServer):
    """Records each request and the thread that handled it; replies like the default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.requests: list[str] = []
        self.threads: list[threading.Thread] = []
        self.handled = threading.Event()

    def handle_request(self, request: str) -> str:
        self.requests.append(request)
        self.threads.append(threading.current_thread())
        self.handled.set()
        return super().handle_request(request)


@pytest.fixture
def make_server() -> Iterator[type]:
    """Create servers on free ports; stop them all at the end."""
    servers: list[yoton.RequestServer] = []

    def make(cls: type = Recorder, *args: object, start: bool = True, **kwargs: object) -> object:
        server = cls("localhost:0", *args, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make  # type: ignore[misc]
    for server in servers:
        server.stop()
    for server in servers:
        if server.is_alive():
            server.join(GENEROUS)
            assert not server.is_alive()


def addr(server: yoton.RequestServer) -> str:
    return f"localhost:{server.port}"


def raw_exchange(server: yoton.RequestServer, data: bytes, shutdown: bool = False) -> bytes:
    """Talk to the server like telnet: send bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def read_to_eof(sock: socket.socket) -> bytes:
    """Read until EOF; a reset counts as EOF (the server closed with data unread)."""
    out = b""
    sock.settimeout(GENEROUS)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


# -- basics -------------------------------------------------------------------


def test_request_and_reply_reach_user_code_without_crlf(make_server) -> None:
    server = make_server()
    assert yoton.do_request(addr(server), "hello") == "Requested: hello"
    assert server.requests == ["hello"]
    # A trailing CRLF given by the caller (as 2.x code did) is not doubled.
    assert yoton.do_request(addr(server), "again\r\n") == "Requested: again"
    assert server.requests == ["hello", "again"]


def test_empty_and_non_ascii_requests(make_server) -> None:
    server = make_server()
    assert yoton.do_request(addr(server), "") == "Requested: "
    text = "é€😀 жёлтый 漢字"
    assert yoton.do_request(addr(server), text) == "Requested: " + text
    assert server.requests == ["", text]


def test_large_request_in_few_system_calls(make_server, monkeypatch) -> None:
    """2.x read one byte per recv(); 300 KB must take a handful of calls, not 300000."""
    calls = {"n": 0}
    real_recv = socket.socket.recv

    def counting_recv(self: socket.socket, *args: object) -> bytes:
        calls["n"] += 1
        return real_recv(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "recv", counting_recv, raising=False)
    server = make_server()
    big = "x" * 300_000
    reply = yoton.do_request(addr(server), big)
    assert reply == "Requested: " + big
    assert server.requests == [big]
    # Server and client together read 600 KB; one byte per call would be 600000.
    assert calls["n"] < 1000


def test_port_name_is_hashed_like_contexts(make_server) -> None:
    for _ in range(5):
        name = f"cs-{uuid.uuid4().hex[:10]}"
        try:
            server = Recorder(f"localhost:{name}")
        except OSError:  # that hashed port happens to be busy: try another name
            continue
        try:
            assert server.port == yoton.port_hash(name)
            server.start()
            assert yoton.do_request(f"localhost:{name}", "named") == "Requested: named"
            assert yoton.do_request(f"tcp://localhost:{name}", "tcp") == "Requested: tcp"
        finally:
            server.stop()
            server.join(GENEROUS)
        return
    pytest.skip("every hashed port tried was busy")


def test_run_serves_in_the_calling_thread_and_stop_ends_it(make_server) -> None:
    server = make_server(start=False)
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    assert yoton.do_request(addr(server), "one", timeout=GENEROUS) == "Requested: one"
    assert server.threads == [runner]
    assert server.serving
    server.stop()
    runner.join(GENEROUS)
    assert not runner.is_alive()
    assert not server.serving
    # The port is closed once the server stopped.
    with pytest.raises(yoton.NoServerError):
        yoton.do_request(addr(server), "nobody")


def test_stop_ends_the_server_thread(make_server) -> None:
    server = make_server()
    assert yoton.do_request(addr(server), "x") == "Requested: x"
    assert server.is_alive()
    assert server.threads == [server]  # not threaded: handled by the server thread
    server.stop()
    server.join(GENEROUS)
    assert not server.is_alive()
    with pytest.raises(RuntimeError, match="create a new one"):
        server.start()


def test_stop_before_running_closes_the_port(make_server) -> None:
    server = make_server(start=False)
    server.stop()
    with pytest.raises(yoton.NoServerError):
        yoton.do_request(addr(server), "x")
    with pytest.raises(RuntimeError, match="create a new one"):
        server.run()


def test_stop_request_stops_the_default_server(make_server) -> None:
    """The documented 'stop' special case works now that the CRLF is stripped."""
    server = make_server()
    assert yoton.do_request(addr(server), "stop") == "Requested: stop"
    server.join(GENEROUS)
    assert not server.is_alive()


def test_threaded_mode_uses_daemon_threads(make_server) -> None:
    server = make_server(Recorder, True)
    assert server.threaded
    for i in range(3):
        assert yoton.do_request(addr(server), f"r{i}") == f"Requested: r{i}"
    assert sorted(server.requests) == ["r0", "r1", "r2"]
    assert all(t is not server and t.daemon for t in server.threads)


# -- do_request ---------------------------------------------------------------


def test_do_request_returns_none_on_timeout(make_server) -> None:
    release = threading.Event()

    class Slow(yoton.RequestServer):
        def handle_request(self, request: str) -> str:
            release.wait(GENEROUS)
            return "late"

    server = make_server(Slow, True)
    try:
        assert yoton.do_request(addr(server), "x", timeout=0.2) is None
    finally:
        release.set()
    # timeout <= 0 waits as long as it takes.
    assert yoton.do_request(addr(server), "y", timeout=0) == "late"
    assert yoton.do_request(addr(server), "z", timeout=-1) == "late"
    assert yoton.do_request(addr(server), "n", timeout=None) == "late"


def test_do_request_argument_errors() -> None:
    with pytest.raises(TypeError, match="request must be a str"):
        yoton.do_request("localhost:1234", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request must be a str"):  # 2.x raised ValueError
        yoton.do_request("localhost:1234", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="single line"):
        yoton.do_request("localhost:1234", "two\r\nlines")
    with pytest.raises(ValueError, match="only speaks TCP"):
        yoton.do_request("unix://localhost:1234", "x")
    with pytest.raises(ValueError, match="host:port"):
        yoton.do_request("nocolon", "x")
    with pytest.raises(TypeError, match="timeout"):
        yoton.do_request("localhost:1234", "x", timeout="soon")  # type: ignore[arg-type]


def test_do_request_without_server_raises_clear_oserror() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(yoton.NoServerError, match="No server is listening at") as info:
        yoton.do_request(f"localhost:{port}", "x", timeout=GENEROUS)
    assert isinstance(info.value, ConnectionRefusedError)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, RuntimeError)  # what 2.x raised
    assert f"localhost:{port}" in str(info.value)


# -- handler mistakes ------------------------------------------------------------


def test_non_str_reply_is_logged_and_connection_closed(make_server, caplog) -> None:
    class Bad(yoton.RequestServer):
        def handle_request(self, request: str) -> str:
            if request == "bad":
                return 42  # type: ignore[return-value]
            return "good"

    server = make_server(Bad)
    with caplog.at_level(logging.ERROR, logger="yoton"):
        with pytest.raises(yoton.BrokenConnectionError, match="without replying"):
            yoton.do_request(addr(server), "bad", timeout=GENEROUS)
    assert any("must return a str" in r.getMessage() for r in caplog.records)
    assert yoton.do_request(addr(server), "next", timeout=GENEROUS) == "good"


def test_handler_exception_is_logged_and_server_goes_on(make_server, caplog) -> None:
    class Raising(yoton.RequestServer):
        def handle_request(self, request: str) -> str:
            if request == "boom":
                raise KeyError("boom")
            return "fine"

    server = make_server(Raising)
    with caplog.at_level(logging.ERROR, logger="yoton"):
        with pytest.raises(yoton.BrokenConnectionError):
            yoton.do_request(addr(server), "boom", timeout=GENEROUS)
    assert any("raised" in r.getMessage() and r.exc_info for r in caplog.records)
    assert yoton.do_request(addr(server), "ok", timeout=GENEROUS) == "fine"


def test_constructor_argument_errors() -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        yoton.RequestServer("localhost:0", request_timeout=0)
    with pytest.raises(ValueError, match="max_request_size"):
        yoton.RequestServer("localhost:0", max_request_size=0)
    with pytest.raises(ValueError, match="only speaks TCP"):
        yoton.RequestServer("inproc://x:0")


def test_bind_failure_raises_in_the_constructor(make_server) -> None:
    server = make_server(start=False)
    with pytest.raises(OSError):
        yoton.RequestServer(addr(server))


# -- telnet-like peers -------------------------------------------------------------


def test_telnet_like_client_without_shutdown(make_server) -> None:
    """A plain client sends a line and keeps its side open; the server replies and closes."""
    server = make_server()
    assert raw_exchange(server, b"hello\r\n") == b"Requested: hello\r\n"
    assert server.requests == ["hello"]


def test_only_the_first_line_is_the_request(make_server) -> None:
    server = make_server()
    assert raw_exchange(server, b"two\r\nlines\r\n", shutdown=True) == b"Requested: two\r\n"
    assert server.requests == ["two"]


def test_eof_ends_a_request_without_crlf(make_server) -> None:
    server = make_server()
    assert raw_exchange(server, b"no newline", shutdown=True) == b"Requested: no newline\r\n"
    # A lone "\n" is data, not the end of the request.
    assert raw_exchange(server, b"a\nb", shutdown=True) == b"Requested: a\nb\r\n"
    assert server.requests == ["no newline", "a\nb"]


def test_client_that_sends_nothing_is_not_a_request(make_server) -> None:
    server = make_server()
    assert raw_exchange(server, b"", shutdown=True) == b""
    assert yoton.do_request(addr(server), "after") == "Requested: after"
    assert server.requests == ["after"]


# -- bad input -------------------------------------------------------------------------


def test_over_long_request_is_refused(make_server, caplog) -> None:
    server = make_server(Recorder, max_request_size=1000)
    # The limit itself is fine.
    assert yoton.do_request(addr(server), "a" * 1000) == "Requested: " + "a" * 1000
    with caplog.at_level(logging.WARNING, logger="yoton"):
        # One byte over, with and without a CRLF, is refused without calling the handler.
        assert raw_exchange(server, b"b" * 1001 + b"\r\n") == b""
        assert raw_exchange(server, b"c" * 1001, shutdown=True) == b""
        # A client that never stops sending: the server gives up without reading it all.
        with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS) as sock:
            try:
                sock.sendall(b"d" * 10_000_000)
            except OSError:
                pass  # reset by the server: expected
            assert read_to_eof(sock) == b""
        with pytest.raises(yoton.BrokenConnectionError):
            yoton.do_request(addr(server), "e" * 5000, timeout=GENEROUS)
    assert server.requests == ["a" * 1000]
    assert any("longer than 1000 bytes" in r.getMessage() for r in caplog.records)
    assert yoton.do_request(addr(server), "still serving") == "Requested: still serving"


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "serial"])
def test_stalled_client_is_timed_out(make_server, caplog, threaded: bool) -> None:
    """A client that sends half a line is dropped after request_timeout.

    Threaded: other clients are served meanwhile. Serial: they are served
    once the staller was dropped (their do_request just takes longer).
    """
    server = make_server(Recorder, threaded, request_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS) as stall:
            stall.sendall(b"partial request")
            reply = yoton.do_request(addr(server), "other", timeout=GENEROUS)
            assert reply == "Requested: other"
            if threaded:
                # Served while the staller is still connected and unanswered.
                stall.setblocking(False)
                with pytest.raises(BlockingIOError):
                    stall.recv(1)
            assert read_to_eof(stall) == b""  # dropped without a reply
    assert server.requests == ["other"]
    assert any("timed out" in r.getMessage() for r in caplog.records)


# -- interoperability with yoton 2.x -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request_once_listening(address: str, text: str) -> str | None:
    """``do_request``, retried (with a deadline) while nobody listens at ``address``."""
    replies: list[str | None] = []

    def answered() -> bool:
        try:
            replies.append(yoton.do_request(address, text, timeout=GENEROUS))
        except yoton.NoServerError:
            return False
        return True

    wait_for(answered, GENEROUS, f"a server listening at {address}")
    return replies[0]


def test_our_do_request_to_2x_request_server() -> None:
    script = """
    port = int(read_line())
    server = yoton.RequestServer("localhost:%d" % port)
    server.start()
    say("READY")
    read_line()
    server.stop()
    """
    for _attempt in range(3):
        port = _free_port()
        with run_yoton2(script) as child:
            child.send_line(str(port))
            try:
                child.expect_line("READY")
            except AssertionError:
                if "Address already in use" in child.stderr_text():
                    continue  # someone took the port between probe and bind
                raise
            # 2.x binds in its constructor but listens only once its thread
            # runs: until then a connection is refused.
            assert _request_once_listening(f"localhost:{port}", "hello") == "Requested: hello"
            text = "é€ 漢字"
            assert yoton.do_request(f"localhost:{port}", text, timeout=GENEROUS) == (
                "Requested: " + text
            )
            child.send_line("done")
        return
    pytest.fail("could not find a free port for the 2.x server")


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
def test_2x_do_request_to_our_request_server(make_server, threaded: bool) -> None:
    server = make_server(Recorder, threaded)
    script = """
    port = int(read_line())
    for text in ("hello", "é€ 漢字"):
        say("REPLY", repr(yoton.do_request("localhost:%d" % port, text, 5.0)))
    """
    with run_yoton2(script) as child:
        child.send_line(str(server.port))
        # 2.x keeps the CRLF in what it returns; our server sent exactly one.
        assert child.expect_line("REPLY") == repr("Requested: hello\r\n")
        assert child.expect_line("REPLY") == repr("Requested: é€ 漢字\r\n")
        assert child.wait() == 0
    assert server.requests == ["hello", "é€ 漢字"]
