"""Plugin discovery: entry points, broken plugins, run-time registration, the
the plugin page's examples (docs/plugins.md), and the errors for unknown schemes."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import yoton
import yoton_inproc
import yoton_tcp
import yoton_unix
from yoton_core.testing import CHECKS
from yoton_inproc import InprocConnection

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


def run_python(
    code: str, cwd: Path | None = None, env_extra: dict | None = None, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **(env_extra or {}))
    env.pop("YOTON_TRANSPORT", None)
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_builtins_are_registered_like_third_party_plugins():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="yoton")}
    assert eps["tcp"] == "yoton_tcp"
    assert eps["unix"] == "yoton_unix"
    assert eps["inproc"] == "yoton_inproc"
    pm = yoton.plugin_manager()
    assert pm.get_plugin("tcp") is yoton_tcp
    assert pm.get_plugin("unix") is yoton_unix
    assert pm.get_plugin("inproc") is yoton_inproc
    known = yoton.transports()
    assert known["tcp"] is yoton_tcp.TcpConnection
    assert known["unix"] is yoton_unix.UnixConnection
    assert known["inproc"] is InprocConnection


def test_the_core_imports_no_transport():
    result = run_python(
        "import sys, yoton, yoton_core\n"
        "assert not {'yoton_tcp', 'yoton_unix', 'yoton_inproc', 'yoton_nats'} & set(sys.modules)\n"
        "print(sorted(yoton.transports()))\n"
    )
    assert result.returncode == 0, result.stderr
    assert "'inproc', 'nats', 'tcp', 'tls', 'unix'" in result.stdout


@pytest.mark.parametrize("typo, meant", [("tpc", "tcp"), ("unx", "unix"), ("inprocc", "inproc")])
def test_unknown_scheme_lists_installed_and_suggests_closest(typo, meant):
    with pytest.raises(yoton.TransportNotFoundError) as info:
        yoton.Context().bind(f"{typo}://localhost:0")
    text = str(info.value)
    assert f"Unknown transport scheme {typo!r}" in text
    assert re.search(r"installed schemes: .*inproc.*tcp.*unix", text), text
    assert f"Did you mean {meant!r}?" in text
    assert isinstance(info.value, ValueError)
    with pytest.raises(yoton.TransportNotFoundError, match=f"Did you mean {meant!r}"):
        yoton.Context(transport=typo)


def test_unknown_scheme_from_the_environment(monkeypatch):
    monkeypatch.setenv("YOTON_TRANSPORT", "udp")
    with pytest.raises(yoton.TransportNotFoundError, match="installed schemes: .*tcp"):
        yoton.Context().bind("localhost:0")


def _broken_plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    dist = site / "broken_yoton_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-yoton-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text("[yoton]\nbroken = yoton_broken_plugin\n")
    (site / "yoton_broken_plugin.py").write_text(
        'raise ImportError("needs libfoo, which is not installed")\n'
    )
    return site


def test_a_plugin_that_fails_to_import_breaks_only_its_scheme(tmp_path):
    site = _broken_plugin_site(tmp_path)
    code = textwrap.dedent(
        """
        import yoton
        known = yoton.transports()
        assert {"tcp", "unix", "inproc"} <= set(known) and "broken" not in known, known
        for scheme in ("tcp", "unix", "inproc"):   # the others keep working
            a, b = yoton.Context(), yoton.Context()
            conn = a.bind(scheme + "://localhost:0")
            b.connect(scheme + "://localhost:%d" % conn.port1, timeout=10)
            sub = yoton.SubChannel(b, "t")
            yoton.PubChannel(a, "t").send("ok " + scheme)
            print(sub.recv(10.0))
            a.close(); b.close()
        for attempt in (lambda: yoton.Context().bind("broken://localhost:0"),
                        lambda: yoton.Context(transport="broken")):
            try:
                attempt()
            except yoton.PluginLoadError as exc:
                assert isinstance(exc, ImportError)
                print("ERROR", exc)
        """
    )
    result = run_python(code, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["ok tcp", "ok unix", "ok inproc"]
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 2
    for line in errors:
        assert "plugin 'broken'" in line
        assert "yoton_broken_plugin" in line
        assert "ImportError: needs libfoo, which is not installed" in line


def _plugin_site(tmp_path: Path, name: str, module_code: str) -> Path:
    """A directory that, put on ``sys.path``, installs a plugin through a real
    ``yoton`` entry point (a ``.dist-info`` with ``entry_points.txt``)."""
    site = tmp_path / "site"
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[yoton]\n{name} = yoton_{name}\n")
    (site / f"yoton_{name}.py").write_text(textwrap.dedent(module_code))
    return site


_TCP_VARIANTS = {
    # The subclass made inside the hook: yoton.TcpConnection is asked for while
    # discovery runs this very hook.
    "in_hook": """
        import yoton

        @yoton.hookimpl
        def yoton_connection_types():
            class MyConn(yoton.TcpConnection):
                scheme = "mytcp"
            assert "tcp" in yoton.transports()  # any public name, even this one
            return [MyConn]
        """,
    # The subclass made by the module's body: asked for while discovery imports it.
    "in_module": """
        import yoton

        class MyConn(yoton.TcpConnection):
            scheme = "mytcp"

        @yoton.hookimpl
        def yoton_connection_types():
            return [MyConn]
        """,
}


@pytest.mark.parametrize("where", sorted(_TCP_VARIANTS))
@pytest.mark.parametrize("imported_first", [False, True], ids=["discovered", "imported_first"])
def test_a_plugin_may_subclass_yoton_tcpconnection_while_discovered(
    tmp_path, where, imported_first
):
    # Discovery must not re-enter itself (it recursed until RecursionError), and a
    # plugin module the user imports first must not be registered half made.
    site = _plugin_site(tmp_path, "mytcp", _TCP_VARIANTS[where])
    code = textwrap.dedent(
        f"""
        {"import yoton_mytcp" if imported_first else ""}
        import yoton
        known = yoton.transports()
        assert {{"tcp", "unix", "inproc", "mytcp"}} <= set(known), known
        assert issubclass(known["mytcp"], yoton.TcpConnection), known["mytcp"].__mro__
        a, b = yoton.Context(), yoton.Context()
        conn = a.bind("mytcp://localhost:0")
        assert type(conn).__name__ == "MyConn", type(conn)  # (a hook may make it anew)
        b.connect("mytcp://localhost:%d" % conn.port1, timeout=10)
        sub = yoton.SubChannel(b, "t")
        yoton.PubChannel(a, "t").send("over my tcp")
        print(sub.recv(10.0))
        a.close(); b.close()
        """
    )
    result = run_python(code, env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "over my tcp"


class MemoryConnection(InprocConnection):
    """A run-time plugin for the tests: inproc under another scheme."""

    scheme = "memtest"


class _MemoryPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self):
        return [MemoryConnection]


class _BadPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self):
        return [object]


@pytest.fixture
def registered():
    pm = yoton.plugin_manager()
    added = []

    def register(plugin):
        pm.register(plugin)
        added.append(plugin)

    yield register
    for plugin in added:
        pm.unregister(plugin)


def test_register_a_plugin_at_run_time(registered):
    assert "memtest" not in yoton.transports()
    registered(_MemoryPlugin())
    assert yoton.transports()["memtest"] is MemoryConnection
    a, b = yoton.Context(), yoton.Context(transport="memtest")
    try:
        a.bind("memtest://rt")
        conn = b.connect("rt", timeout=TIMEOUT)  # no scheme: the context's default
        assert isinstance(conn, MemoryConnection)
        sub = yoton.SubChannel(b, "t")
        yoton.PubChannel(a, "t").send("via a run-time plugin")
        assert sub.recv(TIMEOUT) == "via a run-time plugin"
    finally:
        a.close()
        b.close()


def test_a_plugin_returning_a_non_connection_is_named(registered):
    registered(_BadPlugin())
    with pytest.raises(TypeError, match="expected Connection subclasses"):
        yoton.transports()


def _page_blocks(page: str) -> dict[str, str]:
    """``{file name: code}`` for the fenced blocks of a documentation page whose
    first line is ``# <file name>``."""
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(# (\S+)\n.*?)```", text, flags=re.S)
    return {name: code for code, name in blocks}


def test_readme_plugin_example_runs_end_to_end(tmp_path):
    files = _page_blocks("plugins.md")
    assert set(files) == {
        "yoton_loopback.py",
        "use_loopback.py",
        "test_yoton_loopback.py",
        "yoton_mailbox.py",
        "use_mailbox.py",
        "test_yoton_mailbox.py",
        "yoton_pipes.py",
        "use_pipes.py",
    }
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    # Build + register + pass traffic.
    used = run_python("", cwd=tmp_path, args=("use_loopback.py",))
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "hello over my own transport"
    # The conformance kit, as a plugin author runs it.
    tested = run_python(
        "",
        cwd=tmp_path,
        args=("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_yoton_loopback.py"),
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert f"{len(CHECKS)} passed" in tested.stdout, tested.stdout


def test_readme_non_stream_plugin_runs_end_to_end_and_passes_the_kit(tmp_path):
    """The plugin page's transport without a byte stream (a queue per direction),
    built only on yoton.transport, carries traffic and passes the conformance
    kit (the two byte-level checks are skipped, with their reasons)."""
    files = _page_blocks("plugins.md")
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    used = run_python("", cwd=tmp_path, args=("use_mailbox.py",))
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "hello through a mailbox"
    tested = run_python(
        "",
        cwd=tmp_path,
        args=("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_yoton_mailbox.py"),
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert f"{len(CHECKS) - 2} passed, 2 skipped" in tested.stdout, tested.stdout
    assert "moves packages, not bytes" in tested.stdout, tested.stdout


PIPES_KIT = """
import yoton, yoton_pipes
from yoton_core.testing import run_transport_conformance

yoton.plugin_manager().register(yoton_pipes)
for check, result in run_transport_conformance("pipe").items():
    print(check, result)
"""


def test_the_plugin_page_transport_read_by_the_core_runs_and_passes_the_kit(tmp_path):
    """The plugin page's transport that lets the core read its pipes
    (``engine().watch_socket``), built only on yoton.transport: its requests
    are answered, a waiting thread read a pipe itself, and it passes the
    conformance kit (the byte-level and peer-death checks skipped)."""
    files = _page_blocks("plugins.md")
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    used = run_python("", cwd=tmp_path, args=("use_pipes.py",))
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["5", "55", "True"], used.stdout
    assert not used.stderr, used.stderr  # nothing logged or raised in a thread
    kit = run_python(PIPES_KIT, cwd=tmp_path)
    assert kit.returncode == 0, kit.stdout + kit.stderr
    results = dict(line.split(" ", 1) for line in kit.stdout.splitlines())
    assert len(results) == len(CHECKS), results
    skipped = {k for k, v in results.items() if v.startswith("skipped")}
    assert skipped == {"peer_death", "bad_input"}, results
    assert not kit.stderr, kit.stderr
