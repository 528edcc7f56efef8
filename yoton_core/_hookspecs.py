"""Hook specifications: the whole contract between yoton and its plugins.

A plugin is any module or object with ``@yoton.hookimpl`` functions named after
the specs below. Built-in transports (``yoton_tcp``, ``yoton_unix``,
``yoton_inproc``) are registered through the ``yoton`` entry-point group exactly
like third-party ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME"]

PROJECT_NAME = "yoton"

hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)
"""pluggy's marker of hook *specifications* for the project ``"yoton"``.

Yoton uses it for its own hooks (:func:`yoton_connection_types`); a plugin
needs :data:`hookimpl`, not this.
"""
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin's hook functions, e.g. ``@yoton.hookimpl def yoton_connection_types()``.

pluggy's marker for the project ``"yoton"``: a module registered through the
``yoton`` entry-point group (or with ``plugin_manager().register``) has its
marked functions called by yoton.
"""


@hookspec
def yoton_connection_types() -> Iterable[type[Connection]]:  # type: ignore[empty-body]
    """Return the Connection subclasses this plugin provides.

    Each class must have a class attribute ``scheme`` (e.g. ``"tcp"``): the
    address prefix (``tcp://``) and the name used in ``Context(transport=...)``
    and ``YOTON_TRANSPORT``. Called once, when yoton first looks for
    transports; the classes are not instantiated until a context binds or
    connects with their scheme.

    Example::

        @yoton.hookimpl
        def yoton_connection_types():
            return [LoopbackConnection]
    """
