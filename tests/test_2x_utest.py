"""yoton 2.x's own unit tests (``yoton/tests/utest.py`` in the ``pyzo`` package), on our yoton.

The file is read from the installed ``pyzo`` package and run unchanged, one
test per child process, against this project's ``yoton``:

* ``utest.py`` changes directory two levels up and puts ``"."`` first on
  ``sys.path`` before ``import yoton``, so that, run in place, it finds pyzo's
  copy. The child runs it from ``<tmp>/a/b``: two levels up is an empty
  directory, and ``yoton`` is already imported anyway (ours, from the
  environment; ``-I`` keeps ``PYTHONPATH`` and the user site out).
* The one shim allowed: ``from yoton.misc import long``, 2.x's alias of
  Python 2's ``long``, is a module ``yoton.misc`` with ``long = int``, made in
  the child only.
* Handler errors are made visible: ``test_req_rep2`` asserts inside a done
  callback, which runs in the event loop, where an exception is logged and the
  loop goes on; the child sends yoton's log to stderr and the test fails on any
  logged error.

``utest.py`` binds fixed ports (``localhost:test1`` and friends, hashed).
Concurrent runs of this module on one machine (several checkouts) would take
each other's ports, so the runs take a lock file in turn.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from yoton2 import pyzo_dir

pytestmark = pytest.mark.timeout(180)

UTEST = Path(pyzo_dir()) / "yoton" / "tests" / "utest.py"
#: The tests 2.x ships (7 in pyzo 4.x); read from the file, so new ones run too.
TESTS = sorted(
    node.name
    for cls in ast.parse(UTEST.read_text(encoding="utf-8")).body
    if isinstance(cls, ast.ClassDef) and cls.name == "Tester"
    for node in cls.body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
)
#: Longest wait for another run of this module to free the fixed ports.
LOCK_WAIT = 150.0
#: Longest run of one utest test (test_req_rep2 takes about 2 s).
RUN_TIMEOUT = 60.0

CHILD = r"""
import importlib.util, logging, sys, types, unittest

import yoton

assert not yoton.__version__.startswith("2."), yoton.__file__
# The one shim: 2.x's Python 2 alias ``yoton.misc.long``.
misc = types.ModuleType("yoton.misc")
misc.long = int
sys.modules["yoton.misc"] = misc
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="LOGGED %(message)s")

spec = importlib.util.spec_from_file_location("utest", sys.argv[1])
utest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(utest)  # chdir("../.."), sys.path.insert(0, "."), import yoton
assert utest.yoton is yoton, utest.yoton
suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[2], utest)
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
print("RAN", result.testsRun, "OK" if result.wasSuccessful() else "FAILED", flush=True)
"""


def test_the_2x_suite_is_there() -> None:
    assert len(TESTS) >= 7, TESTS
    assert "test_req_rep2" in TESTS


@contextlib.contextmanager
def fixed_ports_lock() -> Iterator[None]:
    """Take the machine-wide lock of utest's fixed ports (polled, with a deadline)."""
    path = Path(tempfile.gettempdir()) / "yoton-2x-utest-ports.lock"
    with open(path, "a+b") as f:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{path} stayed locked for {LOCK_WAIT} s (another run hangs?)")
                time.sleep(0.05)  # polling a lock with a deadline
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.mark.parametrize("name", TESTS)
def test_2x_utest_passes_on_our_yoton(name: str, tmp_path: Path) -> None:
    cwd = tmp_path / "a" / "b"  # utest.py goes two levels up: to tmp_path, no yoton there
    cwd.mkdir(parents=True)
    with fixed_ports_lock():
        proc = subprocess.run(
            [sys.executable, "-I", "-c", CHILD, str(UTEST), f"Tester.{name}"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    report = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "RAN 1 OK" in proc.stdout, report
    assert "LOGGED" not in proc.stderr, report  # e.g. a failed assertion in a callback
    if name == "test_req_rep2":
        # Its done callbacks ran: each prints which context handled a request.
        assert "handled by context" in proc.stdout, report
