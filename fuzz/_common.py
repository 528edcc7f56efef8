"""Shared runner of the atheris fuzz targets in this directory (see docs/development.md#fuzzing)."""

from __future__ import annotations

import os
import sys
import tempfile


def run(name: str) -> None:
    """Fuzz target ``name`` of ``yoton_core._fuzz_targets`` with atheris (libFuzzer).

    Command-line arguments are libFuzzer's (``-max_total_time=30``,
    ``-runs=N``, corpus directories, a crash file to reproduce). Without a
    corpus directory a temporary one is seeded with valid inputs, so the
    fuzzer starts from real protocol data instead of from nothing.
    """
    import atheris  # the optional extra: pip install -e .[fuzz]

    # Dependencies first, uninstrumented; then our package, instrumented for coverage.
    import pluggy  # noqa: F401
    import trio  # noqa: F401

    with atheris.instrument_imports():
        from yoton_core import _fuzz_targets

    target = _fuzz_targets.TARGETS[name]
    expected = _fuzz_targets.EXPECTED_ERRORS

    def test_one_input(data: bytes) -> None:
        try:
            target(data)
        except expected:
            pass

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = tempfile.mkdtemp(prefix=f"yoton-fuzz-{name}-")
        for i, seed in enumerate(_fuzz_targets.seeds(name)):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        argv.append(corpus)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
