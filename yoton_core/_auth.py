"""Shared-secret authentication of a stream handshake, as a pure state machine.

When a context has an ``auth_key`` (``Context(auth_key=...)``), both ends run
this exchange right after the 2.x ``YOTON!`` lines (:mod:`._handshake`) and
before a single package is framed or routed. Without a key the line exchange
is exactly 2.x's, so nothing changes for peers that do not use it.

The exchange is a mutual HMAC-SHA256 challenge-response::

    connect -> bind      YOTON-AUTH1 HELLO             (with its YOTON! line)
    bind    -> connect   YOTON-AUTH1 CHALLENGE <nonce_b>  (with its YOTON! line)
    connect -> bind      YOTON-AUTH1 RESPONSE <nonce_c> <mac_c>
    bind    -> connect   YOTON-AUTH1 OK <mac_b>        (or FAIL <reason>)

``mac_x = HMAC(key, label_x + nonce_b + nonce_c + id_bind + id_connect)``
with a different label per direction, so an answer cannot be reflected back
to its sender, and fresh 128-bit random nonces from both sides, so an answer
cannot be replayed on another connection. MACs are compared with
:func:`hmac.compare_digest`. The key never crosses the wire.

Why after the lines and not inside them: the lines stay 2.x compatible when
auth is off. The HELLO and the CHALLENGE travel in the same write as their
sender's line, so a keyless yoton peer finds them right after the line
(:func:`is_auth_message`) and refuses with a clear reason on both sides,
instead of taking them for a broken package stream. (Should the network split
that write, the keyless side reports a protocol error instead; nothing is
routed either way.)

Like :class:`._handshake.Handshake` this machine only consumes and produces
bytes; :mod:`._handshake_io` owns the stream and drives both, and the caller
owns the deadline (the handshake timeout covers this phase too).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Literal

from ._errors import InvalidArgumentError

if TYPE_CHECKING:
    from ._context import Context

__all__ = [
    "AUTH_REQUIRED_HINT",
    "NO_KEY_REASON",
    "NO_KEY_REPLY",
    "HELLO",
    "Authenticator",
    "auth_eof_reason",
    "is_auth_message",
    "normalize_auth_key",
    "pairing_problem",
    "pairing_refusal",
]

MAGIC = b"YOTON-AUTH1 "
NONCE_BYTES = 16
_MAX_LINE = 256
#: A keyed connect side sends this with its YOTON! line.
HELLO = b"YOTON-AUTH1 HELLO\r\n"
_CHALLENGE_RE = re.compile(rb"YOTON-AUTH1 CHALLENGE ([0-9a-f]{32})\r\n")
_RESPONSE_RE = re.compile(rb"YOTON-AUTH1 RESPONSE ([0-9a-f]{32}) ([0-9a-f]{64})\r\n")
_OK_RE = re.compile(rb"YOTON-AUTH1 OK ([0-9a-f]{64})\r\n")
_FAIL_RE = re.compile(rb"YOTON-AUTH1 FAIL ([ -~]{0,200})\r\n")

_LABEL = {"connect": b"yoton-auth-v1 connect->bind", "bind": b"yoton-auth-v1 bind->connect"}

#: How to fix a refusal for lack of a key; part of the reasons below.
AUTH_REQUIRED_HINT = "give both contexts the same shared secret with Context(auth_key=...)"

#: A keyless context that receives a challenge fails with this reason...
NO_KEY_REASON = (
    "Authentication required: the peer requires a shared key and this context has none; "
    f"{AUTH_REQUIRED_HINT}."
)
#: ...and tells the keyed peer why it goes away.
NO_KEY_REPLY = b"YOTON-AUTH1 FAIL no auth_key on this side\r\n"

_PEER_HAS_NO_KEY = (
    f"Authentication required: the peer has no auth_key and this context requires one; "
    f"{AUTH_REQUIRED_HINT}."
)


def auth_eof_reason(role: str, heard: bool) -> str:
    """The reason when the peer hangs up during the exchange.

    ``heard``: whether the peer sent any authentication line before; if not,
    it most likely has no key (or is yoton 2.x) and gave up on our bytes.
    """
    if heard:
        return "Authentication failed: the peer closed the connection during authentication."
    what = "authenticating" if role == "bind" else "asking for authentication"
    return (
        f"Authentication required: the peer closed the connection without {what} "
        f"(it has no auth_key, or is a yoton 2.x peer); {AUTH_REQUIRED_HINT}."
    )


def normalize_auth_key(key: object) -> bytes | None:
    """Validate a user's ``auth_key``: None (off), non-empty bytes, or str (UTF-8).

    Raises:
        TypeError: not bytes, bytearray, str or None.
        ValueError: empty.
    """
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key)
    else:
        raise InvalidArgumentError(
            f"auth_key must be bytes or str (or None to turn authentication off), "
            f"got {type(key).__name__}"
        )
    if not key:
        raise InvalidArgumentError(
            "auth_key must not be empty: use a long random secret (e.g. secrets.token_bytes(32)), "
            "or None to turn authentication off"
        )
    return key


def pairing_problem(connect_key: bytes | None, bind_key: bytes | None) -> tuple[str, str] | None:
    """For transports without bytes (inproc): compare the two contexts' keys.

    Returns None when they may pair, else ``(reason for the connecting side,
    reason for the bound side)``, worded like the stream exchange's, so that
    a misconfiguration reads the same on every transport.
    """
    if connect_key is None and bind_key is None:
        return None
    if connect_key is None:
        return NO_KEY_REASON, _PEER_HAS_NO_KEY
    if bind_key is None:
        return _PEER_HAS_NO_KEY, NO_KEY_REASON
    if hmac.compare_digest(connect_key, bind_key):
        return None
    return (
        "Authentication failed: the peer refused us (wrong key).",
        "Authentication failed: wrong key (the peer's key is not ours).",
    )


def pairing_refusal(connecting: Context, bound: Context) -> tuple[str, str] | None:
    """Whether two contexts of one process may pair, given their ``auth_key`` settings.

    For transports that join contexts without a byte stream (``inproc``): the
    same rule and reasons as the stream handshake's challenge-response, so a
    misconfiguration reads the same on every transport, without a transport
    ever seeing a key.

    Returns:
        None when they may pair, else ``(reason for the connecting side,
        reason for the bound side)``.
    """
    return pairing_problem(connecting._auth_key, bound._auth_key)


def is_auth_message(data: bytes) -> bool:
    """True if ``data`` starts with an authentication line (a keyed peer asking us)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def _mac(key: bytes, direction: str, nonce_b: bytes, nonce_c: bytes, id_b: int, id_c: int) -> bytes:
    msg = b"".join(
        (_LABEL[direction], nonce_b, nonce_c, id_b.to_bytes(8, "big"), id_c.to_bytes(8, "big"))
    )
    return hmac.new(key, msg, hashlib.sha256).digest()


class Authenticator:
    """One side of the authentication exchange with one peer.

    Args:
        role: ``"connect"`` or ``"bind"``, as in the line handshake.
        key: The shared secret (see :func:`normalize_auth_key`).
        context_id: Our context id.
        peer_id: The peer's context id, from its ``YOTON!`` line.
        nonce: Our 16-byte nonce; random (:mod:`secrets`) when omitted.

    Attributes:
        state: :attr:`AWAITING`, :attr:`DONE` or :attr:`FAILED`.
        error: Why it FAILED, for the close reason / the connect error.
        leftover: Bytes received after the last auth line (the package stream).
    """

    AWAITING = "AWAITING"
    DONE = "DONE"
    FAILED = "FAILED"

    def __init__(
        self,
        role: Literal["connect", "bind"],
        key: bytes,
        context_id: int,
        peer_id: int,
        nonce: bytes | None = None,
    ) -> None:
        if role not in ("connect", "bind"):
            raise ValueError(f"role must be 'connect' or 'bind', got {role!r}")
        if not isinstance(key, bytes) or not key:
            raise ValueError("key must be non-empty bytes (see normalize_auth_key)")
        if nonce is None:
            nonce = secrets.token_bytes(NONCE_BYTES)
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {nonce!r}")
        self.role = role
        self._key = key
        self._nonce = nonce
        if role == "bind":
            self._ids = (context_id, peer_id)
        else:
            self._ids = (peer_id, context_id)
        self._peer_nonce = b""
        self._hello = False
        #: Whether the peer sent any authentication line yet.
        self.heard = False
        self.state = self.AWAITING
        self.error: str | None = None
        self.leftover = b""
        self._buf = b""

    def initiate(self) -> bytes:
        """What to send right after the ``YOTON!`` line: the challenge (bind side)."""
        if self.role == "bind":
            return b"YOTON-AUTH1 CHALLENGE %s\r\n" % self._nonce.hex().encode()
        return b""

    def _macs(self, nonce_b: bytes, nonce_c: bytes) -> tuple[bytes, bytes]:
        id_b, id_c = self._ids
        return (
            _mac(self._key, "connect", nonce_b, nonce_c, id_b, id_c),
            _mac(self._key, "bind", nonce_b, nonce_c, id_b, id_c),
        )

    def _fail(self, reason: str, reply: bytes = b"") -> bytes:
        self.state = self.FAILED
        self.error = reason
        self._buf = self.leftover = b""
        return reply

    def timed_out(self) -> None:
        """Mark an AWAITING exchange as failed because the caller's deadline passed."""
        if self.state == self.AWAITING:
            self._fail("Authentication timed out: the peer did not finish the exchange in time.")

    def receive_eof(self) -> None:
        """Mark an AWAITING exchange as failed because the peer closed the connection."""
        if self.state == self.AWAITING:
            self._fail(auth_eof_reason(self.role, self.heard))

    def receive_data(self, data: bytes) -> bytes:
        """Consume bytes from the peer; return bytes to send now."""
        if self.state != self.AWAITING:
            if self.state == self.DONE and data:
                self.leftover += bytes(data)
            return b""
        out = b""
        self._buf += bytes(data)
        while self.state == self.AWAITING and self._buf:
            buf = self._buf
            if not (buf.startswith(MAGIC) or MAGIC.startswith(buf)):
                return out + self._not_auth(buf)
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) >= _MAX_LINE:
                    return out + self._fail(
                        "Authentication failed: the peer sent an over-long authentication line."
                    )
                return out
            line, self._buf = buf[: end + 2], buf[end + 2 :]
            self.heard = True
            out += self._line(line)
        if self.state == self.DONE:
            self.leftover, self._buf = self._buf, b""
        return out

    def _not_auth(self, buf: bytes) -> bytes:
        if self.role == "bind":
            return self._fail(
                "Authentication required: the peer did not authenticate (it has no auth_key, "
                f"or is a yoton 2.x peer); {AUTH_REQUIRED_HINT}.",
                b"YOTON-AUTH1 FAIL authentication required\r\n",
            )
        return self._fail(
            "Authentication required: this context has an auth_key but the peer did not ask "
            f"for authentication (it has no auth_key, or is a yoton 2.x peer); "
            f"{AUTH_REQUIRED_HINT}.",
            b"YOTON-AUTH1 FAIL authentication required\r\n",
        )

    def _line(self, line: bytes) -> bytes:
        m = _FAIL_RE.fullmatch(line)
        if m is not None:
            said = m.group(1).decode("ascii")
            if "no auth_key" in said:
                return self._fail(_PEER_HAS_NO_KEY)
            return self._fail(f"Authentication failed: the peer refused us ({said}).")
        if self.role == "connect" and not self._peer_nonce:
            m = _CHALLENGE_RE.fullmatch(line)
            if m is None:
                return self._garbled(line)
            nonce_b = bytes.fromhex(m.group(1).decode())
            self._peer_nonce = nonce_b
            mac_c, _ = self._macs(nonce_b, self._nonce)
            return b"YOTON-AUTH1 RESPONSE %s %s\r\n" % (
                self._nonce.hex().encode(),
                mac_c.hex().encode(),
            )
        if self.role == "connect":
            m = _OK_RE.fullmatch(line)
            if m is None:
                return self._garbled(line)
            _, mac_b = self._macs(self._peer_nonce, self._nonce)
            if not hmac.compare_digest(bytes.fromhex(m.group(1).decode()), mac_b):
                return self._fail(
                    "Authentication failed: wrong key (the peer could not prove it has our "
                    "auth_key)."
                )
            self.state = self.DONE
            return b""
        if line == HELLO and not self._hello:
            self._hello = True
            return b""
        m = _RESPONSE_RE.fullmatch(line)
        if m is None:
            return self._garbled(line, b"YOTON-AUTH1 FAIL malformed response\r\n")
        nonce_c = bytes.fromhex(m.group(1).decode())
        mac_c, mac_b = self._macs(self._nonce, nonce_c)
        if nonce_c == self._nonce or not hmac.compare_digest(
            bytes.fromhex(m.group(2).decode()), mac_c
        ):
            return self._fail(
                "Authentication failed: wrong key (the peer's answer to our challenge did not "
                "verify).",
                b"YOTON-AUTH1 FAIL wrong key\r\n",
            )
        self.state = self.DONE
        return b"YOTON-AUTH1 OK %s\r\n" % mac_b.hex().encode()

    def _garbled(self, line: bytes, reply: bytes = b"") -> bytes:
        shown = repr(line[:80])
        return self._fail(f"Authentication failed: unexpected message {shown}.", reply)

    def __repr__(self) -> str:
        detail = f", error={self.error!r}" if self.error else ""
        return f"<Authenticator {self.role} {self.state}{detail}>"
