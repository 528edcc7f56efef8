"""The ``yoton`` command: poke a live yoton network from a shell.

``yoton sub``, ``pub``, ``call``, ``state``, ``transports`` and ``bench``
(also ``python -m yoton``), in the spirit of ``nngcat`` and the ``nats``
command. The commands themselves live in ``_cli_commands.py`` and
``_cli_bench.py``; this module holds the parser, the exit codes and the one
place where errors become messages.

Why argparse: it is in the standard library, so the command costs the
library's users no dependency (a CLI framework such as click or typer would
be installed for every program that only imports yoton), and subcommands,
help and type checking of arguments are all this command needs. Its one
habit we change: a usage error is one line (``yoton sub: error: ...``), not
the usage block plus the error.

A user's mistake is one line on stderr and a nonzero exit, never a
traceback; each kind of failure has its own exit code (:data:`EXIT_CODES`),
so scripts can tell them apart.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._errors import (
    ConnectError,
    InvalidArgumentError,
    RemoteError,
    TransportNotFoundError,
    YotonError,
)
from ._errors import TimeoutError as YotonTimeoutError

__all__ = ["EXIT_CODES", "CommandFailed", "main"]

#: Success.
EXIT_OK = 0
#: Something unexpected went wrong (a bug: run with ``--traceback`` and report it).
EXIT_INTERNAL = 1
#: A usage error: bad arguments, a bad address or value, an unknown scheme.
EXIT_USAGE = 2
#: Could not connect or bind (nobody listening, address in use, handshake
#: refused), or the connection was lost.
EXIT_CONNECT = 3
#: Nothing came in time: no message, reply, state or peer within the timeout.
EXIT_TIMEOUT = 4
#: ``call``: the remote method raised (its type and message are on stderr).
EXIT_REMOTE = 5
#: Interrupted (Ctrl+C), as shells report SIGINT.
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "unexpected error (a bug; --traceback shows it)",
    EXIT_USAGE: "usage error: bad argument, address, value or scheme",
    EXIT_CONNECT: "could not connect or bind, or the connection was lost",
    EXIT_TIMEOUT: "nothing (message, reply, state, peer) arrived within the timeout",
    EXIT_REMOTE: "the remote method raised (call)",
    EXIT_INTERRUPTED: "interrupted (Ctrl+C)",
}


class CommandFailed(Exception):
    """Ends the command: ``message`` as one line on stderr, exit code ``code``.

    (Not an error class of the library: the command's own way to stop.)
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return f"exit codes:\n{codes}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``yoton`` command (all subcommands)."""
    from . import __version__, _accel

    parser = _Parser(
        prog="yoton",
        description="Poke a live yoton network: subscribe, publish, call, get or set a "
        "state, list the transports, measure.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build = "compiled accelerator" if _accel.ACCELERATED else "pure Python"
    parser.add_argument("--version", action="version", version=f"yoton {__version__} ({build})")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show yoton's log on stderr: -v connections and faults, -vv every package",
    )
    common.add_argument(
        "--traceback", action="store_true", help="show the traceback of an unexpected error"
    )
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds to wait for the peer when connecting (default: 1.0)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help: str, description: str, parents: list[Any]) -> Any:
        return sub.add_parser(
            name,
            help=help,
            description=description,
            parents=parents,
            epilog=_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    from . import _cli_bench, _cli_commands

    _cli_commands.add_commands(command, [common, net], [common])
    _cli_bench.add_command(command, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``yoton`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"yoton {args.command}"
    try:
        return int(args.run(args) or EXIT_OK)
    except CommandFailed as exc:
        return _fail(prog, str(exc), exc.code)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (e.g. ``| head -1``): stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:
        code = classify(exc)
        if code == EXIT_INTERNAL and args.traceback:
            raise
        text = describe(exc)
        if code == EXIT_INTERNAL:
            text += " (an unexpected error: run again with --traceback and report it)"
        return _fail(prog, text, code)


def classify(exc: BaseException) -> int:
    """The exit code for an exception that reached the command."""
    if isinstance(exc, RemoteError):
        return EXIT_REMOTE
    if isinstance(exc, YotonTimeoutError | TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, InvalidArgumentError | TransportNotFoundError):
        return EXIT_USAGE
    # ConnectError (nobody listening, handshake refused), bind's address in
    # use, BrokenConnectionError...: all OSErrors.
    if isinstance(exc, ConnectError | OSError):
        return EXIT_CONNECT
    if isinstance(exc, ValueError | TypeError):  # e.g. an address that does not parse
        return EXIT_USAGE
    if isinstance(exc, YotonError):
        return EXIT_CONNECT
    return EXIT_INTERNAL


def describe(exc: BaseException) -> str:
    """One line for an exception: its message, else its type."""
    text = " ".join(str(exc).split())  # (a RemoteError's is "RemoteType: message")
    return text or type(exc).__name__


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return code
