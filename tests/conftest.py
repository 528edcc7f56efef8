"""Suite-wide pytest options and markers.

``--soak-seconds`` (or the environment variable ``YOTON_SOAK_SECONDS``) sets how
long the churn phase of ``tests/test_soak.py`` runs; the default keeps it near a
minute so the soak test runs in every CI run. Give it more for a real soak::

    .venv/bin/python -m pytest tests/test_soak.py --soak-seconds 1800

``-m "not soak"`` leaves it out.

Fixtures shared by several test modules live in plugin modules listed in
``pytest_plugins`` (``reqrep_helpers``: ``made_contexts``, ``pair`` and
``clean_event_queue``), so tests get them without importing them; the factory
of contexts most modules use, ``contexts``, is defined here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import yoton

pytest_plugins = ["reqrep_helpers"]

DEFAULT_SOAK_SECONDS = 55.0


def pytest_configure(config: pytest.Config) -> None:
    """The soak marker; and Ctrl-C reaches the suite and its children, even in the background.

    A shell starts a background job (``cmd &``) with SIGINT ignored; Python then
    installs no handler, and every child inherits the ignored signal across
    exec. Pyzo's kernel (tests/test_pyzo_kernel.py) is interrupted with SIGINT
    by its IDE side, so run that way all five kernel tests failed waiting for a
    KeyboardInterrupt. Restoring the default here is what an interactive shell
    gives the suite anyway.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # (an int, not the enum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "soak: long-running multi-process soak test (runs by default, bounded)"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=None,
        help="churn phase of the soak test in seconds "
        f"(default: $YOTON_SOAK_SECONDS or {DEFAULT_SOAK_SECONDS:g})",
    )


def _soak_seconds(config: pytest.Config) -> float:
    value = config.getoption("--soak-seconds")
    if value is None:
        value = float(os.environ.get("YOTON_SOAK_SECONDS", DEFAULT_SOAK_SECONDS))
    if value <= 0:
        raise ValueError(f"--soak-seconds / YOTON_SOAK_SECONDS must be > 0, got {value!r}")
    return float(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The suite-wide timeout (pyproject) is too short for a long soak.
    seconds = _soak_seconds(config)
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(pytest.mark.timeout(2 * seconds + 120))


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """How long the soak test's churn phase runs (see the module docstring)."""
    return _soak_seconds(request.config)


@pytest.fixture
def contexts() -> Iterator[Callable[..., Any]]:
    """A factory of contexts, all closed after the test.

    ``contexts()`` makes one, ``contexts(n)`` a list of ``n``; keyword arguments
    go to the class, ``cls`` (default :class:`yoton.Context`, e.g.
    :class:`yoton.SimpleSocket`) is what is made.
    """
    made: list[yoton.Context] = []

    def make(n: int = 1, *, cls: Callable[..., Any] = yoton.Context, **kw: Any) -> Any:
        new = [cls(**kw) for _ in range(n)]
        made.extend(new)
        return new if n > 1 else new[0]

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where unix-scheme sockets go, under a fresh private ``XDG_RUNTIME_DIR``.

    Tests never touch the user's real sockets, and child processes inherit
    the environment. The ``yoton`` directory itself is made by the transport.
    """
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    return xdg / "yoton"
