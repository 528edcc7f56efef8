"""pytest fixtures for testing yoton code in one process (entry point ``pytest11``).

Installed with yoton, so any project's tests can use them without a
``conftest.py``:

* ``yoton_inproc_transport`` -- sets ``YOTON_TRANSPORT=inproc`` for the test,
  so code under test that binds/connects ``host:port`` addresses without a
  scheme runs in-process, with no sockets.
* ``yoton_contexts`` -- a factory: ``a, b, c = yoton_contexts(3)`` returns
  contexts connected in a chain (a-b, b-c) over ``inproc``; all are closed
  at teardown.
* ``yoton_context_pair`` -- two connected contexts ``(a, b)``.

yoton is imported only when a fixture is used, so the plugin costs nothing in
test runs that do not use it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_counter = itertools.count(1)
CONNECT_TIMEOUT = 10.0


def _wait_connected(conn: Any) -> None:
    """Wait until the bound end saw its peer (a socket transport's handshake
    finishes on that side a moment after ``connect`` returns)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not conn.is_connected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"yoton_contexts: {conn!r} got no peer in {CONNECT_TIMEOUT} s")
        time.sleep(0.001)


@pytest.fixture
def yoton_inproc_transport(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``inproc`` the default transport of every Context for this test.

    Application code that binds and connects plain ``host:port`` addresses
    (written for TCP) then runs in this one process, with no socket and no
    port to collide with another test run. Addresses with an explicit scheme
    (``tcp://...``) are not affected. Returns ``"inproc"``.
    """
    monkeypatch.setenv("YOTON_TRANSPORT", "inproc")
    return "inproc"


@pytest.fixture
def yoton_contexts() -> Iterator[Callable[..., list[Any]]]:
    """Factory of connected contexts: ``yoton_contexts(n=2, transport="inproc")``.

    Context ``i`` binds a fresh address and context ``i + 1`` connects to it,
    so the contexts form a chain and a message from any of them reaches all.
    Every context made is closed when the test ends.
    """
    import yoton

    made: list[Any] = []

    def make(n: int = 2, transport: str = "inproc", **context_kwargs: Any) -> list[Any]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"yoton_contexts(n): n must be an int >= 1, got {n!r}")
        contexts = [yoton.Context(transport=transport, **context_kwargs) for _ in range(n)]
        made.extend(contexts)
        for left, right in itertools.pairwise(contexts):
            if transport == "inproc":
                address = f"inproc://pytest-{os.getpid()}-{next(_counter)}"
                conn = left.bind(address)
            else:
                conn = left.bind(f"{transport}://localhost:0")
                address = f"{transport}://localhost:{conn.port1}"
            right.connect(address, timeout=CONNECT_TIMEOUT)
            _wait_connected(conn)
        return contexts

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def yoton_context_pair(yoton_contexts: Callable[..., list[Any]]) -> tuple[Any, Any]:
    """Two contexts connected over ``inproc``: ``a, b = yoton_context_pair``."""
    a, b = yoton_contexts(2)
    return a, b
