"""Where Unix sockets live, and binding one safely.

Kept apart from the connection class so that the transport itself stays a
few lines; everything here is plain blocking file-system and socket code.

* Addresses: ``/abs/path.sock`` (from ``unix:///abs/path.sock``), ``name``
  (``unix://name`` -> ``<runtime dir>/name.sock``) and ``host:port``
  (``<runtime dir>/<host>-<port>.sock``, with the host and port parsed exactly
  like TCP, so ``localhost:chat`` names the same place in every process).
* The runtime directory is private: ``$XDG_RUNTIME_DIR/yoton`` when that
  directory is ours, else ``<tmp>/yoton-<uid>``; created 0700, and refused
  when it is not a real directory owned by us with no group/other access
  (someone else could otherwise plant or reach our sockets).
* A socket file left by a dead process is removed; a live one is never
  stolen. The check (connect: refused means stale) and the re-bind happen
  under an ``flock`` of the directory, so two processes cleaning up the same
  stale file cannot remove each other's fresh socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from yoton import InvalidArgumentError
from yoton.transport import bind_port_offsets, parse_host_port

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "UnixTarget",
    "runtime_dir",
    "parse_unix_address",
    "open_unix_listener",
    "remove_if_ours",
    "MAX_PATH_BYTES",
]

#: sun_path holds 108 bytes on Linux (104 on macOS), including the final NUL.
MAX_PATH_BYTES = 103
#: How long the liveness probe of an existing socket file may take.
PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class UnixTarget:
    """A parsed unix address. ``path`` is None for ``host:0`` (any free port)."""

    path: str | None
    host: str = ""
    port: int = 0


def runtime_dir() -> str:
    """Return (creating it if needed) the private directory for named sockets.

    Raises:
        PermissionError: the directory exists but is not private to us.
    """
    uid = os.getuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return _ensure_private(os.path.join(xdg, "yoton"))
    return _ensure_private(os.path.join(tempfile.gettempdir(), f"yoton-{uid}"))


def _ensure_private(path: str) -> str:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    problem = ""
    if not stat.S_ISDIR(st.st_mode):
        problem = "it is not a directory (a symlink or a file?)"
    elif st.st_uid != os.getuid():
        problem = f"it is owned by uid {st.st_uid}, not by us (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"its mode is {stat.S_IMODE(st.st_mode):04o}, expected 0700"
    if problem:
        raise PermissionError(
            errno.EACCES,
            f"yoton refuses to use {path} for Unix sockets: {problem}. Remove it, or fix it "
            "with 'chmod 700', or use an explicit 'unix:///abs/path.sock' address.",
        )
    return path


def _check_part(part: str, address: str, what: str) -> None:
    if not part or "/" in part or "\0" in part or part in (".", ".."):
        raise InvalidArgumentError(
            f"Invalid unix address {address!r}: the {what} {part!r} must be a non-empty "
            "name without '/' (use 'unix:///abs/path.sock' for a path)."
        )


def _check_path(path: str, address: str) -> str:
    if "\0" in path:
        raise InvalidArgumentError(
            f"Invalid unix address {address!r}: the path contains a NUL byte."
        )
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise InvalidArgumentError(
            f"Invalid unix address {address!r}: the socket path {path!r} is longer than "
            f"{MAX_PATH_BYTES} bytes, the limit of Unix socket addresses; use a shorter one."
        )
    return path


def parse_unix_address(address: str) -> UnixTarget:
    """Parse a unix address with its scheme removed; see the module docstring."""
    if not isinstance(address, str):
        raise InvalidArgumentError(
            f"address must be a str like 'unix://name', got {type(address).__name__}"
        )
    if address.startswith("/"):
        return UnixTarget(_check_path(address, address))
    if ":" in address:
        host, port = parse_host_port(address)
        _check_part(host, address, "host")
        if port == 0:
            return UnixTarget(None, host, 0)
        return UnixTarget(_check_path(_host_port_path(host, port), address), host, port)
    _check_part(address, address, "name")
    return UnixTarget(_check_path(os.path.join(runtime_dir(), f"{address}.sock"), address))


def _host_port_path(host: str, port: int) -> str:
    return os.path.join(runtime_dir(), f"{host}-{port}.sock")


def open_unix_listener(
    target: UnixTarget, max_tries: int, backlog: int
) -> tuple[socket.socket, str, int]:
    """Bind and listen; return ``(socket, path, port)``.

    ``host:port`` addresses try the same port offsets as TCP
    (``max_tries``); ``host:0`` picks a port whose socket file is free.
    """
    offsets = bind_port_offsets(max_tries)
    if target.path is not None and not target.port:
        return _bind_one(target.path, backlog), target.path, 0
    if target.port:
        ports = [target.port + o for o in offsets if target.port + o <= 65535]
    else:
        ports = random.sample(range(49152, 65536), 64)
    last: OSError | None = None
    for port in ports:
        path = _host_port_path(target.host, port)
        if not target.port and os.path.lexists(path):
            continue
        try:
            return _bind_one(path, backlog), path, port
        except OSError as exc:
            if len(offsets) == 1 and target.port:
                raise
            last = exc
    raise OSError(
        errno.EADDRINUSE,
        f"Could not bind to any of the {len(ports)} ports tried, starting with "
        f"{ports[0]} ({last}).",
    )


@contextlib.contextmanager
def _dir_lock(directory: str, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive flock on ``directory`` (best effort)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def _bind_one(path: str, backlog: int) -> socket.socket:
    with _dir_lock(os.path.dirname(path)):
        _remove_if_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        try:
            # Nobody can connect before listen(), so there is no window in
            # which the socket is reachable with looser permissions.
            os.chmod(path, 0o600)
            sock.listen(backlog)
        except OSError:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    return sock


def _remove_if_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST,
            f"Cannot bind a Unix socket at {path}: a file that is not a socket is in the "
            "way. Remove it or choose another address.",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody listens: left by a dead process
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except FileNotFoundError:
        return
    except TimeoutError:  # a listener with a full backlog is alive
        pass
    except OSError as exc:
        raise OSError(
            exc.errno, f"Cannot bind {path}: could not tell whether its socket is in use ({exc})."
        ) from exc
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"address in use: a live yoton peer is bound at {path}")


def file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or None when it does not exist."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_if_ours(path: str, identity: tuple[int, int] | None) -> None:
    """Unlink ``path`` if it is still the socket file we bound (never someone else's)."""
    if identity is None:
        return
    with _dir_lock(os.path.dirname(path), blocking=False):
        if file_identity(path) == identity:
            with contextlib.suppress(OSError):
                os.unlink(path)
