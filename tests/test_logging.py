"""Logging: one ``yoton`` logger hierarchy, connection life at INFO, faults at
WARNING, per-package detail at DEBUG, and nothing printed by the library.

Peers are real processes and real sockets: a child that connects and is then
killed (a fault), stopped with SIGSTOP (a time-out) or asked to close (on
purpose), and a raw socket that sends garbage instead of a handshake.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import yoton
from yoton_core import _routing
from yoton_core.testing import wait_for

TIMEOUT = 15.0

needs_sigstop = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")

PEER = textwrap.dedent(
    """
    import sys, yoton
    ctx = yoton.Context()
    conn = ctx.connect(sys.argv[1], timeout=10)
    print("READY", flush=True)
    if sys.stdin.readline().strip() == "close":
        conn.close()
        print("CLOSED", flush=True)
        sys.stdin.readline()
    """
)


class Peer:
    """A child process connected to ``address``; closes on request or is killed."""

    def __init__(self, address: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER, address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.expect("READY")

    def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == word, f"peer said {line!r}, expected {word!r}"

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)


@pytest.fixture
def peers() -> Iterator[Any]:
    made: list[Peer] = []

    def make(address: str) -> Peer:
        peer = Peer(address)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        if peer.proc.poll() is None and hasattr(signal, "SIGCONT"):
            os.kill(peer.proc.pid, signal.SIGCONT)
        peer.end()


def messages(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


def has(caplog: pytest.LogCaptureFixture, name: str, level: int, text: str) -> bool:
    return any(text in m for m in messages(caplog, name, level))


def test_yoton_logger_has_a_null_handler_and_no_level() -> None:
    root = logging.getLogger("yoton")
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)
    assert yoton.Context().transport == "tcp"  # (a context changes nothing by default)
    assert root.level == logging.NOTSET


def test_connection_life_is_logged_at_info(contexts, peers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="yoton")
    ctx = contexts()
    conn = ctx.bind("localhost:0")
    assert has(caplog, "yoton.tcp", logging.INFO, f"waiting for a peer at 127.0.0.1:{conn.port1}")
    peer = peers(f"localhost:{conn.port1}")
    wait_for(lambda: conn.is_connected, TIMEOUT, "the peer")
    wait_for(
        lambda: has(caplog, "yoton.tcp", logging.INFO, f"peer connected: 127.0.0.1:{conn.port1}"),
        TIMEOUT,
        "the 'peer connected' record",
    )
    assert f"pid {peer.proc.pid}" in messages(caplog, "yoton.tcp", logging.INFO)[-1]
    peer.say("close")  # the peer closes on purpose: that is life, not a fault
    peer.expect("CLOSED")
    wait_for(lambda: not conn.is_alive, TIMEOUT, "the close")
    wait_for(
        lambda: has(caplog, "yoton.tcp", logging.INFO, "closed: Closed from other end."),
        TIMEOUT,
        "the close record",
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_connect_and_close_on_our_side_are_info(contexts, caplog) -> None:
    caplog.set_level(logging.INFO, logger="yoton")
    a, b = contexts(2)
    port = a.bind("localhost:0").port1
    conn = b.connect(f"localhost:{port}", timeout=TIMEOUT)
    assert has(caplog, "yoton.tcp", logging.INFO, f"connected: 127.0.0.1:{conn.port1} -> ")
    conn.close()
    wait_for(
        lambda: has(caplog, "yoton.tcp", logging.INFO, "closed: Closed on command."),
        TIMEOUT,
        "our close",
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("scheme", ["unix", "inproc"])
def test_each_transport_logs_on_its_own_logger(contexts, caplog, rundir, scheme) -> None:
    caplog.set_level(logging.INFO, logger="yoton")
    a, b = contexts(2)
    conn = a.bind(f"{scheme}://log-{scheme}")
    b.connect(f"{scheme}://log-{scheme}", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the connection")
    wait_for(
        lambda: has(caplog, f"yoton.{scheme}", logging.INFO, "peer connected"),
        TIMEOUT,
        "the record",
    )
    assert has(caplog, f"yoton.{scheme}", logging.INFO, "connected: ")


def test_a_dead_peer_is_a_warning(contexts, peers, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="yoton")
    ctx = contexts()
    conn = ctx.bind("localhost:0")
    peer = peers(f"localhost:{conn.port1}")
    wait_for(lambda: conn.is_connected, TIMEOUT, "the peer")
    peer.proc.kill()
    wait_for(lambda: not conn.is_alive, TIMEOUT, "the close")
    wait_for(
        lambda: has(caplog, "yoton.tcp", logging.WARNING, "lost: Other end dropped the connection"),
        TIMEOUT,
        "the fault record",
    )
    assert messages(caplog, "yoton.tcp", logging.INFO) == []  # (the level filters INFO)


def test_a_failed_handshake_is_a_warning(contexts, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="yoton")
    ctx = contexts()
    conn = ctx.bind("localhost:0")
    with socket.create_connection(("127.0.0.1", conn.port1), timeout=TIMEOUT) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(
            lambda: has(caplog, "yoton.tcp", logging.WARNING, "handshake failed at 127.0.0.1:"),
            TIMEOUT,
            "the handshake record",
        )
    assert conn.is_waiting  # the garbage cost only that attempt


@needs_sigstop
def test_timed_out_is_a_warning_and_recovery_is_info(contexts, peers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="yoton")
    ctx = contexts()
    conn = ctx.bind("localhost:0")
    peer = peers(f"localhost:{conn.port1}")
    wait_for(lambda: conn.is_connected, TIMEOUT, "the peer")
    os.kill(peer.proc.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: has(caplog, "yoton.tcp", logging.WARNING, "(timed out)"),
            TIMEOUT,
            "the time-out record",
        )
    finally:
        os.kill(peer.proc.pid, signal.SIGCONT)
    wait_for(
        lambda: has(caplog, "yoton.tcp", logging.INFO, "receiving again"),
        TIMEOUT,
        "the recovery record",
    )


def test_packages_are_logged_at_debug_only_when_enabled(contexts, caplog, monkeypatch) -> None:
    calls: list[int] = []
    real = _routing._debug_batch

    def counted(conn, flat):
        calls.append(len(flat))
        real(conn, flat)

    monkeypatch.setattr(_routing, "_debug_batch", counted)
    a, b = contexts(2)
    port = a.bind("localhost:0").port1
    b.connect(f"localhost:{port}", timeout=TIMEOUT)
    pub, sub = yoton.PubChannel(a, "dbg"), yoton.SubChannel(b, "dbg")
    caplog.set_level(logging.INFO, logger="yoton")
    pub.send("quiet")
    assert sub.recv(TIMEOUT) == "quiet"
    assert calls == []  # DEBUG off: the batch is not even looked at
    caplog.set_level(logging.DEBUG, logger="yoton")
    pub.send("loud")
    assert sub.recv(TIMEOUT) == "loud"
    assert calls
    assert has(caplog, "yoton.tcp", logging.DEBUG, "bytes")
    assert any("slot" in m and ", 4 bytes" in m for m in messages(caplog, "yoton.tcp", 10))


# -- nothing printed; verbose -----------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import socket, subprocess, sys, yoton
    from yoton_core.testing import wait_for

    ctx = yoton.Context(verbose=int(sys.argv[1]))
    conn = ctx.bind("localhost:0")
    with socket.create_connection(("127.0.0.1", conn.port1)) as raw:  # a failed handshake
        raw.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        raw.recv(100)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, yoton; yoton.Context().connect(sys.argv[1]);"
         "sys.stdin.read()", f"localhost:{conn.port1}"],
        stdin=subprocess.PIPE,
    )
    wait_for(lambda: conn.is_connected, 15, "the peer")
    pub = yoton.PubChannel(ctx, "s")
    pub.send("hello")
    ctx.flush()
    child.kill()  # a peer's death
    child.wait()
    wait_for(lambda: not conn.is_alive, 15, "the close")
    """
)


def run_script(
    verbose: int, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(verbose)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_library_prints_nothing_without_logging_configured() -> None:
    done = run_script(0)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""  # not even the handshake failure or the dead peer


def test_verbose_1_shows_life_and_faults_on_stderr() -> None:
    done = run_script(1)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert any(line.startswith("yoton.tcp: waiting for a peer at") for line in lines)
    assert any(line.startswith("yoton.tcp: handshake failed at") for line in lines)
    assert any(line.startswith("yoton.tcp: peer connected:") for line in lines)
    assert any(line.startswith("yoton.tcp: connection") and " lost: " in line for line in lines)
    assert not any("received from" in line for line in lines)  # DEBUG needs verbose=2


def test_verbose_2_adds_package_detail() -> None:
    done = run_script(2)
    assert done.returncode == 0, done.stderr
    assert "yoton.tcp: received from " in done.stderr  # the peer's NEW_CONNECTION
    assert "yoton.tcp: peer connected:" in done.stderr


def test_verbose_uses_the_applications_handler_when_there_is_one() -> None:
    code = textwrap.dedent(
        """
        import logging, sys, yoton
        logging.basicConfig(stream=sys.stdout, format="APP %(name)s %(message)s")
        ctx = yoton.Context(verbose=1)
        ctx.bind("localhost:0")
        assert logging.getLogger("yoton").level == logging.INFO
        yoton.Context(verbose=0)  # a quieter context does not lower what was asked
        assert logging.getLogger("yoton").level == logging.INFO
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no second handler of ours
    assert "APP yoton.tcp waiting for a peer at" in done.stdout
