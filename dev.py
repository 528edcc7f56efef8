#!/usr/bin/env python3
"""Set up a virtual environment and run the demo, the tests, the benchmarks or the docs.

Needs only Python 3.10+ (standard library): ``python3 dev.py demo``,
``python3 dev.py test [pytest args]``, ``python3 dev.py bench [args]``,
``python3 dev.py docs`` (build the site into ``site/``; ``docs serve``
previews it at http://127.0.0.1:8000 and rebuilds on every change),
``python3 dev.py accel`` (build the optional compiled accelerator in place;
needs a C compiler; ``bench`` builds it too when it can, and says which build
it measured).
The environment lives in ``.venv`` beside this file and is reused; it is
re-synchronised when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _stamp(extras: str) -> str:
    data = (ROOT / "pyproject.toml").read_bytes() + extras.encode() + sys.version.encode()
    return hashlib.sha256(data).hexdigest()


def ensure_env(extras: str) -> None:
    """Create .venv and install the project (editable) with ``extras``."""
    if not PY.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp_file = VENV / f".yoton-installed-{extras or 'base'}"
    stamp = _stamp(extras)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    print(f"dev.py: installing yoton[{extras}] into {VENV}", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    target = f".[{extras}]" if extras else "."
    for args in (["install", "--upgrade", "pip"], ["install", "-e", target]):
        # Quiet on success (setuptools is chatty about editable installs);
        # everything is shown if the step fails.
        done = subprocess.run([*pip, *args], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            sys.exit(f"dev.py: 'pip {' '.join(args)}' failed with exit code {done.returncode}")
    stamp_file.write_text(stamp)


def build_accel(required: bool) -> bool:
    """Compile ``yoton_core/_speedups.pyx`` in place (README, "Fast build").

    Installs Cython (and a setuptools that reads our pyproject.toml) into the
    environment first. Returns False, or exits if ``required``, when it fails,
    e.g. without a C compiler: yoton then runs in pure Python.
    """
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    steps = [
        [*pip, "cython>=3.0", "setuptools>=77"],
        [str(PY), "setup.py", "-q", "build_ext", "--inplace"],
    ]
    env = dict(os.environ, YOTON_ACCELERATE="1")
    for step in steps:
        done = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            if required:
                sys.stdout.write(done.stdout)
                sys.stderr.write(done.stderr)
                sys.exit(f"dev.py: building the accelerator failed ({' '.join(step[1:4])} ...)")
            print("dev.py: the accelerator could not be built; measuring pure Python", flush=True)
            return False
    return True


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench", "docs", "accel"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        ensure_env("")
        return subprocess.call([str(PY), str(ROOT / "examples" / "demo.py"), *rest], cwd=ROOT)
    if cmd == "test":
        ensure_env("test")
        return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT)
    if cmd == "docs":
        ensure_env("docs")
        # Material for MkDocs prints a banner about MkDocs 2 on every build.
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
        args = rest if rest and not rest[0].startswith("-") else ["build", "--strict", *rest]
        return subprocess.call([str(PY), "-m", "mkdocs", *args], cwd=ROOT, env=env)
    if cmd == "accel":
        ensure_env("")
        build_accel(required=True)
        check = "from yoton_core import _accel; print(_accel.ACCELERATED)"
        done = subprocess.run([str(PY), "-c", check], capture_output=True, text=True)
        print(f"dev.py: accelerator built; in use: {done.stdout.strip()}")
        return 0 if done.stdout.strip() == "True" else 1
    ensure_env("bench")
    build_accel(required=False)
    return subprocess.call([str(PY), str(ROOT / "benchmarks" / "run.py"), *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
