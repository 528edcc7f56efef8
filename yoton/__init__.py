"""Yoton: connect Python processes, threads and machines.

This is the documented import name; it re-exports the public API of
:mod:`yoton_core` and holds no logic of its own.
"""

from yoton_core import *  # noqa: F403
from yoton_core import __all__ as _core_all
from yoton_core import __version__  # noqa: F401

__all__ = list(_core_all)
