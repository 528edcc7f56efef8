"""Shared pieces of the req/rep tests (test_reqrep.py, test_reqrep_failures.py)."""

from __future__ import annotations

import threading

import yoton
from yoton_core.testing import wait_for as wait_until  # noqa: F401 - shared helper

GENEROUS = 10.0


def join(a: yoton.Context, b: yoton.Context) -> None:
    """Connect b to a over TCP (a binds port 0)."""
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=GENEROUS)


class Calc(yoton.RepChannel):
    """A replier with a few methods; ``hold`` blocks until ``release`` is set."""

    def __init__(self, context, slot="calc", mode="thread"):  # type: ignore[no-untyped-def]
        super().__init__(context, slot)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[object] = []
        self.threads: set[int] = set()
        self.secret_value = "s3cret"
        self.set_mode(mode)

    def add(self, a, b):  # type: ignore[no-untyped-def]
        self.threads.add(threading.get_ident())
        return a + b

    def divide(self, a, b):  # type: ignore[no-untyped-def]
        return a / b

    def kw(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return [list(args), kwargs]

    def record(self, value):  # type: ignore[no-untyped-def]
        self.calls.append(value)
        return value

    def hold(self, value):  # type: ignore[no-untyped-def]
        self.calls.append(value)
        self.entered.set()
        self.release.wait(GENEROUS)
        return value

    def bad_result(self):  # type: ignore[no-untyped-def]
        return {1, 2, 3}

    def error_tuple(self):  # type: ignore[no-untyped-def]
        return ("yoton_ERROR_HANDLING_REQUEST", "not an error")

    def custom_error(self):  # type: ignore[no-untyped-def]
        raise MyError("custom failure")

    def quit(self, code):  # type: ignore[no-untyped-def]
        raise SystemExit(code)

    def _private(self):  # type: ignore[no-untyped-def]
        return self.secret_value


class MyError(Exception):
    pass
