"""The names a RepChannel subclass must leave alone, and where a subclass takes one.

Why: a replier is written by subclassing :class:`~._repchannel.RepChannel`
(2.x's way), and the subclass shares one instance namespace with the
channel's own state. ``self._lock = threading.Lock()`` or ``self._queue =
[]`` in a subclass's ``__init__`` looks private to the user and silently
replaces the inbox or the condition the channel's threads wait on: requests
then hang or vanish with no error anywhere. Python's answer for a base class
is name mangling (``__x``), which the channel cannot use (the router and the
inbox reach its attributes from outside the class). So the subclass is read
when it is defined instead, and a clash is refused there, naming the method
and the line.

* **Ours** (:func:`own_attribute_names`): every attribute name our classes
  store on an object, read from their bytecode (``STORE_ATTR``): exact for
  code we ship, with or without its source, and without making an instance.
  It is a superset (``pre.acked = True`` stores on another object), so only
  its private names are used, plus the public names a channel sets on
  itself (``received``).
* **Theirs** (:func:`stores_on_self`): the subclass's functions' *source*,
  parsed: ``self.<name> = ...``, ``self.<name> += ...``, ``del self.<name>``
  and ``with/for`` targets, whatever the Python version compiles them to.
  Where there is no source (a class made by ``type()``, code typed at the
  prompt, a ``.pyc`` without its ``.py``) there is nothing to read and
  nothing is refused.
"""

from __future__ import annotations

import ast
import dis
import inspect
import os
import textwrap
import types
from collections.abc import Iterable, Iterator
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["machinery_of", "own_attribute_names", "refuse_clashes", "stores_on_self"]

#: Public attributes every channel sets on itself (BaseChannel.__init__).
PUBLIC_STATE = ("received",)
#: Per class of ours: the attribute names its code and its bases' store.
_OWN_NAMES: dict[type, frozenset[str]] = {}


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in it (closures, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions(cls: type) -> Iterator[tuple[str, Any]]:
    """``(name, function)`` for each function defined in ``cls`` itself.

    Unwraps what a class body commonly wraps functions in: ``staticmethod``,
    ``classmethod``, ``property`` (each accessor) and decorators that keep
    ``__wrapped__`` (``functools.wraps``).
    """
    for name, value in vars(cls).items():
        if isinstance(value, property):
            accessors: Iterable[Any] = (value.fget, value.fset, value.fdel)
        else:
            accessors = (getattr(value, "__func__", value),)
        for f in accessors:
            try:
                f = inspect.unwrap(f)
            except ValueError:  # (a cycle of __wrapped__)
                continue
            if isinstance(f, types.FunctionType):
                yield name, f


def own_attribute_names(classes: Iterable[type], public: Iterable[str] = ()) -> frozenset[str]:
    """The private attribute names the code of ``classes`` stores, plus ``public``."""
    names = set(public)
    for klass in classes:
        for _name, f in _functions(klass):
            for code in _code_objects(f.__code__):
                for ins in dis.get_instructions(code):
                    if ins.opname == "STORE_ATTR":
                        attr = str(ins.argval)
                        if attr.startswith("_") and not attr.startswith("__"):
                            names.add(attr)
    return frozenset(names)


def stores_on_self(cls: type) -> list[tuple[str, str, str]]:
    """``(attribute, function, where)`` for each ``self.<attribute>`` the class's functions set.

    ``where`` is ``file:line`` (the file's base name).

    ``self`` is each function's first parameter, whatever it is called; a
    function whose source cannot be had or parsed is skipped.
    """
    found: list[tuple[str, str, str]] = []
    for name, f in _functions(cls):
        try:
            lines, first = inspect.getsourcelines(f)
            filename = os.path.basename(inspect.getsourcefile(f) or "?")
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError):
            continue
        node = tree.body[0] if tree.body else None
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.args.args:
            continue  # (a lambda, or a function without parameters)
        me = node.args.args[0].arg
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.ctx, (ast.Store, ast.Del))
                and isinstance(sub.value, ast.Name)
                and sub.value.id == me
            ):
                found.append((sub.attr, name, f"{filename}:{first + sub.lineno - 1}"))
    return found


def machinery_of(cls: type) -> frozenset[str]:
    """The attribute names the yoton classes among ``cls``'s bases use themselves.

    Ours are the classes defined in yoton's own packages: RepChannel and its
    bases, and a class we ship on top of it (a subclass of *that* must leave
    its names alone too). Read once per class of ours.
    """
    ours = tuple(
        k for k in cls.__mro__[1:] if k.__module__.split(".")[0] in ("yoton", "yoton_core")
    )
    if not ours:
        return frozenset()
    names = _OWN_NAMES.get(ours[0])
    if names is None:
        names = _OWN_NAMES[ours[0]] = own_attribute_names(ours, PUBLIC_STATE)
    return names


def refuse_clashes(cls: type, base: type, overridable: frozenset[str]) -> None:
    """Raise if subclass ``cls`` of ``base`` takes a name ``base`` uses itself.

    Two kinds: a class attribute (a method ``pending`` or ``_deposit``) named
    like one of ``base``'s attributes or of its instances' state, unless in
    ``overridable``; and ``self.<name> = ...`` in the class's functions for
    a name of that state.

    Raises:
        InvalidArgumentError: naming the names, where they are set, and
            what to do.
    """
    own = machinery_of(cls)
    clashes = sorted(
        name
        for name in vars(cls)
        if not (name.startswith("__") and name.endswith("__"))
        and name not in overridable
        and (hasattr(base, name) or name in own)
    )
    if clashes:
        raise InvalidArgumentError(
            f"{cls.__name__} defines {', '.join(map(repr, clashes))}, which {base.__name__} "
            "uses itself: a handler of that name would replace the channel's own and "
            "could not be called remotely; choose another name"
        )
    stores = [store for store in stores_on_self(cls) if store[0] in own]
    if stores:
        attr, fn, where = stores[0]
        names = sorted({a for a, _f, _w in stores})
        raise InvalidArgumentError(
            f"{cls.__name__}.{fn} sets self.{attr} ({where}), which {base.__name__} uses "
            "for its own state: it would replace the channel's and break it. Rename "
            f"{', '.join('self.' + a for a in names)} in {cls.__name__}, e.g. to "
            f"self._{cls.__name__.lower()}_{attr.lstrip('_')}"
        )
