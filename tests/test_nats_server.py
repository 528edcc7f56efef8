"""The real nats-server we test with (yoton_nats.testing, the pytest fixtures),
and our sans-IO protocol speaking to it over a plain socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from yoton_nats._protocol import (
    PING,
    Err,
    Info,
    Msg,
    Pong,
    ServerReader,
    connect_command,
    pub_command,
    sub_command,
)
from yoton_nats.testing import NatsServer, ServerNotFoundError, find_server_binary


def talk(server: NatsServer, options: dict | None = None):
    """A raw client: returns (socket, reader, info)."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    reader = ServerReader()
    events: list = []
    while not events:
        events += reader.feed(sock.recv(65536))
    info = events[0]
    assert isinstance(info, Info)
    sock.sendall(connect_command({"verbose": False, "echo": True, **(options or {})}) + PING)
    return sock, reader, info


def until(sock, reader, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    got: list = []
    while not any(predicate(e) for e in got):
        assert time.monotonic() < deadline, got
        data = sock.recv(65536)
        if not data:
            return got + ["EOF"]
        got += reader.feed(data)
    return got


def test_our_protocol_against_the_real_server(nats_server):
    sock, reader, info = talk(nats_server)
    assert info.max_payload == 1 << 20 and info.headers
    until(sock, reader, lambda e: isinstance(e, Pong))
    sock.sendall(sub_command("a.*", 1) + pub_command("a.b", b"hello", "r.1") + PING)
    got = until(sock, reader, lambda e: isinstance(e, Pong))
    assert got[0] == Msg("a.b", 1, "r.1", b"hello")
    sock.close()


def test_a_wrong_password_gets_authorization_violation(nats_server_factory):
    server = nats_server_factory(user="u", password="right")
    sock, reader, info = talk(server, {"user": "u", "pass": "wrong"})
    assert info.auth_required
    got = until(sock, reader, lambda e: e == "EOF" or isinstance(e, Err))
    err = next(e for e in got if isinstance(e, Err))
    assert err.is_auth_failure and err.closes_connection


def test_stop_and_start_keep_the_port_and_kill_leaves_no_process(nats_server):
    port, pid = nats_server.port, nats_server.pid
    nats_server.stop()
    assert not nats_server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    nats_server.start()
    assert nats_server.port == port and nats_server.pid != pid
    nats_server.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not nats_server.running


def test_a_cluster_routes_messages_between_its_servers(nats_cluster):
    a, b = nats_cluster.servers[0], nats_cluster.servers[2]
    sock_b, reader_b, info_b = talk(b)
    assert len(info_b.connect_urls) == 3
    sock_b.sendall(sub_command("x", 1) + PING)
    until(sock_b, reader_b, lambda e: isinstance(e, Pong))
    sock_a, reader_a, _ = talk(a)
    deadline = time.monotonic() + 5
    got: list = []
    # Interest crosses the route asynchronously: publish until it arrives.
    sock_b.settimeout(0.05)
    while not got:
        assert time.monotonic() < deadline
        sock_a.sendall(pub_command("x", b"via route"))
        try:
            got = [e for e in reader_b.feed(sock_b.recv(65536)) if isinstance(e, Msg)]
        except TimeoutError:
            pass
    assert got[0].payload == b"via route"


def test_servers_still_running_at_exit_are_killed(tmp_path):
    script = tmp_path / "leak.py"
    script.write_text(
        "from yoton_nats.testing import NatsServer\n"
        "s = NatsServer().start()\n"
        "print(s.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_missing_binary_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("YOTON_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(ServerNotFoundError, match="YOTON_NATS_SERVER"):
        find_server_binary()
    monkeypatch.delenv("YOTON_NATS_SERVER")
    assert os.access(find_server_binary(), os.X_OK)
