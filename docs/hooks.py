"""MkDocs hooks of the yoton site (``hooks:`` in ``mkdocs.yml``).

The command-line reference is the parser's own help, so it cannot drift from
the code: a page line ``<!-- yoton-help: sub -->`` becomes the text of
``yoton sub --help`` (``<!-- yoton-help: -->`` the top-level help), as a code
block. The help is rendered at a fixed width, so the page does not depend on
the terminal that builds it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

MARKER = re.compile(r"^<!--\s*yoton-help:\s*(\S*)\s*-->\s*$", re.M)
WIDTH = "88"


def command_help(command: str) -> str:
    """The ``--help`` text of ``yoton [command]``, as the command prints it."""
    from yoton_core._cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps at the terminal width
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([*command.split(), "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    text = out.getvalue().rstrip()
    if not text:
        raise ValueError(f"'yoton {command} --help' printed nothing: is {command!r} a command?")
    return text


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each ``<!-- yoton-help: COMMAND -->`` line with that help text."""

    def block(match: re.Match[str]) -> str:
        command = match.group(1)
        shown = f"yoton {command} --help" if command else "yoton --help"
        return f"```text\n$ {shown}\n{command_help(command)}\n```"

    return MARKER.sub(block, markdown)
