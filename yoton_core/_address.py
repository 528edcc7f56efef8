"""Parsing of yoton addresses: ``[scheme://]host:port`` (docs/protocol.md#addresses).

This module only turns text into values; it opens no socket. The one outside
call is :func:`socket.gethostbyname_ex` for ``publichostN``, which looks up the
machine's own addresses (the documented meaning of that host name).

Differences from 2.x, on purpose (docs/protocol.md#differences-from-2x, item 23): the scheme
must be well-formed (the caller then picks a transport by it instead of
ignoring it), ports must be 0 (any free port) or 1024..65535 (2.x accepted
negative ports), and every error quotes the address and says what was expected.
"""

from __future__ import annotations

import errno
import math
import re
import socket

from ._errors import IN_USE_HINT, ConnectError, InvalidArgumentError
from ._errors import TimeoutError as YotonTimeoutError
from ._hashing import port_hash

__all__ = [
    "split_scheme",
    "parse_host_port",
    "split_address",
    "bind_port_offsets",
    "redact_credentials",
    "address_error",
]

MIN_PORT = 1024
MAX_PORT = 65535

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.\-]*")
# What int() would accept as a port number in 2.x, minus the exotic forms
# (underscores, non-ASCII digits): those are treated as port *names*.
_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*")
_PUBLICHOST_RE = re.compile(r"publichost([0-9]*)", re.IGNORECASE)


def redact_credentials(address: str) -> str:
    """``address`` with a password or token before ``@`` shown as ``***``.

    For messages and logs: ``nats://alice:s3cret@host:4222/bus`` reads
    ``nats://alice:***@host:4222/bus`` and ``nats://t0ken@host:4222/bus``
    ``nats://***@host:4222/bus``. Addresses without ``@`` are unchanged.
    """
    head, sep, rest = address.partition("://")
    if not sep or "@" not in rest.partition("/")[0]:
        return address
    where, slash, tail = rest.partition("/")
    cred, _, hosts = where.rpartition("@")
    user, colon, _ = cred.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{head}{sep}{shown}@{hosts}{slash}{tail}"


def split_scheme(address: str) -> tuple[str | None, str]:
    """Split an optional ``scheme://`` prefix off an address.

    Args:
        address: e.g. ``"tcp://localhost:test"`` or ``"localhost:test"``.

    Returns:
        ``(scheme, rest)``: the lower-cased scheme (``None`` when absent) and
        the remainder, e.g. ``("tcp", "localhost:test")``.

    Raises:
        TypeError: ``address`` is not a str.
        ValueError: the scheme is empty or not of the form ``[a-z][a-z0-9+.-]*``.
    """
    if not isinstance(address, str):
        raise InvalidArgumentError(
            f"address must be a str like 'localhost:name', got {type(address).__name__}"
        )
    scheme, sep, rest = address.partition("://")
    if not sep:
        return None, address
    lowered = scheme.lower()
    if not _SCHEME_RE.fullmatch(lowered):
        raise InvalidArgumentError(
            f"Invalid scheme {scheme!r} in address {address!r}: expected a name such as "
            "'tcp', made of a letter followed by letters, digits, '+', '.' or '-'."
        )
    return lowered, rest


def _resolve_host(host: str, address: str) -> str:
    """Map the special host names to IP addresses; pass others through."""
    if not host:
        raise InvalidArgumentError(
            f"Address {address!r} has an empty host part: expected e.g. "
            "'localhost:name', 'publichost:name' or '1.2.3.4:name'."
        )
    if host.lower() == "localhost":
        return "127.0.0.1"
    m = _PUBLICHOST_RE.fullmatch(host)
    if m is None:
        return host
    index = int(m.group(1) or "0")
    addresses = socket.gethostbyname_ex(socket.gethostname())[2]
    if index >= len(addresses):
        raise InvalidArgumentError(
            f"Invalid index ({index}) in public host addresses. Address {address!r}: "
            f"this machine has {len(addresses)} public address(es) {addresses!r}, so "
            f"use publichost0..publichost{max(len(addresses) - 1, 0)}."
        )
    return addresses[index]


def _resolve_port(port: str, address: str) -> int:
    """Turn the port part (a number, or a name with optional ``+offset``) into an int."""
    if not port:
        raise InvalidArgumentError(
            f"Address {address!r} has an empty port part: expected a port number "
            f"(0 or {MIN_PORT}..{MAX_PORT}) or a name such as 'localhost:chat'."
        )
    if _INT_RE.fullmatch(port):
        value = int(port)
        if value != 0 and not MIN_PORT <= value <= MAX_PORT:
            raise InvalidArgumentError(
                f"Invalid port {value} in address {address!r}: expected 0 (any free port) "
                f"or a number in {MIN_PORT}..{MAX_PORT}, or a port name."
            )
        return value
    name, plus, offset_text = port.partition("+")
    offset = 0
    if plus:
        if not _INT_RE.fullmatch(offset_text):
            raise InvalidArgumentError(
                f"Invalid offset in address {address!r}: {offset_text!r} is not an integer "
                "(expected 'host:name+N', e.g. 'localhost:chat+1')."
            )
        offset = int(offset_text)
    value = port_hash(name) + offset
    if not MIN_PORT <= value <= MAX_PORT:
        raise InvalidArgumentError(
            f"Port name {name!r} with offset {offset} in address {address!r} gives port "
            f"{value}, outside {MIN_PORT}..{MAX_PORT}: use a smaller offset."
        )
    return value


def parse_host_port(rest: str, *, address: str | None = None) -> tuple[str, int]:
    """Parse the ``host:port`` part of an address.

    Args:
        rest: The address without its scheme, e.g. ``"localhost:test+1"``.
        address: The full address, quoted in error messages (defaults to ``rest``).

    Returns:
        ``(host, port)``. ``localhost`` becomes ``"127.0.0.1"``; ``publichostN``
        becomes this machine's N-th address (``publichost`` = ``publichost0``);
        other hosts are returned unchanged. A port name is hashed with
        :func:`~yoton_core._hashing.port_hash` (case-sensitive, not stripped)
        and the offset added. Port 0 means "any free port".

    Raises:
        TypeError: ``rest`` is not a str.
        ValueError: a part is missing or invalid; the message says which.
    """
    if not isinstance(rest, str):
        raise InvalidArgumentError(
            f"address must be a str like 'localhost:name', got {type(rest).__name__}"
        )
    shown = rest if address is None else address
    host, colon, port = rest.partition(":")
    if not colon:
        raise InvalidArgumentError(
            f"Address should be in format 'host:port', got {shown!r} "
            "(e.g. 'localhost:chat' or 'tcp://1.2.3.4:5000')."
        )
    return _resolve_host(host, shown), _resolve_port(port, shown)


def split_address(address: str) -> tuple[str | None, str, int]:
    """Parse a whole ``[scheme://]host:port`` address.

    Returns:
        ``(scheme or None, host, port)``; see :func:`split_scheme` and
        :func:`parse_host_port`.
    """
    scheme, rest = split_scheme(address)
    host, port = parse_host_port(rest, address=address)
    return scheme, host, port


def bind_port_offsets(max_tries: int) -> list[int]:
    """Return the port offsets that ``bind(address, max_tries)`` tries, in order.

    After failed attempt ``i`` (0-based) 2.x increases the port by
    ``floor(sqrt(i + 1))``, giving 0, 1, 2, 3, 5, 7, 9, 11, 13, 16, 19, ...
    The gaps grow so that many contexts starting at once on one name spread
    out instead of all racing for neighbouring ports.

    Args:
        max_tries: Number of ports to try, an int >= 1.

    Raises:
        TypeError: ``max_tries`` is not an int.
        ValueError: ``max_tries`` < 1.
    """
    if not isinstance(max_tries, int) or isinstance(max_tries, bool):
        raise InvalidArgumentError(f"max_tries must be an int >= 1, got {type(max_tries).__name__}")
    if max_tries < 1:
        raise InvalidArgumentError(f"max_tries must be an int >= 1, got {max_tries}")
    offsets = [0]
    offset = 0
    for i in range(max_tries - 1):
        offset += math.isqrt(i + 1)
        offsets.append(offset)
    return offsets


def address_error(doing: str, address: str, exc: OSError) -> OSError:
    """What bind/connect raise for a transport's ``exc``: the user's address first.

    The error is raised in the user's thread with a short chain: the
    transport's message follows the address as the user wrote it, and the
    underlying error (a socket's, a :class:`HandshakeError`) is its cause,
    without the IO engine's frames, which would bury the message. A password
    or token in the address (``nats://user:password@...``) is shown as ``***``.
    """
    text = f"{doing} {redact_credentials(address)!r}: {exc.args[-1] if exc.args else exc}"
    if exc.errno == errno.EADDRINUSE:
        text += (" " if text.endswith(".") else ". ") + IN_USE_HINT
    error: OSError
    if isinstance(exc, TimeoutError):
        error = YotonTimeoutError(text)
    elif doing == "Cannot connect to":
        error = ConnectError(text)
    else:
        try:
            error = type(exc)(text)
        except Exception:  # an OSError subclass with a constructor of its own
            error = OSError(text)
    error.errno = exc.errno
    cause = exc.__cause__ if isinstance(exc, ConnectError) else exc
    error.__cause__ = None if cause is None else cause.with_traceback(None)
    error.__suppress_context__ = True
    return error
