"""Yoton: connect Python processes, threads and machines.

This is the documented import name; it re-exports the public API of
:mod:`yoton_core` and holds no logic of its own. Transport classes
(``yoton.TcpConnection``, ``yoton.UnixConnection``, ``yoton.InprocConnection``)
are looked up through the plugin system on first access, so the facade does not
import any transport itself.
"""

from typing import Any

from yoton_core import *  # noqa: F403
from yoton_core import __all__ as _core_all
from yoton_core import __version__  # noqa: F401
from yoton_core import transports as _transports

__all__ = list(_core_all)


def __getattr__(name: str) -> Any:
    if name.endswith("Connection") and name != "Connection":
        for cls in _transports().values():
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module 'yoton' has no attribute {name!r}")
