"""Discovering transport plugins with pluggy.

Discovery is lazy (the first address that needs a transport triggers it) and
forgiving: an entry point that fails to import is remembered with its error and
breaks only its own scheme. Asking for that scheme raises :class:`PluginLoadError`
naming the plugin and the import error; every other scheme keeps working.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import re
import threading
from typing import TYPE_CHECKING

import pluggy

from . import _hookspecs
from ._errors import PluginLoadError, TransportNotFoundError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["plugin_manager", "transports", "resolve_transport"]

logger = logging.getLogger("yoton")

ENTRY_POINT_GROUP = "yoton"
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*$")

_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_broken: dict[str, tuple[str, BaseException]] = {}


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; ``.register(obj)`` adds a plugin at run time."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(_hookspecs.PROJECT_NAME)
            pm.add_hookspecs(_hookspecs)
            _load_entry_points(pm)
            _pm = pm
        return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # pragma: no cover - broken metadata
        logger.warning("yoton: could not read entry points: %s", exc)
        return
    seen: set[str] = set()
    for ep in eps:
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            plugin = ep.load()
            if pm.get_plugin(ep.name) is None and not pm.is_registered(plugin):
                pm.register(plugin, name=ep.name)
        except Exception as exc:
            _broken[ep.name.lower()] = (ep.value, exc)
            logger.debug("yoton plugin %r (%s) failed to load: %r", ep.name, ep.value, exc)


def transports() -> dict[str, type[Connection]]:
    """``{scheme: ConnectionClass}`` of every transport that loaded."""
    from ._connection import Connection

    result: dict[str, type[Connection]] = {}
    pm = plugin_manager()
    for impl_result in pm.hook.yoton_connection_types():
        for cls in impl_result or ():
            if not (isinstance(cls, type) and issubclass(cls, Connection)):
                raise TypeError(
                    f"a yoton plugin returned {cls!r} from yoton_connection_types(); "
                    "expected Connection subclasses"
                )
            scheme = getattr(cls, "scheme", "")
            if not isinstance(scheme, str) or not _SCHEME_RE.match(scheme):
                raise TypeError(
                    f"{cls.__qualname__}.scheme must be a lower-case scheme name like 'tcp', "
                    f"got {scheme!r}"
                )
            result.setdefault(scheme, cls)
    return result


def broken_plugins() -> dict[str, tuple[str, BaseException]]:
    """Entry points that failed to load: ``{name: (module, exception)}``."""
    plugin_manager()
    return dict(_broken)


def resolve_transport(scheme: str) -> type[Connection]:
    """Return the Connection class for ``scheme``, or raise a helpful error."""
    key = scheme.lower()
    known = transports()
    cls = known.get(key)
    if cls is not None:
        return cls
    if key in _broken:
        module, exc = _broken[key]
        raise PluginLoadError(
            f"The yoton transport plugin {key!r} (entry point {module!r}) failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise TransportNotFoundError(
        f"Unknown transport scheme {scheme!r}; installed schemes: {', '.join(names) or 'none'}."
        f"{hint}"
    )
