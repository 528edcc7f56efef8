"""The shipped packages, the tests and the benchmarks type-check clean with mypy.

One invocation over all of them (configuration and why: ``[tool.mypy]`` of
pyproject.toml), sharing one cache: about 4 s cold, well under 1 s warm.

Why mypy: it installs from PyPI as a Python package with nothing else to
fetch (pyright's PyPI wrapper runs on Node.js and downloads it when the
machine has none), and it is the checker the code base was first measured
with. ``pyright --verifytypes yoton`` still reports how complete the exported
types are (README "Development").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_mypy_finds_a_type_error(tmp_path: Path) -> None:
    """The check can fail: a module with a type error is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import yoton\n\nx: int = yoton.Context().id + 'one'\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(bad)],
        cwd=ROOT,  # (yoton is found as the checked-out package)
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Unsupported operand types" in done.stdout
