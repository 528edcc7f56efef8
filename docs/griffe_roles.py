"""A griffe extension for the API reference: Sphinx markup in docstrings becomes Markdown.

Yoton's docstrings name other objects the way ``help()`` readers and Sphinx
know, ``:class:`Context```, ``:meth:`connect```, ``:data:`~yoton_core.TEXT```.
Markdown shows such a role as literal text; this extension rewrites each one
(in the reference only; the code is unchanged) into the object's name in
code style, linked to its entry when the reference has one. A paragraph that
ends in ``::`` (reStructuredText's "a code block follows") ends in ``:``; the
indented block after it is a code block in Markdown too. A name is looked
up the way Python would from the docstring's place: the object itself, then
its parents. A name that is not documented on the site (a private helper, a
standard-library class) stays plain code, so no role can break the build.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|obj|exc|const):`(~?)([^`<>]+)`")
LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.M)


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path that ``name`` means in the scope of ``obj``, or None."""
    head, _, tail = name.partition(".")
    scope: Any = obj
    while scope is not None:
        if head in getattr(scope, "members", {}):
            path = f"{scope.path}.{head}"
            return f"{path}.{tail}" if tail else path
        scope = scope.parent
    try:
        path = obj.resolve(head)
    except Exception:  # griffe's NameResolutionError, or a name it cannot see
        return name if "." in name else None
    return f"{path}.{tail}" if tail else path


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with every role replaced by a (possibly linked) code span."""

    def one(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        code = f"<code>{html.escape(shown)}</code>"
        if target.startswith("."):  # a module-relative name: private, not in the reference
            return code
        path = _resolve(obj, target)
        if path is None:
            return code
        return f'<autoref optional identifier="{html.escape(path)}">{code}</autoref>'

    return LITERAL.sub(":", ROLE.sub(one, text))


def comment_docstring(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above an attribute's assignment, or None."""
    if obj.lineno is None or obj.parent is None:
        return None
    try:
        lines = obj.parent.lines if obj.parent.is_module else obj.lines_collection[obj.filepath]
    except Exception:  # no source (a compiled module)
        return None
    found: list[str] = []
    i = obj.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.append(lines[i].lstrip()[2:].strip())
        i -= 1
    return "\n".join(reversed(found)) or None


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx markup of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute:
            text = comment_docstring(obj)
            if text is not None:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
