"""NATS addresses: which servers, which credentials, which bus.

Forms (the ``nats://`` scheme is removed by the core before we see them):

* ``nats://[user:password@]host:port[,host:port...]/BUS`` -- join bus ``BUS``
  through these servers (more than one: a cluster; the first that answers
  is used). ``nats://token@host:port/BUS`` gives a token instead of a user.
* ``host:port`` (``nats://host:port``, or any plain address with
  ``YOTON_TRANSPORT=nats``) -- the address *names the bus*; the servers come
  from the environment variable ``YOTON_NATS_URL`` (default
  ``nats://127.0.0.1:4222``, the NATS default). The name is parsed like a TCP
  address, so ``localhost:chat`` and ``127.0.0.1:56337`` are the same bus,
  and a program written for TCP runs unchanged.

A bus name becomes one subject token (``yoton.<token>.…``): characters that
NATS subjects cannot hold (``.``, ``*``, ``>``, whitespace, non-ASCII) are
written ``~xx`` (hex of the UTF-8 bytes), so different names never share a
token.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from yoton import InvalidArgumentError
from yoton.transport import parse_host_port

__all__ = [
    "DEFAULT_URL",
    "NatsAddress",
    "bus_token",
    "parse_nats_address",
    "parse_servers",
    "redact",
]

DEFAULT_URL = "nats://127.0.0.1:4222"
ENV_URL = "YOTON_NATS_URL"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:")


@dataclass(frozen=True)
class NatsAddress:
    """A parsed NATS address.

    Attributes:
        servers: ``(host, port)`` of the servers to try, in order.
        user, password, token: Credentials ("" when not given).
        bus: The bus name.
        host_port: ``(host, port)`` when the address named the bus as
            ``host:port`` (then ``port1``/``port2`` report that port).
        text: The address as the user typed it, password or token redacted
            (for error messages and logs).
    """

    servers: tuple[tuple[str, int], ...]
    user: str
    password: str
    token: str
    bus: str
    host_port: tuple[str, int] | None
    text: str


def bus_token(bus: str) -> str:
    """The subject token of bus ``bus`` (reversible; see the module docstring)."""
    out = []
    for ch in bus:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def parse_servers(url: str, *, what: str) -> tuple[list[tuple[str, int]], str, str, str]:
    """``nats://[cred@]host:port[,host:port...]`` -> (servers, user, password, token).

    ``what`` names where the URL came from, for error messages.
    """
    rest = url.strip()
    url = redact(url)
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme.lower() not in ("nats", "tls"):
            raise InvalidArgumentError(
                f"{what} {url!r}: expected a nats:// URL, got scheme {scheme!r}"
            )
    rest = rest.rstrip("/")
    user = password = token = ""
    if "@" in rest:
        cred, _, rest = rest.rpartition("@")
        if ":" in cred:
            user, _, password = cred.partition(":")
            user, password = urllib.parse.unquote(user), urllib.parse.unquote(password)
        else:
            token = urllib.parse.unquote(cred)
        if not (user or token):
            raise InvalidArgumentError(f"{what} {url!r}: empty credentials before '@'")
    servers = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgumentError(
                f"{what} {url!r}: expected servers as host:port (a port number 1..65535), "
                f"got {part.strip()!r}"
            )
        servers.append((host.strip("[]"), int(port)))
    return servers, user, password, token


def redact(address: str) -> str:
    """``address`` with its password or token replaced by ``***`` (for messages and logs)."""
    head, sep, rest = address.partition("://")
    if not sep:
        head, rest = "", address
    servers, slash, bus = rest.partition("/")
    if "@" not in servers:
        return address
    cred, _, hosts = servers.rpartition("@")
    user, colon, _ = cred.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{head}{sep}{shown}@{hosts}{slash}{bus}"


def parse_nats_address(address: str, *, typed: str | None = None) -> NatsAddress:
    """Parse the part after ``nats://`` (or a plain ``host:port``) into a :class:`NatsAddress`.

    Raises:
        yoton.InvalidArgumentError: the address (quoted as typed) and what was
            expected (a ``ValueError``).
    """
    if not isinstance(address, str):
        raise InvalidArgumentError(f"a NATS address must be a str, got {type(address).__name__}")
    text = redact(typed or address)
    server_part, slash, bus = address.partition("/")
    if slash:
        if not bus:
            raise InvalidArgumentError(
                f"Invalid NATS address {text!r}: the bus name after '/' is empty; expected "
                "'nats://host:port/BUS'."
            )
        servers, user, password, token = parse_servers(server_part, what="NATS address")
        return NatsAddress(tuple(servers), user, password, token, bus, None, text)
    try:
        host, port = parse_host_port(address)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"Invalid NATS address {text!r}: expected 'nats://host:port/BUS' or a bus named "
            f"'host:port' on the server of ${ENV_URL} ({exc})"
        ) from None
    env = os.environ.get(ENV_URL) or DEFAULT_URL
    servers, user, password, token = parse_servers(env, what=f"${ENV_URL}")
    return NatsAddress(tuple(servers), user, password, token, f"{host}:{port}", (host, port), text)
