"""Driving the sans-IO handshake over a trio stream.

:class:`~._handshake.Handshake` (the 2.x ``YOTON!`` lines) and
:class:`~._auth.Authenticator` (the optional shared-secret exchange) only
consume and produce bytes; this module owns the stream and runs them in
turn. The caller owns the deadline (the handshake timeout covers both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._auth import HELLO as AUTH_HELLO
from ._auth import NO_KEY_REASON, NO_KEY_REPLY, Authenticator, authenticate_stream, is_auth_message
from ._errors import HandshakeError
from ._handshake import Handshake

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["HandshakeResult", "run_handshake"]


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


async def run_handshake(stream: trio.abc.Stream, role: str, context: Context) -> HandshakeResult:
    """Run yoton's handshake (and authentication, with an ``auth_key``) on ``stream``.

    Args:
        stream: A fresh stream to the peer.
        role: ``"bind"`` or ``"connect"``.
        context: The local context (its id, key and join announcements).

    Raises:
        HandshakeError: the peer is not yoton, or refused, or was refused.
    """
    told = context._joins_for_handshake()
    hs = Handshake(role, context.id, os.getpid(), joins=told)  # type: ignore[arg-type]
    key = context._auth_key
    out = hs.initiate()
    if out and key is not None:  # a keyed connect side announces itself (_auth.py)
        out += AUTH_HELLO
    if out:
        await stream.send_all(out)
    while hs.state == Handshake.AWAITING:
        data = await stream.receive_some(4096)
        if not data:
            raise HandshakeError(
                "Handshake failed: the peer closed the connection during the handshake."
            )
        out = hs.receive_data(data)
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
        leftover, last = await authenticate_stream(stream, auth, out, leftover, role == "bind")
    elif is_auth_message(leftover):  # we have no key; the peer has one
        with trio.move_on_after(0.5):
            await stream.send_all(last + NO_KEY_REPLY)
        raise HandshakeError(NO_KEY_REASON)
    # -- end of authentication
    return HandshakeResult(hs.peer_id, hs.peer_pid, leftover, joins, last)
