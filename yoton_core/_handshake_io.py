"""Driving the sans-IO handshake over a trio stream: the only IO of the handshake.

:class:`~._handshake.Handshake` (the 2.x ``YOTON!`` lines) and
:class:`~._auth.Authenticator` (the optional shared-secret exchange) only
consume and produce bytes, and word their own failures: what the peer sent,
:meth:`receive_eof` when it hung up, :meth:`timed_out` when the deadline
passed. This module owns the stream, runs the two machines in turn and
reports what the running one says. The caller owns the deadline (the
handshake timeout, which covers both, and a TLS handshake before them);
when it passes, :func:`handshake_timed_out` gives the reason of the machine
that was waiting.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._auth import HELLO as AUTH_HELLO
from ._auth import NO_KEY_REASON, NO_KEY_REPLY, Authenticator, is_auth_message
from ._engine import LINK_ERRORS
from ._errors import HandshakeError
from ._handshake import Handshake

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["HandshakeResult", "handshake_timed_out", "run_handshake"]

#: The machine the handshake of the current trio task waits on (each
#: handshake runs in a task of its own; the task's context holds it).
_running: contextvars.ContextVar[Handshake | Authenticator | None] = contextvars.ContextVar(
    "yoton_handshake", default=None
)


@dataclass(frozen=True)
class HandshakeResult:
    """What yoton's handshake on a new stream learned.

    Attributes:
        peer_id: The id of the context at the other end.
        peer_pid: Its process id.
        leftover: Bytes that came after the handshake: the start of the
            package stream.
        joins: The core's (join announcements, ``_joins.py``): what the peer
            asked for and what we told it, or None for a 2.x peer.
        last: The core's: what a bind side still sends to finish the
            handshake (its line or its OK), held back so that the link is
            registered before the peer's connect() returns.
    """

    peer_id: int
    peer_pid: int
    leftover: bytes = b""
    joins: tuple[bool, bool] | None = None
    last: bytes = b""


def handshake_timed_out() -> str:
    """The reason to report when the handshake of this task ran out of time.

    The machine that was waiting words it (what it had received so far);
    "Handshake timed out." when none was (e.g. a TLS handshake before ours).
    """
    machine = _running.get()
    if machine is None:
        return "Handshake timed out."
    machine.timed_out()
    return machine.error or "Handshake timed out."


async def _receive(stream: trio.abc.Stream, machine: Handshake | Authenticator) -> bytes:
    """Read the next bytes for ``machine``; on EOF let it say why it failed."""
    data = bytes(await stream.receive_some(4096))
    if not data:
        machine.receive_eof()
        raise HandshakeError(machine.error or "Handshake failed: the peer closed the connection.")
    return data


async def run_handshake(stream: trio.abc.Stream, role: str, context: Context) -> HandshakeResult:
    """Run yoton's handshake (and authentication, with an ``auth_key``) on ``stream``.

    Args:
        stream: A fresh stream to the peer.
        role: ``"bind"`` or ``"connect"``.
        context: The local context (its id, key and join announcements).

    Raises:
        HandshakeError: the peer is not yoton, or refused, or was refused,
            or hung up; the message is the reason.
    """
    told = context._joins_for_handshake()
    hs = Handshake(role, context.id, os.getpid(), joins=told)  # type: ignore[arg-type]
    _running.set(hs)
    key = context._auth_key
    out = hs.initiate()
    if out and key is not None:  # a keyed connect side announces itself (_auth.py)
        out += AUTH_HELLO
    if out:
        await stream.send_all(out)
    while hs.state == Handshake.AWAITING:
        out = hs.receive_data(await _receive(stream, hs))
        if out and hs.state == Handshake.DONE and (key is not None or role == "bind"):
            break  # sent later: with the challenge (keyed), or as ``last``
        if out:
            await stream.send_all(out)
    if hs.state != Handshake.DONE:
        raise HandshakeError(hs.error or "Handshake failed.")
    assert hs.peer_id is not None and hs.peer_pid is not None
    # Join announcements on request (_joins.py): kept by the handshake that
    # wins (a bind may handshake with several candidates at once).
    joins = (hs.peer_joins, told) if hs.peer_joins_cap else None
    leftover = hs.leftover
    last = out if role == "bind" else b""
    # -- authentication (_auth.py): after the 2.x lines, before any package
    if key is not None:
        auth = Authenticator(role, key, context.id, hs.peer_id)  # type: ignore[arg-type]
        _running.set(auth)
        leftover, last = await _authenticate(stream, auth, out, leftover, role == "bind")
    elif is_auth_message(leftover):  # we have no key; the peer has one
        with trio.move_on_after(0.5):
            await stream.send_all(last + NO_KEY_REPLY)
        raise HandshakeError(NO_KEY_REASON)
    # -- end of authentication
    _running.set(None)
    return HandshakeResult(hs.peer_id, hs.peer_pid, leftover, joins, last)


async def _authenticate(
    stream: trio.abc.Stream,
    auth: Authenticator,
    first: bytes,
    leftover: bytes,
    hold_last: bool,
) -> tuple[bytes, bytes]:
    """Run ``auth`` over ``stream``; return ``(bytes that followed it, last)``.

    ``first`` is sent before our own first message (a keyed bind side's
    ``YOTON!`` line, sent in the same write as its challenge so a keyless peer
    sees both at once); ``leftover`` is what followed the peer's line. With
    ``hold_last`` our final OK is not sent but returned as ``last`` (the bind
    side registers the connection first); else ``last`` is empty.
    """
    out = first + auth.initiate()
    if leftover:
        out += auth.receive_data(leftover)
    while auth.state == Authenticator.AWAITING:
        if out:
            await stream.send_all(out)
        out = auth.receive_data(await _receive(stream, auth))
    if out and hold_last and auth.state == Authenticator.DONE:
        return auth.leftover, out
    if out:  # our OK, or a FAIL that tells the peer why
        try:
            await stream.send_all(out)
        except LINK_ERRORS:
            if auth.state == Authenticator.DONE:
                raise
    if auth.state != Authenticator.DONE:
        raise HandshakeError(auth.error or "Authentication failed.")
    return auth.leftover, b""
