"""The network commands of ``yoton``: sub, pub, call, state, transports.

Each command makes one Context, creates its channel *before* it joins the
network (a message that reaches a context before the channel for its slot
exists is dropped, so a subscriber that connected first and subscribed
second could miss the first messages), joins, does its job, and leaves
cleanly: what it sent is flushed and the peer is told the connection closes.

The slow-joiner problem: ``pub --bind`` (and ``state --bind`` with a value)
listens for a peer that may not be there yet. Messages sent before a peer
connects would go nowhere, so such a command first waits until a peer has
connected (``--timeout`` bounds the wait), then sends; the peer's channel must
exist by the time the messages arrive. ``pub`` without ``--bind`` connects
first, so the peer is there when it sends.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ._cli import (
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CommandFailed,
    _positive_int,
    _seconds,
)
from ._connection import closed_on_purpose
from ._pubsub import PubChannel, SubChannel
from ._state import StateChannel

__all__ = ["add_commands", "parse_value", "to_json"]

#: How long the end of a command may take to hand what it sent to the OS.
FLUSH_TIMEOUT = 10.0


def add_commands(command: Callable[..., Any], net: list[Any], local: list[Any]) -> None:
    """Add sub, pub, call, state and transports to the ``yoton`` parser."""
    p = command(
        "sub",
        "print the messages published on a slot",
        "Print each message published on SLOT on its own line as it arrives: text as it is, "
        "objects as JSON, binary as hex (or unchanged with --raw). Ends after --count "
        "messages, after --timeout seconds without one, or when the peer leaves.",
        net,
    )
    _join_args(p)
    _type_arg(p)
    p.add_argument("--count", type=_positive_int, metavar="N", help="exit after N messages")
    p.add_argument(
        "--timeout", type=_seconds, metavar="S", help="exit after S seconds without a message"
    )
    p.add_argument("--raw", action="store_true", help="binary: write the bytes unchanged")
    p.set_defaults(run=run_sub)

    p = command(
        "pub",
        "publish messages on a slot",
        "Publish each MESSAGE on SLOT, or each line of stdin when none is given, then flush "
        "and leave. With --bind it first waits until a peer has connected (messages sent "
        "before anyone listens would be lost; --timeout bounds the wait), then publishes.",
        net,
    )
    _join_args(p)
    _type_arg(p, "objects are given as JSON")
    p.add_argument("message", nargs="*", metavar="MESSAGE", help="messages (default: stdin)")
    p.add_argument(
        "--timeout", type=_seconds, metavar="S", help="--bind: give up if no peer within S seconds"
    )
    p.set_defaults(run=run_pub)

    p = command(
        "call",
        "call a method of a RepChannel",
        "Call METHOD of the RepChannel serving SLOT and print the result as JSON. An ARG "
        'that parses as JSON is that value (1, 2.5, true, null, [1, 2], {"a": 1}, '
        '"quoted"), any other is a string. A remote error prints its type and message on '
        "stderr and exits with 5.",
        net,
    )
    p.add_argument("address", metavar="ADDRESS", help="[scheme://]host:port to connect to")
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("method", metavar="METHOD")
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="wait for the reply (default 10)",
    )
    p.set_defaults(run=run_call)

    p = command(
        "state",
        "get or set the state of a slot",
        "Without VALUE, print the state of SLOT (waiting up to --timeout for it to arrive). "
        "With VALUE, set it and leave; with --bind it first waits for a peer.",
        net,
    )
    _join_args(p)
    _type_arg(p, "objects are given and printed as JSON")
    p.add_argument("value", nargs="?", metavar="VALUE")
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="get: wait for the state (default 5); set with --bind: for a peer (default: forever)",
    )
    p.set_defaults(run=run_state)

    p = command(
        "transports",
        "list the installed transports",
        "List the installed transport schemes, the class of each and the plugin that provides it.",
        local,
    )
    p.set_defaults(run=run_transports)


def _join_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", action="store_true", help="listen at ADDRESS instead of connecting")
    p.add_argument("address", metavar="ADDRESS", help="[scheme://]host:port")
    p.add_argument("slot", metavar="SLOT")


def _type_arg(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument(
        "--type",
        choices=("text", "binary", "object"),
        default="text",
        help="message type (default: text)" + (f"; {note}" if note else ""),
    )


# -- values ---------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """``call``'s rule: an argument that parses as JSON is that value, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def to_json(value: Any) -> str:
    """A value as one line of JSON (bytes as hex, anything else JSON lacks as its repr)."""
    return json.dumps(value, ensure_ascii=False, default=_jsonable)


def _message_type(name: str) -> Any:
    from ._message_types import BINARY, OBJECT, TEXT

    return {"text": TEXT, "binary": BINARY, "object": OBJECT}[name]


def _encode_arg(text: str, kind: str, what: str) -> Any:
    """A message given on the command line (or stdin) as the type's value."""
    if kind == "object":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CommandFailed(f"{what} {text!r} is not valid JSON ({exc})", EXIT_USAGE) from None
    if kind == "binary":
        return text.encode("utf-8")
    return text


def _print_message(message: Any, kind: str, raw: bool = False) -> None:
    if kind == "binary":
        if raw:
            sys.stdout.buffer.write(message)
            sys.stdout.buffer.flush()
            return
        text = message.hex()
    elif kind == "object":
        text = to_json(message)
    else:
        text = message
    print(text, flush=True)


# -- joining and leaving ----------------------------------------------------------------


def _context(args: argparse.Namespace) -> Any:
    from ._context import Context

    return Context(verbose=args.verbose)


def _join(ctx: Any, args: argparse.Namespace) -> Any:
    """Bind or connect as the arguments say; the Connection."""
    if getattr(args, "bind", False):
        return ctx.bind(args.address)
    return ctx.connect(args.address, timeout=args.connect_timeout)


class _PeerWatch:
    """Mixin of a sending channel: an Event set when a connection of the context
    gets a peer or closes (the core tells every channel; no polling)."""

    def _watch_peers(self) -> None:
        self.peer_event = threading.Event()

    def _on_new_connection(self, conn: Any) -> None:
        super()._on_new_connection(conn)  # type: ignore[misc]
        self.peer_event.set()

    def _on_connection_closed(self, conn: Any) -> None:
        super()._on_connection_closed(conn)  # type: ignore[misc]
        self.peer_event.set()


class _Pub(_PeerWatch, PubChannel):
    def __init__(self, *args: Any) -> None:
        self._watch_peers()
        super().__init__(*args)


class _State(_PeerWatch, StateChannel):
    def __init__(self, *args: Any) -> None:
        self._watch_peers()
        super().__init__(*args)


def _wait_for_peer(channel: Any, conn: Any, timeout: float | None, address: str) -> None:
    """--bind: block until a peer has connected (or fail after ``timeout``)."""
    if conn.is_alive and not conn.is_connected:
        channel.peer_event.wait(timeout)
    if conn.is_connected:
        return
    if conn.is_alive:
        raise CommandFailed(f"no peer connected to {address} within {timeout:g} s", EXIT_TIMEOUT)
    raise CommandFailed(f"{address}: {conn.close_reason or 'closed'}", EXIT_CONNECT)


def _leave(ctx: Any) -> None:
    """Flush what was sent, tell the peers the connection closes, close."""
    try:
        ctx.flush(FLUSH_TIMEOUT)
    finally:
        ctx.close()


# -- the commands ---------------------------------------------------------------------------


def run_sub(args: argparse.Namespace) -> int:
    """``yoton sub``: make the SubChannel, join, print messages until told to stop.

    Ends after ``--count`` messages, after ``--timeout`` seconds without one,
    or when the peer's connection closes; returns the exit code (4 when
    ``--count`` was not reached in time).
    """
    ctx = _context(args)
    sub = _Sub(ctx, args.slot, _message_type(args.type))
    conn = _join(ctx, args)
    sub.watch(conn)
    count = 0
    try:
        while args.count is None or count < args.count:
            item = sub._recv(True if args.timeout is None else args.timeout)
            sub._check_sync()
            if item is None:
                break
            _print_message(sub._decode(item), args.type, args.raw)
            count += 1
    finally:
        ctx.close()
    if args.count is not None and count < args.count:
        if sub.lost_reason is not None:
            raise CommandFailed(
                f"connection to {args.address} lost after {count} of {args.count} messages: "
                f"{sub.lost_reason}",
                EXIT_CONNECT,
            )
        if sub.closed_by_peer:
            return EXIT_OK
        raise CommandFailed(
            f"got {count} of {args.count} messages; none for {args.timeout:g} s", EXIT_TIMEOUT
        )
    if sub.lost_reason is not None:
        raise CommandFailed(f"connection to {args.address} lost: {sub.lost_reason}", EXIT_CONNECT)
    return EXIT_OK


class _Sub(SubChannel):
    """A SubChannel that closes when its connection ends, so ``sub`` exits once
    it has printed what arrived."""

    lost_reason: str | None = None
    closed_by_peer = False
    _watched: Any = None

    def watch(self, conn: Any) -> None:
        self._watched = conn
        if not conn.is_alive:
            self._on_connection_closed(conn)

    def _on_connection_closed(self, conn: Any) -> None:
        super()._on_connection_closed(conn)
        if conn is self._watched and not self._closed:
            if closed_on_purpose(conn):
                pass  # we closed it ourselves
            elif conn.close_reason == "Closed from other end.":
                self.closed_by_peer = True
            else:
                self.lost_reason = conn.close_reason
            self.close()  # queued messages stay readable; recv ends after them


def run_pub(args: argparse.Namespace) -> int:
    """``yoton pub``: publish the MESSAGE arguments, or stdin's lines, then flush and leave.

    With ``--bind`` it first waits for a peer (``--timeout`` bounds the
    wait): what is published before anyone listens would go nowhere.
    """
    kind = args.type
    given = [_encode_arg(m, kind, "MESSAGE") for m in args.message]
    ctx = _context(args)
    try:
        pub = _Pub(ctx, args.slot, _message_type(kind))
        conn = _join(ctx, args)
        if args.bind:
            _wait_for_peer(pub, conn, args.timeout, args.address)
        if given:
            for message in given:
                pub.send(message)
        else:
            for line in sys.stdin:
                pub.send(_encode_arg(line.rstrip("\r\n"), kind, "line"))
        _leave(ctx)
    finally:
        ctx.close()
    return EXIT_OK


def run_call(args: argparse.Namespace) -> int:
    """``yoton call``: call METHOD on the RepChannel of SLOT and print the result as JSON.

    A remote exception prints its type and message on stderr (exit code 5);
    no reply within ``--timeout`` is exit code 4.
    """
    from ._errors import CancelledError
    from ._reqrep import ReqChannel

    values = [parse_value(a) for a in args.args]
    ctx = _context(args)
    try:
        req = ReqChannel(ctx, args.slot)
        ctx.connect(args.address, timeout=args.connect_timeout)
        future = getattr(req, args.method)(*values)
        try:
            result = future.result(args.timeout)
        except CancelledError:
            raise CommandFailed(
                f"nobody took the call: is a RepChannel serving {args.slot!r} at {args.address}?",
                EXIT_TIMEOUT,
            ) from None
        except TimeoutError:
            future.cancel()
            raise CommandFailed(
                f"no reply to {args.method}() within {args.timeout:g} s "
                f"(is a RepChannel serving {args.slot!r} at {args.address}?)",
                EXIT_TIMEOUT,
            ) from None
        print(to_json(result), flush=True)
    finally:
        ctx.close()
    return EXIT_OK


def run_state(args: argparse.Namespace) -> int:
    """``yoton state``: print the state of SLOT, or set it to VALUE and leave."""
    kind = args.type
    value = None if args.value is None else _encode_arg(args.value, kind, "VALUE")
    ctx = _context(args)
    try:
        state = _State(ctx, args.slot, _message_type(kind))
        conn = _join(ctx, args)
        if value is not None:
            if args.bind:
                _wait_for_peer(state, conn, args.timeout, args.address)
            state.send(value)
            _leave(ctx)
            return EXIT_OK
        timeout = 5.0 if args.timeout is None else args.timeout
        if not _wait_for_state(state, timeout):
            raise CommandFailed(
                f"no state on {args.slot!r} arrived within {timeout:g} s", EXIT_TIMEOUT
            )
        _print_message(state.recv(), kind)
    finally:
        ctx.close()
    return EXIT_OK


def _wait_for_state(state: Any, timeout: float) -> bool:
    """Wait until a StateChannel holds a state (woken by its deposits, no polling)."""

    def ready() -> bool:
        return bool(state._version or state._closed)

    return bool(state._wait_until(ready, time.monotonic() + timeout))


def run_transports(args: argparse.Namespace) -> int:
    """``yoton transports``: each installed scheme, its Connection class and the plugin."""
    from importlib import metadata

    from ._plugins import transports

    found = transports()
    providers: dict[str, str] = {}
    try:
        for ep in metadata.entry_points(group="yoton"):
            dist = getattr(ep, "dist", None)
            where = f"{dist.name} {dist.version}" if dist is not None else "?"
            providers[ep.module] = f"entry point {ep.name!r} of {where}"
    except Exception:  # noqa: BLE001 - a broken metadata listing only loses the column
        pass
    rows = []
    for scheme in sorted(found):
        cls = found[scheme]
        module = cls.__module__
        # The entry point whose module is the class's, else its closest package.
        matches = [m for m in providers if module == m or module.startswith(m + ".")]
        plugin = providers[max(matches, key=len)] if matches else "registered at run time"
        rows.append((scheme, f"{module}.{cls.__qualname__}", plugin))
    width = [max(len(r[i]) for r in rows) for i in range(2)] if rows else [0, 0]
    for scheme, cls_name, plugin in rows:
        print(f"{scheme:<{width[0]}}  {cls_name:<{width[1]}}  {plugin}")
    return EXIT_OK
