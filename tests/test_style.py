"""The code base stays ruff-clean (rules and formatting: pyproject.toml), its modules short."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")  # the venv's, installed by the test extra
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    return [found]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command: list[str]) -> None:
    done = subprocess.run(
        [*_ruff(), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"


#: A module of one concept stays short enough to read whole (docs/development.md).
MAX_MODULE_LINES = 600


def test_modules_stay_within_the_line_limit() -> None:
    """Every module of the library (not tests/ or benchmarks/) has at most 600 lines."""
    packages = [p for p in ROOT.glob("yoton*") if (p / "__init__.py").exists()]
    assert packages, f"no yoton* packages under {ROOT}"
    long = {}
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_MODULE_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"
