"""The public transport API (``yoton.transport``): plugins built on public names only.

* An AST check: no plugin package (``yoton_*`` beside ``yoton_core``, today
  yoton_tcp, yoton_unix, yoton_inproc, and any added later) nor the plugin page's
  example plugins imports a private ``yoton_core`` module or reads a private
  attribute it does not define itself (``peer._context._route``).
* A plugin's private names never collide with the core's: connection classes
  that define ``_reader``, ``_outq``, ``_status``, ... work, over a stream and
  without one; redefining a name the base provides is refused at class creation.
* Slot interest, the engine access, the header helpers.
"""

from __future__ import annotations

import ast
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import yoton
import yoton.transport
import yoton_core.transport
from yoton.transport import (
    HEADER_SIZE,
    Connection,
    ProtocolError,
    engine,
    pack_header,
    unpack_header,
)
from yoton_core.testing import recv_n, run_transport_conformance, wait_for
from yoton_inproc import InprocConnection
from yoton_tcp import TcpConnection

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0

#: What a plugin may import from yoton: the facade and the public modules.
ALLOWED_MODULES = {"yoton", "yoton.transport", "yoton_core.transport", "yoton_core.testing"}


# -- the AST check -------------------------------------------------------------------


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(trees: list[ast.Module]) -> set[str]:
    """Private names a package defines itself: its functions, classes, class and
    module attributes, ``self._x = ...`` assignments and parameters."""
    own: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return {name for name in own if _is_private(name)}


def private_uses(sources: dict[str, str]) -> list[str]:
    """Where a plugin's ``{file name: source}`` reaches into yoton's privates.

    Returns one line per offence: an import of anything from ``yoton_core`` or
    ``yoton`` but the public modules, or an attribute ``x._name`` whose
    ``_name`` the plugin does not define itself.
    """
    trees = {name: ast.parse(src, filename=name) for name, src in sources.items()}
    own = _own_names(list(trees.values()))
    found: list[str] = []
    for fname, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{fname}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top in ("yoton", "yoton_core") and alias.name not in ALLOWED_MODULES:
                        found.append(f"{where}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split(".")[0]
                if top not in ("yoton", "yoton_core"):
                    continue
                if node.module not in ALLOWED_MODULES:
                    found.append(f"{where}: from {node.module} import ...")
                for alias in node.names:
                    if _is_private(alias.name) or alias.name in ("yoton_core", "_"):
                        found.append(f"{where}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Attribute) and _is_private(node.attr):
                if node.attr not in own:
                    found.append(f"{where}: .{node.attr} (not defined by the plugin)")
    return found


def _plugin_packages() -> list[Path]:
    return sorted(
        p
        for p in ROOT.iterdir()
        if p.name.startswith("yoton_") and p.name != "yoton_core" and (p / "__init__.py").exists()
    )


def _readme_plugins() -> dict[str, str]:
    """The example plugins of the plugin page (docs/plugins.md)."""
    body = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(# (\S+)\n.*?)```", body, flags=re.S)
    return {name: code for code, name in blocks if name.startswith("yoton_")}


def test_the_plugin_packages_are_found() -> None:
    names = {p.name for p in _plugin_packages()}
    assert {"yoton_tcp", "yoton_unix", "yoton_inproc"} <= names
    assert set(_readme_plugins()) == {"yoton_loopback.py", "yoton_mailbox.py", "yoton_pipes.py"}


@pytest.mark.parametrize("package", _plugin_packages(), ids=lambda p: p.name)
def test_plugins_use_only_public_names(package: Path) -> None:
    sources = {str(f.relative_to(ROOT)): f.read_text() for f in sorted(package.rglob("*.py"))}
    assert sources
    assert private_uses(sources) == []


@pytest.mark.parametrize("name", sorted(_readme_plugins()))
def test_readme_plugins_use_only_public_names(name: str) -> None:
    assert private_uses({name: _readme_plugins()[name]}) == []


@pytest.mark.parametrize(
    "source, offence",
    [
        ("from yoton_core._address import parse_host_port", "from yoton_core._address"),
        ("import yoton_core._engine", "import yoton_core._engine"),
        ("from yoton_core import StreamConnection", "from yoton_core import"),
        ("from yoton_core import _wire", "from yoton_core import"),
        ("from yoton.transport import _bad_control", "import _bad_control"),
        ("def f(peer):\n    peer.context._route(peer, [])", "._route"),
        ("def f(conn):\n    return conn._Connection__status", "._Connection__status"),
    ],
)
def test_the_check_finds_each_kind_of_private_use(source: str, offence: str) -> None:
    found = private_uses({"plugin.py": source})
    assert found and all(offence in f for f in found[:1]), found


def test_a_plugins_own_private_names_are_fine() -> None:
    source = (
        "from yoton.transport import Connection\n"
        "class C(Connection):\n"
        "    def _helper(self):\n"
        "        self._peer = None\n"
        "    def go(self, other):\n"
        "        other._helper()\n"
        "        return other._peer\n"
    )
    assert private_uses({"plugin.py": source}) == []


# -- the module ------------------------------------------------------------------------


def test_yoton_transport_is_the_public_module_unchanged() -> None:
    assert yoton.transport.__all__ == yoton_core.transport.__all__
    for name in yoton_core.transport.__all__:
        assert not _is_private(name)
        assert getattr(yoton.transport, name) is getattr(yoton_core.transport, name), name
    assert yoton.transport.hookimpl is yoton.hookimpl
    assert yoton.transport.Connection is yoton.Connection
    assert yoton.transport.StreamConnection is yoton.StreamConnection


def test_header_pack_and_unpack() -> None:
    header = (0x2020204E4F544F59, 12345, 7, 8, 9, 10, 3)
    data = pack_header(header)
    assert len(data) == HEADER_SIZE == 56
    assert unpack_header(b"xx" + data, 2) == header
    with pytest.raises(ProtocolError, match="bad control bytes"):
        unpack_header(b"NOTYOTON" + data[8:])
    with pytest.raises(ProtocolError, match="needs 56 bytes, got 55"):
        unpack_header(data[:-1])


def test_engine_access() -> None:
    eng = engine()
    assert eng is engine() and not eng.in_engine_thread() and not eng.in_io_thread()
    seen: list[Any] = []
    ran = threading.Event()

    def in_engine(tag: str) -> None:
        seen.append((tag, eng.in_engine_thread()))
        ran.set()

    eng.run_sync_soon(in_engine, "soon")
    assert ran.wait(TIMEOUT)

    async def task(tag: str) -> str:
        seen.append((tag, eng.in_engine_thread()))
        return tag

    assert eng.run(task, "run") == "run"
    ticks: list[float] = []
    eng.add_ticker(ticks.append)
    try:
        wait_for(lambda: len(ticks) >= 2, TIMEOUT, "two ticks")
    finally:
        eng.remove_ticker(ticks.append)  # an equal bound method removes it
    assert ticks[1] > ticks[0] and abs(ticks[1] - time.monotonic()) < 60
    assert seen == [("soon", True), ("run", True)]


def test_a_ticker_says_when_it_needs_the_next_tick_and_a_new_one_is_called_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ticker's return value is its next due time; adding a ticker wakes a sleeping engine.

    A fresh engine (not the shared one, whose other tickers keep it ticking)
    with one ticker that needs nothing for an hour, and no cap on the sleep:
    a ticker added now must still be called, and at the default cadence.
    """
    from yoton_core import _engine

    monkeypatch.setattr(_engine, "TICK_MAX_SLEEP", 3600.0)
    eng = yoton.transport.Engine()
    far: list[float] = []

    def later(now: float) -> float:
        far.append(now)
        return now + 3600.0

    eng.add_ticker(later)
    default: list[float] = []
    try:
        wait_for(lambda: len(far) >= 1, TIMEOUT, "the first tick")
        ticks = eng.statistics()["ticks"]
        eng.add_ticker(default.append)  # (returns None: every TICK_INTERVAL)
        wait_for(lambda: len(default) >= 3, TIMEOUT, "the added ticker, three times")
        assert eng.statistics()["ticks"] >= ticks + 3
        assert len(far) >= 3  # every tick calls every ticker; the due time is a lower bound
    finally:
        eng.remove_ticker(later)
        eng.remove_ticker(default.append)


# -- private names never collide -------------------------------------------------------


class OwnNamesTcp(TcpConnection):
    """A TCP plugin whose private names are those the core once used itself."""

    scheme = "ownnames"

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        self._outq = "mine"
        self._status = "mine"
        self._context = "mine"
        self._decoder = "mine"
        self._engine = "mine"
        self._sock = "mine"
        self._end_reason = "mine"
        self._send_event = "mine"
        self._closed_event = "mine"

    def _reader(self) -> str:  # crashed RepChannel workers once (_poller.borrow_wait)
        return "mine"

    def _receive(self, data: bytes) -> str:
        return "mine"

    def _tick(self, now: float) -> str:
        return "mine"

    def _push_raw(self, header: Any, data: bytes) -> str:
        return "mine"

    def _set_closed(self, reason: str) -> str:
        return "mine"


class OwnNamesInproc(InprocConnection):
    """The same without a byte stream."""

    scheme = "ownnames-inproc"

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        self._status = "mine"
        self._context = "mine"
        self._n_sent = "mine"
        self._closed_event = "mine"
        self._hostname1 = "mine"

    def _reader(self) -> str:
        return "mine"


class _OwnNamesPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self) -> list[type[Connection]]:
        return [OwnNamesTcp, OwnNamesInproc]


@pytest.fixture(scope="module")
def own_names() -> Iterator[None]:
    plugin = _OwnNamesPlugin()
    yoton.plugin_manager().register(plugin)
    yield
    yoton.plugin_manager().unregister(plugin)


@pytest.mark.parametrize("scheme", ["ownnames", "ownnames-inproc"])
def test_a_plugins_private_names_do_not_collide_with_the_core(
    own_names: None, contexts: Any, scheme: str
) -> None:
    a, b = contexts(), contexts()
    bound = a.bind(f"{scheme}://localhost:0")
    conn = b.connect(f"{scheme}://localhost:{bound.port1}", timeout=TIMEOUT)
    wait_for(lambda: bound.is_connected, TIMEOUT, "the bound end")
    assert (conn.status, conn.id2, bound.id2) == ("connected", a.id, b.id)
    # Request/reply with thread-mode workers: they wait by reading the
    # sockets themselves (borrow_wait), which once read conn._reader.
    rep = yoton.RepChannel(a, "own")
    rep.set_mode("thread")
    req = yoton.ReqChannel(b, "own")
    assert [req.echo(i).result(TIMEOUT)[0] for i in range(20)] == list(range(20))
    pub, sub = yoton.PubChannel(b, "own-news"), yoton.SubChannel(a, "own-news")
    for i in range(300):
        pub.send(str(i))
    assert recv_n(sub, 300, TIMEOUT) == [str(i) for i in range(300)]
    conn.flush(TIMEOUT)
    assert conn.stats.packages_sent >= 320
    conn.close()
    assert conn.close_reason == "Closed on command."
    assert bound.wait_closed(TIMEOUT) and bound.close_reason == "Closed from other end."
    assert conn._status == "mine" and conn.status == "closed"


def test_own_names_pass_the_conformance_kit(own_names: None) -> None:
    report = run_transport_conformance("ownnames", checks=["reqrep", "close_from_binder"])
    assert report == {"reqrep": "passed", "close_from_binder": "passed"}


@pytest.mark.parametrize("name", ["deliver", "set_closed", "closed", "is_connected", "stats"])
def test_redefining_a_provided_name_is_refused_at_class_creation(name: str) -> None:
    with pytest.raises(TypeError, match=f"{name}: '{name}' is provided by yoton's Connection"):
        type("Mine", (Connection,), {name: lambda self: None})


@pytest.mark.parametrize("name", ["send_package", "shutdown", "open_bind", "queued_count"])
def test_a_stream_plugin_may_not_redefine_what_the_stream_base_implements(name: str) -> None:
    with pytest.raises(TypeError, match=f"StreamConnection implements '{name}' itself"):
        type("Mine", (TcpConnection,), {name: lambda self: None})
    # A plain Connection subclass implements them: that is its contract.
    type("Fine", (Connection,), {name: lambda self: None})


# -- slot interest ---------------------------------------------------------------------


class SlotsInproc(InprocConnection):
    """Records the slot-interest notifications it gets."""

    scheme = "slots-inproc"

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        self.changes: list[tuple[frozenset[int], frozenset[int], int, frozenset[int]]] = []
        self.block: threading.Event | None = None

    def slots_changed(self, added: frozenset[int], removed: frozenset[int]) -> None:
        # The current set as seen from here: the channel is already registered.
        now = self.context.listened_slots()
        self.changes.append((added, removed, threading.get_ident(), now))
        if self.block is not None:
            self.block.wait(TIMEOUT)  # a broker transport waits for its subscription


class _SlotsPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self) -> list[type[Connection]]:
        return [SlotsInproc]


def test_slot_interest(contexts: Any) -> None:
    plugin = _SlotsPlugin()
    yoton.plugin_manager().register(plugin)
    try:
        a, b = contexts(), contexts()
        early = yoton.SubChannel(a, "early")
        conn = a.bind("slots-inproc://localhost:0")
        b.connect(f"slots-inproc://localhost:{conn.port1}", timeout=TIMEOUT)
        assert isinstance(conn, SlotsInproc)

        def slot_of(ch: Any) -> int:
            return int(yoton.slot_hash(ch.slot_incoming.lower()))

        early_slot = slot_of(early)
        assert a.listened_slots() == {early_slot}
        assert conn.changes == []  # nothing changed since it was made: it reads the set
        sub = yoton.SubChannel(a, "news")
        me = threading.get_ident()
        news = slot_of(sub)
        assert conn.changes == [(frozenset({news}), frozenset(), me, frozenset({early_slot, news}))]
        sub.close()
        assert conn.changes[1] == (frozenset(), frozenset({news}), me, frozenset({early_slot}))
        assert a.listened_slots() == {early_slot}
        pub = yoton.PubChannel(a, "news")  # publishers hear sync-mode replies
        assert conn.changes[2][:2] == (frozenset({slot_of(pub)}), frozenset())
        assert slot_of(pub) != news
        # The notification may block: the channel's constructor waits for it.
        conn.block = threading.Event()
        made = threading.Event()

        def make_a_channel() -> None:
            yoton.SubChannel(a, "late")
            made.set()

        maker = threading.Thread(target=make_a_channel)
        maker.start()
        wait_for(lambda: len(conn.changes) == 4, TIMEOUT, "the notification")
        assert not made.wait(0.05), "the constructor returned while the transport was busy"
        conn.block.set()
        maker.join(TIMEOUT)
        assert made.is_set() and conn.changes[3][2] == maker.ident
    finally:
        yoton.plugin_manager().unregister(plugin)


# -- congestion: what a transport reports, the context acts on -------------------------


class Recorder(Connection):
    """A transport without a peer: it records what the core asks of it."""

    scheme = "recorder"

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        self.sent: list[bytes] = []
        self.waits: list[int] = []  # threads that waited
        self.on_wait: Any = None

    def open_connect(self, address: str, timeout: float) -> None:
        self.set_established(int(address.rpartition(":")[2]), os.getpid(), hosting=False)

    def send_package(self, header: Any, payload: bytes) -> None:
        self.sent.append(payload)

    def wait_writable(self) -> None:
        self.waits.append(threading.get_ident())
        if self.on_wait is not None:
            self.on_wait()

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        self.set_closed(reason)

    def flush(self, timeout: float = 3.0) -> None:
        pass


class _RecorderPlugin:
    @yoton.hookimpl
    def yoton_connection_types(self) -> list[type[Connection]]:
        return [Recorder]


def test_congestion_makes_senders_wait_and_is_never_lost(contexts: Any) -> None:
    plugin = _RecorderPlugin()
    yoton.plugin_manager().register(plugin)
    try:
        ctx = contexts()
        b = ctx.connect("recorder://localhost:2001")  # first in the context's order
        a = ctx.connect("recorder://localhost:2002")
        assert isinstance(a, Recorder) and isinstance(b, Recorder)
        pub = yoton.PubChannel(ctx, "load")
        pub.send("free")
        assert a.waits == b.waits == []  # nobody congested: nobody waits
        a.set_congested(True)
        assert a.congested
        pub.send("congested")
        assert a.waits == [threading.get_ident()] and b.waits == []

        # While a waits, b reports congestion (as if from its IO thread), and
        # a drains: b's report must survive the context's pass over the links.
        def b_reports_a_drains() -> None:
            b.set_congested(True)
            a.set_congested(False)

        a.on_wait = b_reports_a_drains
        pub.send("b reports while a waits")
        assert len(a.waits) == 2
        pub.send("b waits")
        assert len(b.waits) == 1 and len(a.waits) == 2
        b.set_congested(False)
        pub.send("free again")
        assert len(b.waits) == 1 and len(a.waits) == 2
        assert a.sent[-1] == b.sent[-1] == b"free again"
    finally:
        yoton.plugin_manager().unregister(plugin)


def test_every_transport_name_is_in_the_reference() -> None:
    """docs/reference/plugins.md documents yoton.transport (or yoton's page does)."""
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    entries = set(re.findall(r"^:::\s*(\S+)", text, re.M))
    assert "yoton.transport" in entries
    missing = [
        name
        for name in yoton.transport.__all__
        if f"yoton.transport.{name}" not in entries
        and f"yoton.{name}" not in entries
        and f"`{name}`" not in text
    ]
    assert missing == []
