"""The Unix-socket transport: address forms, the private runtime directory,
socket permissions, stale and live socket files."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

import yoton
import yoton_unix
from yoton_core.testing import wait_for
from yoton_unix import _paths

TIMEOUT = 10.0


def test_host_port_form_maps_into_private_dir(rundir, contexts):
    a, b = contexts(2)
    conn = a.bind("unix://localhost:chat")
    port = yoton.port_hash("chat")
    path = rundir / f"127.0.0.1-{port}.sock"
    assert isinstance(conn, yoton_unix.UnixConnection)
    assert (conn.hostname1, conn.port1) == (str(path), port)
    assert stat.S_IMODE(rundir.stat().st_mode) == 0o700
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    # The same address spelled differently reaches the same socket.
    other = b.connect(f"unix://127.0.0.1:{port}", timeout=TIMEOUT)
    assert (other.hostname2, other.port2) == (str(path), port)
    wait_for(lambda: conn.is_connected, TIMEOUT, "the peer")
    # Once the peer is in, the listener is gone and so is its file.
    assert not path.exists()


def test_name_and_absolute_path_forms(rundir, contexts, tmp_path):
    a, b = contexts(2)
    named = a.bind("unix://worker")
    assert (named.hostname1, named.port1) == (str(rundir / "worker.sock"), 0)
    b.connect("unix://worker", timeout=TIMEOUT)
    sock_path = tmp_path / "explicit.sock"
    explicit = a.bind(f"unix://{sock_path}")
    assert explicit.hostname1 == str(sock_path) and explicit.port1 == 0
    assert stat.S_IMODE(sock_path.lstat().st_mode) == 0o600
    c = b.connect(f"unix://{sock_path}", timeout=TIMEOUT)
    assert c.hostname2 == str(sock_path)
    sub = yoton.SubChannel(a, "t")
    yoton.PubChannel(b, "t").send("over two unix links")
    assert sub.recv(TIMEOUT) == "over two unix links"


def test_port_zero_picks_a_free_port(rundir, contexts):
    a, b = contexts(2)
    conn = a.bind("unix://localhost:0")
    assert 1024 <= conn.port1 <= 65535
    assert conn.hostname1 == str(rundir / f"127.0.0.1-{conn.port1}.sock")
    b.connect(f"unix://localhost:{conn.port1}", timeout=TIMEOUT)


def test_max_tries_uses_the_tcp_port_offsets(rundir, contexts):
    a = contexts()
    first = a.bind("unix://localhost:job", max_tries=4)
    second = a.bind("unix://localhost:job", max_tries=4)
    third = a.bind("unix://localhost:job", max_tries=4)
    base = yoton.port_hash("job")
    assert [first.port1, second.port1, third.port1] == [base, base + 1, base + 2]
    with pytest.raises(OSError, match="address in use: a live yoton peer"):
        a.bind("unix://localhost:job")
    with pytest.raises(OSError, match="Could not bind to any of the 2 ports tried"):
        a.bind("unix://localhost:job", max_tries=2)


def test_close_while_waiting_removes_the_file(rundir, contexts):
    a = contexts()
    conn = a.bind("unix://gone")
    path = rundir / "gone.sock"
    assert path.exists()
    conn.close()
    assert conn.close_reason == "Closed on command."
    assert not path.exists()
    again = a.bind("unix://gone")  # and the name can be used again at once
    assert again.is_waiting and path.exists()


def _run_binder(address: str) -> subprocess.Popen:
    code = (
        "import sys, yoton\n"
        "ctx = yoton.Context()\n"
        "conn = ctx.bind(sys.argv[1])\n"
        "sub = yoton.SubChannel(ctx, 'ping')\n"
        "print('READY', flush=True)\n"
        "print(sub.recv(30.0), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def test_stale_socket_of_a_dead_process_is_cleaned_up(rundir, contexts):
    proc = _run_binder("unix://stale")
    assert proc.stdin is not None and proc.stdout is not None  # (pipes)
    path = rundir / "stale.sock"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    assert stat.S_ISSOCK(path.lstat().st_mode)  # left behind by the dead process
    a, b = contexts(2)
    conn = a.bind("unix://stale")
    assert conn.is_waiting
    b.connect("unix://stale", timeout=TIMEOUT)
    wait_for(lambda: conn.is_connected, TIMEOUT, "a peer on the cleaned-up address")


def test_live_socket_is_never_stolen(rundir, contexts):
    proc = _run_binder("unix://busy")
    assert proc.stdin is not None and proc.stdout is not None  # (pipes)
    try:
        a = contexts()
        with pytest.raises(OSError, match="address in use: a live yoton peer is bound at .*busy"):
            a.bind("unix://busy")
        # The live owner still serves: a peer can connect and talk to it.
        b = contexts()
        b.connect("unix://busy", timeout=TIMEOUT)
        yoton.PubChannel(b, "ping").send("still mine")
        assert proc.stdout.readline().strip() == "still mine"
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_a_file_that_is_not_a_socket_is_refused(rundir, contexts):
    a = contexts()
    a.bind("unix://x").close()  # creates the runtime dir
    victim = rundir / "precious.sock"
    victim.write_text("data")
    with pytest.raises(FileExistsError, match="not a socket"):
        a.bind("unix://precious")
    assert victim.read_text() == "data"


def test_insecure_runtime_dir_is_refused(rundir, contexts):
    rundir.mkdir(mode=0o755)
    os.chmod(rundir, 0o755)
    with pytest.raises(PermissionError, match="mode is 0755, expected 0700"):
        contexts().bind("unix://a")


def test_runtime_dir_of_another_user_is_refused(rundir, contexts, monkeypatch):
    rundir.mkdir(mode=0o700)
    real_uid = os.getuid()
    # XDG_RUNTIME_DIR itself must be ours, so pretend to be someone else only
    # after that choice: the yoton dir is then "owned by another uid".
    monkeypatch.setattr(_paths.os, "getuid", lambda: real_uid + 1)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rundir.parent))
    monkeypatch.setattr(_paths.tempfile, "gettempdir", lambda: str(rundir.parent.parent))
    fallback = rundir.parent.parent / f"yoton-{real_uid + 1}"
    fallback.mkdir(mode=0o700)
    with pytest.raises(PermissionError, match=f"owned by uid {real_uid}, not by us"):
        _paths.runtime_dir()


def test_symlinked_runtime_dir_is_refused(rundir, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    rundir.symlink_to(target)
    with pytest.raises(PermissionError, match="not a directory"):
        _paths.runtime_dir()


@pytest.mark.parametrize("xdg", ["relative/dir", "/nonexistent/yoton-test", "someone else's"])
def test_unusable_xdg_dir_falls_back_to_tmp(tmp_path, monkeypatch, xdg):
    if xdg == "someone else's":
        if os.getuid() == 0:
            other = tmp_path / "other"
            other.mkdir()
            os.chown(other, 12345, -1)
            xdg = str(other)
        else:
            xdg = "/"  # owned by root
    monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
    monkeypatch.setattr(_paths.tempfile, "gettempdir", lambda: str(tmp_path))
    assert _paths.runtime_dir() == str(tmp_path / f"yoton-{os.getuid()}")
    assert stat.S_IMODE(os.stat(_paths.runtime_dir()).st_mode) == 0o700


@pytest.mark.parametrize(
    "address, words",
    [
        ("unix://", "non-empty name"),
        ("unix://a/b", "without '/'"),
        ("unix://..", "without '/'"),
        ("unix:///" + "x" * 200, "longer than"),
        ("unix://localhost:", "empty port"),
        ("unix://a/b:chat", "without '/'"),
    ],
)
def test_bad_addresses_say_what_is_wrong(rundir, contexts, address, words):
    with pytest.raises(ValueError, match=words):
        contexts().bind(address)


def test_connect_to_nobody_is_refused(rundir, contexts):
    with pytest.raises(ConnectionRefusedError, match="Cannot connect to .*nobody.sock"):
        contexts().connect("unix://nobody", timeout=0.2)


def test_plugin_is_a_thin_stream_connection():
    assert issubclass(yoton_unix.UnixConnection, yoton.StreamConnection)
    assert yoton.transports()["unix"] is yoton_unix.UnixConnection
    assert socket.AF_UNIX  # the platform has Unix sockets
