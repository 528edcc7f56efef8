"""The in-process transport (scheme ``inproc``) and yoton's pytest plugin.

Contexts of one process connect by name (``inproc://name``) or by the usual
``host:port`` form, so ``YOTON_TRANSPORT=inproc`` runs multi-context code in
one process without a socket. Packages move by reference: no encoding, framing
or copying of payloads. The pytest fixtures live in
:mod:`yoton_inproc.pytest_plugin` (registered through the ``pytest11`` entry
point).
"""

from __future__ import annotations

from collections.abc import Iterable

from yoton_core import Connection, hookimpl

from ._inproc import InprocConnection, bound_names

__all__ = ["InprocConnection", "bound_names"]


@hookimpl
def yoton_connection_types() -> Iterable[type[Connection]]:
    return [InprocConnection]
