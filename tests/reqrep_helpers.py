"""Shared pieces of the req/rep tests (test_reqrep.py, test_reqrep_failures.py).

Also a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``), so its
fixtures reach the tests without an import -- importing a fixture by name into
a test module that then takes it as an argument trips ruff's F811:

* ``made_contexts`` -- a list; every context put in it is closed after the test;
* ``star`` -- ``star(n)``: a hub and ``n`` contexts connected to it over TCP;
* ``pair`` -- two contexts, the second connected to the first over TCP;
* ``clean_event_queue`` -- an empty, unembedded yoton event queue before and
  after the test; a module opts in with
  ``pytestmark = pytest.mark.usefixtures("clean_event_queue")``.

A test module that defines its own ``pair`` (several do, with other meanings)
overrides it for its tests, as pytest does for any fixture.
Plain helpers (``Calc``, ``join``, ...) are imported as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

import yoton
from yoton_core._eventloop import app
from yoton_core.testing import wait_for as wait_until  # noqa: F401 - shared helper

GENEROUS = 10.0


@pytest.fixture
def clean_event_queue() -> Iterator[None]:
    app.embed_event_loop(None)
    app.process_events()
    yield
    app.process_events()


@pytest.fixture
def made_contexts() -> Iterator[list[yoton.Context]]:
    """A list a test appends the contexts it made to; all closed after the test."""
    made: list[yoton.Context] = []
    yield made
    for ctx in made:
        ctx.close()


@pytest.fixture
def star(made_contexts: list[yoton.Context]) -> Callable[[int], list[yoton.Context]]:
    """``star(n)``: a hub and ``n`` contexts joined to it, as ``[hub, *others]``."""

    def make(n: int) -> list[yoton.Context]:
        hub, *others = (yoton.Context() for _ in range(n + 1))
        made_contexts.extend([hub, *others])
        for ctx in others:
            join(hub, ctx)
        return [hub, *others]

    return make


@pytest.fixture
def pair(made_contexts: list[yoton.Context]) -> tuple[yoton.Context, yoton.Context]:
    a, b = yoton.Context(), yoton.Context()
    made_contexts += [a, b]
    join(a, b)
    return a, b


def join(a: yoton.Context, b: yoton.Context) -> None:
    """Connect b to a over TCP (a binds port 0)."""
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=GENEROUS)


class Calc(yoton.RepChannel):
    """A replier with a few methods; ``hold`` blocks until ``release`` is set."""

    def __init__(self, context, slot="calc", mode="thread"):
        super().__init__(context, slot)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[object] = []
        self.threads: set[int] = set()
        self.secret_value = "s3cret"
        self.set_mode(mode)

    def add(self, a, b):
        self.threads.add(threading.get_ident())
        return a + b

    def divide(self, a, b):
        return a / b

    def kw(self, *args, **kwargs):
        return [list(args), kwargs]

    def record(self, value):
        self.calls.append(value)
        return value

    def hold(self, value):
        self.calls.append(value)
        self.entered.set()
        self.release.wait(GENEROUS)
        return value

    def bad_result(self):
        return {1, 2, 3}

    def error_tuple(self):
        return ("yoton_ERROR_HANDLING_REQUEST", "not an error")

    def custom_error(self):
        raise MyError("custom failure")

    def quit(self, code):
        raise SystemExit(code)

    def _private(self):
        return self.secret_value


class MyError(Exception):
    pass
