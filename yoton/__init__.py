"""Yoton: connect Python processes, threads and machines.

This is the documented import name; it re-exports the public API of
:mod:`yoton_core` and holds no logic of its own. Transport classes
(``yoton.TcpConnection``, ``yoton.UnixConnection``, ``yoton.InprocConnection``)
are looked up through the plugin system on access, so the facade does not import
any transport itself. A plugin may use them while it is being discovered (``class
MyConn(yoton.TcpConnection)`` in its module or hook): discovery does not re-enter
itself, and such a lookup is answered from the other plugins.
"""

from typing import Any

from yoton_core import *  # noqa: F403
from yoton_core import __all__ as _core_all
from yoton_core import __version__  # noqa: F401
from yoton_core import transports as _transports

from . import transport as transport  # yoton.transport: the API for plugin authors

__all__ = list(_core_all)


def __getattr__(name: str) -> Any:
    if name.endswith("Connection") and name != "Connection":
        known = _transports()
        for cls in known.values():
            if cls.__name__ == name:
                return cls
        have = ", ".join(sorted(f"{cls.__name__} ({scheme})" for scheme, cls in known.items()))
        raise AttributeError(
            f"module 'yoton' has no attribute {name!r}; the transports installed "
            f"provide: {have or 'none'}"
        )
    raise AttributeError(f"module 'yoton' has no attribute {name!r}")
