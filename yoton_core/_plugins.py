"""Discovering transport plugins with pluggy.

Discovery is lazy (the first address that needs a transport triggers it) and
forgiving: an entry point that fails to import is remembered with its error and
breaks only its own scheme. Asking for that scheme raises :class:`PluginLoadError`
naming the plugin and the import error; every other scheme keeps working.

Discovery never re-enters itself. A plugin may use any public yoton name while it
is being discovered, and the natural TCP variant does: ``class
MyConn(yoton.TcpConnection)``, at import or inside its hook. ``yoton.TcpConnection``
is looked up through :func:`transports`, the very thing that was running, so a
naive discovery recurses until Python gives up. Three rules stop it:

- An entry point leaves the pending list *before* it is imported; a nested
  :func:`plugin_manager` call (that import asking for a yoton name) loads the
  entries still pending instead of starting over.
- An entry point whose module is still being imported (a user imported the plugin
  module, and its body asked for ``yoton.TcpConnection``) is not registered half
  made, without its hook: it is loaded on the next call, once its import is done.
- A hook is never called again while it runs on the same thread: a nested
  :func:`transports` answers from the other plugins.

The guards are per thread (a re-entrant lock and a thread-local set), so another
thread waits for discovery to finish, or runs the hooks itself.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from . import _hookspecs
from ._errors import PluginLoadError, TransportNotFoundError
from ._log import get_logger

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["plugin_manager", "transports", "resolve_transport"]

logger = get_logger("plugins")

ENTRY_POINT_GROUP = "yoton"
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*$")

_lock = threading.RLock()  # re-entrant: a plugin's import may ask for a yoton name
_pm: pluggy.PluginManager | None = None
_ready = False  # every entry point is loaded or broken; read without the lock
_depth = 0  # plugin_manager() calls in progress (nested ones on the lock's thread)
_pending: list[importlib.metadata.EntryPoint] = []
_deferred: list[importlib.metadata.EntryPoint] = []  # their module was mid-import
_broken: dict[str, tuple[str, BaseException]] = {}
_local = threading.local()  # .running: the hook implementations this thread is in


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; ``.register(obj)`` adds a plugin at run time.

    A :class:`pluggy.PluginManager` for the project name ``"yoton"``. On the
    first call it loads every module of the ``yoton`` entry-point group
    (the built-in transports register this way, like any third-party
    plugin); a plugin that fails to import breaks only its own scheme
    (:class:`PluginLoadError` when that scheme is used). Register a module or
    object with ``@yoton.hookimpl`` functions to add a transport without
    installing it, e.g. in tests::

        if "loopback" not in yoton.transports():
            yoton.plugin_manager().register(yoton_loopback)
    """
    global _pm, _ready, _depth
    if _ready:
        return _pm  # type: ignore[return-value]
    with _lock:
        if _pm is None:
            _pm = pluggy.PluginManager(_hookspecs.PROJECT_NAME)
            _pm.add_hookspecs(_hookspecs)
            _pending.extend(_entry_points())
        _pending.extend(_deferred)
        _deferred.clear()
        _depth += 1
        try:
            # A nested call (an entry point's import asking for yoton.TcpConnection)
            # runs this loop while the outer one is mid-way: it loads the rest.
            while _pending:
                ep = _pending.pop(0)
                if not _load(_pm, ep):
                    _deferred.append(ep)
        finally:
            _depth -= 1
        # Only the outermost call knows that every import it started has finished.
        _ready = _depth == 0 and not _deferred
        return _pm


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # pragma: no cover - broken metadata
        logger.warning("could not read entry points: %s", exc)
        return []
    unique: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in eps:
        unique.setdefault(ep.name, ep)
    return list(unique.values())


def _load(pm: pluggy.PluginManager, ep: importlib.metadata.EntryPoint) -> bool:
    """Import and register one entry point; False to try again later."""
    module = sys.modules.get(ep.module)
    # CPython marks a module whose body is still running (the flag its own
    # import machinery reads); registering it now would find no hook in it.
    if module is not None and getattr(module.__spec__, "_initializing", False):
        return False
    try:
        plugin = ep.load()
        if pm.get_plugin(ep.name) is None and not pm.is_registered(plugin):
            pm.register(plugin, name=ep.name)
    except Exception as exc:
        _broken[ep.name.lower()] = (ep.value, exc)
        logger.debug("yoton plugin %r (%s) failed to load: %r", ep.name, ep.value, exc)
    return True


def _hook_results(pm: pluggy.PluginManager) -> list[Iterable[object]]:
    """Every ``yoton_connection_types()`` result, in pluggy's call order (last
    registered first), leaving out the hooks this thread is already inside."""
    running: set[int] | None = getattr(_local, "running", None)
    if running is None:
        running = _local.running = set()
    results: list[Any] = []
    for impl in reversed(pm.hook.yoton_connection_types.get_hookimpls()):
        if id(impl) in running or impl.hookwrapper or impl.wrapper:
            continue  # (a wrapper has nothing to add to a list of classes)
        running.add(id(impl))
        try:
            result = impl.function()
        finally:
            running.discard(id(impl))
        if result is not None:
            results.append(result)  # (checked by transports(): an iterable of classes)
    return results


def transports() -> dict[str, type[Connection]]:
    """``{scheme: ConnectionClass}`` of every transport that loaded.

    What the ``yoton transports`` command lists. When two plugins offer the
    same scheme, the first in pluggy's call order wins (the one registered
    last). Called from inside a plugin's own ``yoton_connection_types()``
    (directly, or through ``yoton.TcpConnection``), it answers from the other
    plugins.

    Raises:
        TypeError: A plugin returned something that is not a Connection
            subclass with a lower-case ``scheme``.
    """
    from ._connection import Connection

    result: dict[str, type[Connection]] = {}
    for impl_result in _hook_results(plugin_manager()):
        for cls in impl_result:
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
