"""Unix-socket permissions that tests/test_unix.py does not check: a permissive
umask does not loosen them, and another user really cannot connect."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile

import pytest

import yoton

pytestmark = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX only")

TIMEOUT = 10.0


def test_permissive_umask_does_not_loosen_modes(rundir, tmp_path) -> None:
    old = os.umask(0)
    ctx = yoton.Context()
    try:
        named = ctx.bind("unix://open-umask")
        explicit = ctx.bind(f"unix://{tmp_path / 'explicit.sock'}")
        assert stat.S_IMODE(rundir.stat().st_mode) == 0o700
        for conn in (named, explicit):
            st = os.lstat(conn.hostname1)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    finally:
        os.umask(old)
        ctx.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
# Forking a threaded process is what the test is about (Python 3.12+ warns).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_another_user_cannot_connect() -> None:
    """The socket file mode is what keeps other users out: check it with one.

    Root bypasses file permissions, so the client runs as ``nobody``, against a
    socket in a directory it may enter (0711) so that only the socket's own
    0600 stands in its way.
    """
    # Not under tmp_path: pytest's base directory is 0700, which alone would
    # keep the other user out.
    shared = tempfile.mkdtemp(prefix="yoton-perm-")
    os.chmod(shared, 0o711)
    path = os.path.join(shared, "s.sock")
    try:
        check_modes_keep_nobody_out(path)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def check_modes_keep_nobody_out(path: str) -> None:
    ctx = yoton.Context()
    try:
        conn = ctx.bind(f"unix://{path}")
        assert connect_as_nobody(path) == "refused"
        assert conn.is_waiting  # the attempt never reached the listener
        os.chmod(path, 0o666)  # the same client gets through once the mode allows it
        assert connect_as_nobody(path) == "connected"
    finally:
        ctx.close()


def connect_as_nobody(path: str) -> str:
    """Fork, drop to uid/gid 65534, try to connect (a fork: nobody may not be
    allowed to execute this venv's interpreter)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 2
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            s.connect(path)
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "connected", 13: "refused"}.get(os.waitstatus_to_exitcode(status), "error")
