"""Run yoton 2.x (the copy inside the ``pyzo`` package) in a child process.

Interop tests need a real 2.x peer. Our own package is also called ``yoton``,
so the child must import pyzo's copy and never ours. The child is started as
``sys.executable -I -c <script>``: ``-I`` keeps the current directory, the
user site and ``PYTHONPATH`` out of ``sys.path``; the pyzo package directory
is then put first, so ``import yoton`` finds ``pyzo/yoton`` (version 2.2) before
the editable finder of this project is ever asked. pyzo itself is never
imported (it needs Qt); its directory is found with ``importlib.util.find_spec``.

Usage::

    from yoton2 import run_yoton2

    SCRIPT = '''
    ctx = yoton.Context()
    conn = ctx.connect("localhost:%d" % int(read_line()))
    say("CONNECTED", conn.id1)
    '''

    with run_yoton2(SCRIPT) as p:
        p.send_line(str(port))
        rest = p.expect_line("CONNECTED")   # -> the text after the prefix

Inside the script these names exist:

* ``yoton`` -- the 2.x module (its ``__version__`` is asserted to be "2.2");
* ``say(*parts)`` -- print one line (space-separated ``str`` of the parts) to
  stdout and flush it;
* ``read_line()`` -- one line from stdin without its newline ("" at EOF);
* ``wait_until(predicate, timeout=10.0)`` -- poll ``predicate`` until it is
  true or ``timeout`` seconds passed; returns whether it became true (2.x has
  no blocking wait for conditions such as "connected" or "state is X");
* ``sys``, ``os``, ``time``, ``ast``, ``hashlib``.

``run_yoton(script)`` is the same for a child that imports *this project's*
``yoton`` (installed in the venv), for tests that need our peer in another
process (pids, SIGSTOP/SIGCONT, ...).

stdin/stdout are UTF-8. The child kills itself after ``timeout`` seconds, and
the parent kills it when the ``with`` block ends. Failures of the helpers
(``expect_line`` deadline, early exit) raise ``AssertionError`` whose message
includes the child's stdout lines seen so far and its stderr.
"""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

__all__ = ["PREAMBLE", "PREAMBLE_OURS", "Yoton2Proc", "pyzo_dir", "run_yoton", "run_yoton2"]


def pyzo_dir() -> str:
    """The directory that holds pyzo's ``yoton`` package, without importing pyzo."""
    spec = importlib.util.find_spec("pyzo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'pyzo' package (a test dependency) is not installed")
    return list(spec.submodule_search_locations)[0]


_COMMON = """
def _watchdog():
    time.sleep({timeout!r})  # the child's lifetime limit, not synchronisation
    sys.stderr.write("yoton child: watchdog timeout, exiting\\n")
    sys.stderr.flush()
    os._exit(3)

threading.Thread(target=_watchdog, daemon=True).start()
_say_lock = threading.Lock()

def say(*parts):
    with _say_lock:
        sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
        sys.stdout.flush()

def read_line():
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\\n") else line

def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)  # polling a condition with a deadline (the child's only poll)
    return True

"""

#: Code run in the 2.x child before the user's script (``{pyzo!r}``, ``{timeout!r}`` filled in).
PREAMBLE = (
    """\
import sys
sys.path.insert(0, {pyzo!r})
import ast, hashlib, os, threading, time
sys.stdout.reconfigure(encoding="utf-8", line_buffering=True)
sys.stdin.reconfigure(encoding="utf-8")
import yoton
assert yoton.__version__ == "2.2", (yoton.__version__, yoton.__file__)
assert os.path.dirname(os.path.dirname(yoton.__file__)) == {pyzo!r}, yoton.__file__
"""
    + _COMMON
)

#: The same for a child that runs *this project's* yoton (see :func:`run_yoton`).
PREAMBLE_OURS = (
    """\
import sys
import ast, hashlib, os, threading, time
sys.stdout.reconfigure(encoding="utf-8", line_buffering=True)
sys.stdin.reconfigure(encoding="utf-8")
import yoton
assert not yoton.__version__.startswith("2."), (yoton.__version__, yoton.__file__)
"""
    + _COMMON
)

_EOF = object()


class Yoton2Proc:
    """A running yoton 2.x child; see the module docstring."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []  # every stdout line seen so far
        self._stdout: queue.Queue[object] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.put(line.rstrip("\r\n"))
        self._stdout.put(_EOF)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        """What the child wrote to stderr so far."""
        return "".join(self._stderr)

    def describe(self) -> str:
        """stdout lines and stderr of the child, for assertion messages."""
        out = "\n".join(self.lines[-40:])
        return (
            f"[yoton 2.x child pid {self.proc.pid}, returncode {self.proc.poll()}]\n"
            f"--- stdout (last lines) ---\n{out}\n--- stderr ---\n{self.stderr_text()}"
        )

    def read_line(self, timeout: float = 10.0) -> str:
        """Return the next stdout line; AssertionError on EOF or after ``timeout`` s."""
        try:
            item = self._stdout.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line from the yoton 2.x child within {timeout} s\n{self.describe()}"
            ) from None
        if item is _EOF:
            self._stdout.put(_EOF)  # keep reporting EOF
            self.proc.wait(5)
            for t in self._threads:  # the stderr pump ends at the child's EOF
                t.join(1)
            raise AssertionError(f"the yoton 2.x child exited\n{self.describe()}")
        assert isinstance(item, str)
        self.lines.append(item)
        return item

    def expect_line(self, prefix: str, timeout: float = 10.0) -> str:
        """Wait for a stdout line starting with ``prefix``; return the rest, stripped.

        Lines that do not match (e.g. 2.x's own prints) are skipped but kept
        in :attr:`lines`. The deadline covers the whole wait.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line starting with {prefix!r} from the yoton 2.x child within "
                    f"{timeout} s\n{self.describe()}"
                )
            line = self.read_line(left)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send_line(self, text: str) -> None:
        """Write one line (a newline is appended) to the child's stdin."""
        assert self.proc.stdin is not None
        if "\n" in text:
            raise ValueError("send_line sends one line; the text must not contain a newline")
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise AssertionError(f"cannot write to the child ({exc})\n{self.describe()}") from None

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit and return its code; AssertionError on timeout."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the yoton 2.x child did not exit within {timeout} s\n{self.describe()}"
            ) from None
        for t in self._threads:
            t.join(2)
        return code

    def kill(self) -> None:
        """Kill the child (if it still runs) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        for stream in (self.proc.stdin,):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()


@contextlib.contextmanager
def _run(code: str) -> Iterator[Yoton2Proc]:
    proc = subprocess.Popen(
        [sys.executable, "-I", "-u", "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    p = Yoton2Proc(proc)
    try:
        yield p
    except AssertionError as exc:
        if "--- stderr ---" not in str(exc):
            p.kill()
            for t in p._threads:
                t.join(2)
            raise AssertionError(f"{exc}\n{p.describe()}") from exc
        raise
    finally:
        p.kill()


def run_yoton2(script: str, timeout: float = 30.0) -> contextlib.AbstractContextManager[Yoton2Proc]:
    """Start ``script`` in a child process with yoton 2.x importable as ``yoton``.

    Args:
        script: Python source run after :data:`PREAMBLE` (dedented first).
        timeout: The child exits by itself after this many seconds.

    Returns:
        A context manager yielding a :class:`Yoton2Proc`; the child is killed
        when the block ends. If the block raises an AssertionError, the child's
        stdout and stderr are appended to it.
    """
    code = PREAMBLE.format(pyzo=pyzo_dir(), timeout=float(timeout)) + textwrap.dedent(script)
    return _run(code)


def run_yoton(script: str, timeout: float = 30.0) -> contextlib.AbstractContextManager[Yoton2Proc]:
    """Like :func:`run_yoton2`, but the child imports this project's ``yoton``.

    For tests that need a peer of ours in another process (pids, SIGSTOP, ...).
    """
    code = PREAMBLE_OURS.format(timeout=float(timeout)) + textwrap.dedent(script)
    return _run(code)
