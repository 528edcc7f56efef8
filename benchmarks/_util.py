"""Shared plumbing of the benchmarks: peer processes, line protocol, timing.

Every benchmark peer (publisher, subscriber, replier, ...) runs in its own
process, started by :func:`start_role` as ``sys.executable -I -c <bootstrap>``
that imports a benchmark module and calls one of its functions. ``-I`` keeps the
current directory off ``sys.path``; the benchmarks directory is added
explicitly, and for yoton 2.x (``yoton2=True``) the directory of the ``pyzo``
package goes *first*, so that ``import yoton`` there imports pyzo's 2.x copy
and not this project. Role functions must therefore import ``yoton`` inside the
function, never at module level.

Roles talk to the runner with lines: the role prints ``KEY value`` lines on
stdout (:func:`say`), the runner waits for them with :meth:`Role.expect`, and
the runner writes command words to the role's stdin, which the role waits for
with :class:`Commands`. Results travel as JSON (:func:`say_json`,
:meth:`Role.expect_json`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "BENCH_DIR",
    "Commands",
    "Role",
    "US",
    "cpu_seconds",
    "failure",
    "fmt_rate",
    "pyzo_dir",
    "roles",
    "say",
    "say_json",
    "selected",
    "start_role",
]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

#: The ``library`` name of this project's rows; ratios are computed against it.
US = "yoton 3 (this project)"
#: The key and row name of this project measured in pure Python, its optional
#: compiled accelerator switched off (README, "Fast build"); ``US`` is measured
#: with the accelerator when ``dev.py bench`` could build it (the report's
#: header says which).
PURE = "yoton-pure"
US_PURE = "yoton 3, pure Python (accelerator off)"


def accelerator_state() -> str:
    """How this project runs here: with or without its compiled accelerator."""
    from yoton_core import _accel

    if _accel.ACCELERATED:
        return "yoton runs with its compiled accelerator (python3 dev.py accel)"
    return "yoton runs in pure Python (the compiled accelerator is not built)"


def pyzo_dir() -> str:
    """The directory holding pyzo's ``yoton`` 2.x package (pyzo is not imported: it needs Qt)."""
    spec = importlib.util.find_spec("pyzo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyzo is not installed (pip install pyzo) -- needed for yoton 2.x")
    return list(spec.submodule_search_locations)[0]


# -- child side -----------------------------------------------------------------------


def say(key: str, *parts: object) -> None:
    """Print one ``KEY part part...`` line for the runner and flush."""
    sys.stdout.write(" ".join([key, *(str(p) for p in parts)]) + "\n")
    sys.stdout.flush()


def say_json(key: str, obj: Any) -> None:
    say(key, json.dumps(obj))


def say_latencies(times: list[float]) -> None:
    """Say ``RESULT`` with the count, median and p99 (µs) of call durations (s)."""
    times = sorted(times)
    say_json(
        "RESULT",
        {
            "n": len(times),
            "median_us": statistics.median(times) * 1e6,
            "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
        },
    )


def timed_calls(call: Any, n: int, warmup: int) -> list[float]:
    """Seconds each of ``n`` calls of ``call()`` took, after ``warmup`` untimed ones.

    Says ``TIMING`` before the first timed call and ``TIMED`` after the last:
    the runner reads the other role's CPU time between the two.
    """
    for _ in range(warmup):
        call()
    say("TIMING")
    clock = time.perf_counter
    out = []
    for _ in range(n):
        t0 = clock()
        call()
        out.append(clock() - t0)
    say("TIMED")
    return out


class Commands:
    """Reads command words from stdin in a background thread.

    ``wait(word, timeout)`` blocks until that word arrived; ``seen(word)``
    checks without blocking (for loops that must keep sending meanwhile).
    """

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._payloads: dict[str, str] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _event(self, word: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(word, threading.Event())

    def _read(self) -> None:
        for line in sys.stdin:
            word, _, rest = line.strip().partition(" ")
            self._payloads[word] = rest
            self._event(word).set()
        self._event("EOF").set()

    def seen(self, word: str) -> bool:
        return self._event(word).is_set()

    def wait(self, word: str, timeout: float = 60.0) -> str:
        if not self._event(word).wait(timeout):
            raise TimeoutError(f"no {word!r} command within {timeout} s")
        return self._payloads.get(word, "")


# -- runner side ----------------------------------------------------------------------

_EOF = object()


class Role:
    """A running benchmark peer process."""

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.proc = proc
        self._lines: queue.Queue[object] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return "".join(self._stderr[-40:])

    def expect(self, key: str, timeout: float = 30.0) -> str:
        """Wait for a stdout line starting with ``key``; return the rest of it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no {key!r} line within {timeout} s\n{self.stderr()}"
                ) from None
            if item is _EOF:
                self._lines.put(_EOF)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(2)
                time.sleep(0.05)  # let the stderr pump catch up
                raise RuntimeError(
                    f"{self.name} exited (code {self.proc.poll()}) before {key!r}\n{self.stderr()}"
                )
            assert isinstance(item, str)
            word, _, rest = item.partition(" ")
            if word == key:
                return rest

    def expect_json(self, key: str, timeout: float = 30.0) -> Any:
        return json.loads(self.expect(key, timeout))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()


_BOOT = """\
import sys
sys.path[:0] = {paths!r}
import {module} as _m
_m.{func}(*{args!r})
"""


def start_role(
    module: str, func: str, *args: Any, yoton2: bool = False, pure: bool = False, name: str = ""
) -> Role:
    """Run ``module.func(*args)`` in a new process (see the module docstring).

    Args:
        module: A module in the benchmarks directory, e.g. ``"bench_pubsub"``.
        func: The role function's name.
        args: Literal arguments (repr-able values only).
        yoton2: Put pyzo's directory first on ``sys.path`` so ``import yoton``
            gives yoton 2.x.
        pure: Run this project without its compiled accelerator
            (``YOTON_PURE_PYTHON=1``; the :data:`US_PURE` rows).
        name: For error messages.
    """
    paths = ([pyzo_dir()] if yoton2 else []) + [BENCH_DIR]
    code = _BOOT.format(paths=paths, module=module, func=func, args=tuple(args))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pure:
        env["YOTON_PURE_PYTHON"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-u", "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
    )
    return Role(name or f"{module}.{func}", proc)


@contextlib.contextmanager
def roles() -> Iterator[list[Role]]:
    """A list to put started roles in; every one is killed when the block ends."""
    started: list[Role] = []
    try:
        yield started
    finally:
        for r in started:
            r.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt_rate(value: float) -> str:
    """A rate with thousands separators, e.g. ``123,456``."""
    return f"{value:,.0f}"


def selected(only: list[str] | None, lib: str, display: str) -> bool:
    """Whether ``--only`` (substrings, any case) picks library key ``lib`` / name ``display``."""
    return not only or any(o.lower() in f"{lib} {display}".lower() for o in only)


def failure(exc: BaseException) -> str:
    """The ``detail`` of a row whose measurement raised: the error's first line.

    One line, at most 150 characters, so that a traceback-sized message does
    not swamp the table; ``repr`` for errors without a message (a bare
    ``TimeoutError()``), which would otherwise leave nothing to read.
    """
    lines = str(exc).splitlines() or [repr(exc)]
    return f"failed: {lines[0][:150]}"
