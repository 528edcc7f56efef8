"""The sans-IO layer holds no IO, and the handshake's IO lives in one driver.

* The protocol modules (framing, handshake, authentication, message types,
  hashing, the request/reply wire format, errors, argument checks) import
  neither trio, threading nor socket, directly or through the yoton_core
  modules they import: one place to read the protocol, fuzz it and test it
  without an event loop.
* The driver (``_handshake_io``) reports failures in the machines' own words:
  what the peer had sent when the deadline passed or when it hung up.
"""

from __future__ import annotations

import ast
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

import yoton
from yoton_core._auth import Authenticator, auth_eof_reason
from yoton_core.testing import wait_for

CORE = Path(yoton.__file__).resolve().parent.parent / "yoton_core"
TIMEOUT = 10.0

PROTOCOL_MODULES = [
    "_wire",
    "_bytesfill",
    "_handshake",
    "_auth",
    "_message_types",
    "_hashing",
    "_reqrep_wire",
    "_errors",
    "_block",
]
FORBIDDEN = {"trio", "threading", "socket", "select", "asyncio", "sniffio", "_thread"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """``(yoton_core modules, other top-level modules)`` that ``module`` imports at
    run time (anywhere in it, functions included; not under ``if TYPE_CHECKING``).

    The optional compiled accelerator has Cython source (``_speedups.pyx``):
    its ``import`` and ``cimport`` lines are read as text.
    """
    source = CORE / f"{module}.py"
    if not source.exists() and source.with_suffix(".pyx").exists():
        return _pyx_imports(source.with_suffix(".pyx").read_text())
    tree = ast.parse(source.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for n in ast.walk(node))
    core: set[str] = set()
    other: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "yoton_core":
                    core.add(alias.name.split(".")[1])
                else:
                    other.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ._x import y
                if node.module:
                    core.add(node.module.split(".")[0])
                else:
                    core.update(a.name for a in node.names)
            elif node.module:
                other.add(node.module.split(".")[0])
    return core, other


def _pyx_imports(text: str) -> tuple[set[str], set[str]]:
    core: set[str] = set()
    other: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("import", "cimport"):
            names = [words[1]]
        elif len(words) >= 3 and words[0] == "from" and words[2] in ("import", "cimport"):
            names = [words[1]]
        else:
            continue
        for name in names:
            if name.startswith("."):
                core.add(name.lstrip(".").split(".")[0])
            else:
                other.add(name.split(".")[0])
    return core, other


def test_the_accelerators_imports_are_read_too() -> None:
    core, other = imports_of("_speedups")
    assert not core and {"cpython", "libc"} <= other
    assert not other & FORBIDDEN


def closure(module: str) -> tuple[set[str], set[str]]:
    seen: set[str] = set()
    external: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        core, other = imports_of(name)
        external |= other
        todo.extend(core - seen)
    return seen, external


@pytest.mark.parametrize("module", PROTOCOL_MODULES)
def test_protocol_modules_import_no_io(module: str) -> None:
    modules, external = closure(module)
    assert not external & FORBIDDEN, (module, sorted(modules), sorted(external & FORBIDDEN))


def test_the_check_sees_an_io_import() -> None:
    # The check itself: the stream link is IO through and through, and its
    # yoton_core imports (the handshake driver, the poller) are found too.
    modules, external = closure("_stream_link")
    assert {"_handshake_io", "_poller", "_handshake", "_auth"} <= modules
    assert {"trio", "socket", "threading"} <= external
    assert {"trio", "threading"} <= closure("_handshake_io")[1]


# -- the driver reports the machines' own words ---------------------------------------------


def test_an_authenticator_words_a_hang_up() -> None:
    bind = Authenticator("bind", b"k", 1, 2)
    bind.receive_eof()
    assert bind.state == Authenticator.FAILED
    assert bind.error == auth_eof_reason("bind", heard=False)
    heard = Authenticator("bind", b"k", 1, 2)
    heard.receive_data(b"YOTON-AUTH1 HELLO\r\n")
    heard.receive_eof()
    assert heard.error == auth_eof_reason("bind", heard=True)
    assert "closed the connection during authentication" in (heard.error or "")
    done = Authenticator("connect", b"k", 2, 1)
    done.receive_eof()
    done.receive_eof()  # once failed, it stays as it was
    assert done.error == auth_eof_reason("connect", heard=False)


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def test_a_stalled_handshake_is_reported_with_what_arrived(contexts: Any, caplog: Any) -> None:
    a = contexts(handshake_timeout=0.3)
    conn = a.bind("tcp://localhost:0")
    with caplog.at_level(logging.WARNING, logger="yoton"), _raw(conn.port1) as s:
        s.sendall(b"YOTON!0000")  # half a line, then nothing
        wait_for(lambda: "Handshake timed out (received" in caplog.text, TIMEOUT, "the reason")
    assert "b'YOTON!0000'" in caplog.text
    assert conn.is_waiting


def test_a_stalled_connect_reports_what_arrived(contexts: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]

        def serve() -> None:
            peer, _ = listener.accept()
            peer.sendall(b"YOTON!00")  # and then silence
            while peer.recv(100):  # (until the client gives up)
                pass
            peer.close()

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with pytest.raises(yoton.TimeoutError, match=r"Handshake timed out \(received b'YOTON!00'"):
            contexts(handshake_timeout=0.3).connect(f"tcp://localhost:{port}", timeout=TIMEOUT)
        server.join(TIMEOUT)
    finally:
        listener.close()


def test_a_hang_up_during_authentication_is_worded_by_the_authenticator(
    contexts: Any, caplog: Any
) -> None:
    a = contexts(auth_key="k")
    conn = a.bind("tcp://localhost:0")
    with caplog.at_level(logging.WARNING, logger="yoton"):
        with _raw(conn.port1) as s:
            s.sendall(b"YOTON!%016x.%d\r\nYOTON-AUTH1 HELLO\r\n" % (0xABC, os.getpid()))
            got = b""
            while b"CHALLENGE" not in got:
                got += s.recv(4096)
        # hung up after the HELLO: the authenticator had heard from it
        expected = auth_eof_reason("bind", heard=True)
        wait_for(lambda: expected in caplog.text, TIMEOUT, "the reason")
    assert conn.is_waiting
