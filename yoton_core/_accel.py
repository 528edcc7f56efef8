"""The optional compiled accelerator, looked for once (README, "Fast build").

:data:`speedups` is the module ``_speedups`` (built from ``_speedups.pyx`` only
on request) or None: not built, or ``YOTON_PURE_PYTHON=1`` in the environment.
Each user takes the functions it needs from it and keeps a pure-Python twin
(``_frames.py``: the publisher's frame; ``_decoder.py``: a run's payloads).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ACCELERATED", "speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("YOTON_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


speedups = _load()
ACCELERATED = speedups is not None
