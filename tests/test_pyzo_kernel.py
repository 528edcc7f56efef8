"""Pyzo's kernel runs unchanged on our yoton, driven by an IDE side on ours and on 2.x.

The kernel is ``pyzokernel/start.py`` of the installed ``pyzo`` package (a
test dependency), unchanged, in its own process, started the way
``pyzo/core/kernelbroker.py`` starts it, headless (gui "none"). Its ``import
yoton`` finds ours: the kernel runs from a pyzo directory whose ``yoton`` is
this project's package (a temporary directory with two symbolic links,
``pyzokernel`` to pyzo's and ``yoton`` to ours), as a Pyzo shipping our yoton
would be laid out. The IDE side (``pyzo_ide.py``: broker and shell, two
contexts, so every message takes two hops) runs in another process, on our
yoton or on 2.x. Both ways, with introspection in the kernel's own thread or
(``PYZO_INTROSPECT_IN_MAIN_THREAD=1``, which uses
``RepChannel._process_events_local``) in its main thread, the test executes
commands and code cells, sees stdout, stderr and tracebacks, answers
``input()``, introspects, interrupts (signal and control request) and shuts
the kernel down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from yoton2 import Yoton2Proc, pyzo_dir, run_yoton, run_yoton2

import yoton

pytestmark = pytest.mark.timeout(180)

#: Deadline of each step: generous, for a loaded 2-core machine (the kernel's
#: own loop runs at 10 Hz; each message takes two hops).
STEP = 30.0
IDE_SCRIPT = Path(__file__).with_name("pyzo_ide.py")


class IdeSide:
    """The IDE child (pyzo_ide.py): one JSON command per line, one reply each."""

    def __init__(self, proc: Yoton2Proc) -> None:
        self.proc = proc
        self.kernel_pid = 0

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.proc.send_line(json.dumps({"op": op, **args}))
        reply = json.loads(self.proc.expect_line("REPLY", timeout=3 * STEP))
        assert isinstance(reply, dict)
        return reply

    def wait(self, stream: str, contains: str, count: int = 1) -> str:
        """Wait until the shell's ``strm-<stream>`` has shown ``contains`` ``count`` times."""
        reply = self.call("wait", stream=stream, contains=contains, timeout=STEP, count=count)
        assert reply["ok"], (
            f"the shell's strm-{stream} did not show {contains!r} (x{count}); it has:\n"
            f"{reply['text']}\n--- kernel stdout/stderr (strm-raw) ---\n{self.raw()}"
        )
        return str(reply["text"])

    def raw(self) -> str:
        return str(self.call("wait", stream="raw", contains="", timeout=0)["text"])

    def command(self, text: str) -> None:
        self.call("command", text=text)

    def introspect(self, method: str, *args: Any) -> Any:
        reply = self.call("introspect", method=method, args=list(args), timeout=STEP)
        assert reply["ok"], f"introspection {method}{args} failed: {reply['why']}"
        return reply["result"]


@pytest.fixture
def pyzo_with_our_yoton(tmp_path: Path) -> str:
    """A pyzo directory whose ``yoton`` is ours: pyzokernel and yoton, as links."""
    here = tmp_path / "pyzo"
    here.mkdir()
    (here / "pyzokernel").symlink_to(Path(pyzo_dir()) / "pyzokernel", target_is_directory=True)
    (here / "yoton").symlink_to(Path(yoton.__file__).parent, target_is_directory=True)
    return str(here)


@contextlib.contextmanager
def ide_side(flavour: str) -> Iterator[IdeSide]:
    run = run_yoton if flavour == "ours" else run_yoton2
    script = f"import runpy\nrunpy.run_path({str(IDE_SCRIPT)!r}, run_name='__main__')\n"
    with run(script, timeout=170.0) as proc:
        version = proc.expect_line("IDE-READY", timeout=STEP)
        assert version.startswith("2.") == (flavour == "2x"), version
        ide = IdeSide(proc)
        try:
            yield ide
        finally:
            if ide.kernel_pid:  # whatever happened, no kernel outlives the test
                with contextlib.suppress(OSError):
                    os.kill(ide.kernel_pid, signal.SIGKILL)


@pytest.mark.parametrize("introspection", ["thread", "main"])
@pytest.mark.parametrize("ide", ["ours", "2x"])
def test_pyzo_kernel_on_our_yoton(
    ide: str, introspection: str, pyzo_with_our_yoton: str, tmp_path: Path
) -> None:
    env = {"PYZO_INTROSPECT_IN_MAIN_THREAD": "1"} if introspection == "main" else {}
    with ide_side(ide) as k:
        drive_a_session(k, pyzo_with_our_yoton, env, tmp_path, kernel_yoton=yoton.__version__)


def test_our_ide_side_drives_pyzos_own_kernel_on_2x(tmp_path: Path) -> None:
    """The other way round: Pyzo as shipped (its kernel on 2.x), our yoton in the IDE."""
    with ide_side("ours") as k:
        drive_a_session(k, pyzo_dir(), {}, tmp_path, kernel_yoton="2.2")


def drive_a_session(
    k: IdeSide, pyzo: str, env: dict[str, str], start_dir: Path, kernel_yoton: str
) -> None:
    """Start the kernel, use it as a Pyzo user would, and shut it down."""
    started = k.call("start", pyzo_dir=pyzo, start_dir=str(start_dir), env=env, timeout=STEP)
    k.kernel_pid = started["kernel_pid"]
    assert started["ready"], f"kernel not ready: {started}\n{k.raw()}"
    banner = k.wait("out", "This is the Pyzo interpreter")
    assert "Python 3." in banner

    # Which yoton the kernel runs on, asked through the kernel itself.
    k.command("import yoton, os; print('YOTON', yoton.__version__, os.getcwd())\n")
    k.wait("out", f"YOTON {kernel_yoton} {start_dir}\n")

    # Commands: stdout, stderr, a traceback, and the kernel goes on.
    k.command("print('answer', 6 * 7)\n")
    k.wait("out", "answer 42\n")
    k.command("import sys; _ = sys.stderr.write('to stderr\\n')\n")
    k.wait("err", "to stderr\n")
    k.command("1 / 0\n")
    err = k.wait("err", "ZeroDivisionError: division by zero")
    assert "Traceback (most recent call last):" in err
    assert "1 / 0\n" in k.wait("echo", "1 / 0\n")  # the kernel echoes what it runs

    # A code cell (runlargecode): runs, and its traceback names the file and line.
    source = (
        "def double(x):\n    return 2 * x\n\nprint('cell', double(21))\nraise KeyError('in cell')"
    )
    k.call("code", source=source, fname="mycell.py", lineno=10, cell_name="cell one")
    k.wait("out", "cell 42\n")
    err = k.wait("err", "KeyError: 'in cell'")
    assert 'mycell.py", line 15, in <module>' in err
    k.wait("echo", 'executing cell "cell one"')
    k.command("print('double', double(5))\n")  # the cell's definitions live on
    k.wait("out", "double 10\n")

    # input(): the prompt reaches the shell, the answer reaches input().
    k.command("name = input('who? ')\n")
    k.wait("out", "who? ")
    k.command("yoton\n")
    k.command("print('hello', name)\n")
    k.wait("out", "hello yoton\n")

    # Introspection (the shell's reqp-introspect requests).
    k.command("import json; print('imported')\n")  # (echoed before it runs: wait for it)
    k.wait("out", "imported\n")
    assert "dumps" in k.introspect("dir", "json")
    assert k.introspect("signature", "json.dumps").startswith("json.dumps(obj, ")
    assert "Serialize" in k.introspect("doc", "json.dumps")
    assert k.introspect("eval", "double(4)") == 8
    assert k.introspect("dir2", "json")  # [(name, type, repr), ...]

    # Interrupt a long computation: by a signal (the broker on POSIX), then
    # by a control request (the broker on Windows: interrupt_main() in the
    # kernel, which a Python loop notices; a single C call would not).
    for how, n in (("signal", 1), ("request", 2)):
        loop = "[time.sleep(0.01) for _ in range(12000)]"
        k.command(f"import time; print('looping {how}'); {loop}\n")
        k.wait("out", f"looping {how}\n")
        k.call(f"interrupt_{how}")
        k.wait("err", "KeyboardInterrupt", count=n)
    k.command("print('still alive')\n")
    k.wait("out", "still alive\n")

    # Shut down as the broker does: ask the kernel to close its stdin.
    stopped = k.call("terminate", timeout=STEP)
    assert stopped["exited"] and stopped["returncode"] == 0, stopped
    assert stopped["closed"], stopped  # the broker saw the kernel's connection close
    k.proc.send_line(json.dumps({"op": "quit"}))
    assert k.proc.wait(STEP) == 0
