"""The in-process transport (scheme ``inproc``) and yoton's pytest plugin.

Contexts of one process connect by name (``inproc://name``) or by the usual
``host:port`` form, so ``YOTON_TRANSPORT=inproc`` runs multi-context code in
one process without a socket. Packages move by reference: no encoding, framing
or copying of payloads. The pytest fixtures live in
:mod:`yoton_inproc.pytest_plugin` (registered through the ``pytest11`` entry
point).

This module imports yoton (and trio) only when the transport is used: pytest
imports it in every test run of an environment where yoton is installed, to
load the plugin, and must not pay for yoton there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from yoton.transport import Connection

    from ._inproc import InprocConnection, bound_names

__all__ = ["InprocConnection", "bound_names"]

# The same marker as yoton_core.hookimpl (pluggy.HookimplMarker("yoton")),
# made here so that loading the pytest plugin does not import yoton_core.
hookimpl = pluggy.HookimplMarker("yoton")


@hookimpl
def yoton_connection_types() -> Iterable[type[Connection]]:
    from ._inproc import InprocConnection

    return [InprocConnection]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _inproc

        return getattr(_inproc, name)
    raise AttributeError(f"module 'yoton_inproc' has no attribute {name!r}")
