"""The yoton TCP handshake as a pure state machine (docs/protocol.md#handshake).

Each side sends one line ``YOTON!<16 hex digit id>.<pid>\\r\\n``. The connect
side speaks first; the bind side answers according to the 2.x decision table:

* a parsable YOTON line -> reply with our own line, then succeed (or fail if
  the peer has our id: a context connecting to itself);
* ``YOTON!`` followed by garbage -> reply ``ERROR: could not parse id.``;
* anything else -> reply ``ERROR: this is Yoton.``.

The machine only consumes and produces bytes. The caller owns the socket and
the clock: it sends what :meth:`Handshake.initiate` and
:meth:`Handshake.receive_data` return, and calls :meth:`Handshake.timed_out`
or :meth:`Handshake.receive_eof` when its deadline passes or the peer hangs
up. Because decisions are made as soon as the bytes allow (a non-yoton peer is
refused on its first byte), a stalled or foreign peer costs no waiting.
"""

from __future__ import annotations

import re
from typing import Literal

from ._joins import LINE_JOINS_OFF, LINE_JOINS_ON

__all__ = ["Handshake", "format_line"]

_MAGIC = b"YOTON!"
_LINE_RE = re.compile(rb"YOTON!([0-9a-fA-F]{1,16})\.([0-9]+)([ \t]*)\r\n")
# Every proper prefix of a valid line (after the magic) matches this.
_PREFIX_RE = re.compile(rb"YOTON!(?:[0-9a-fA-F]{1,16}(?:\.(?:[0-9]+[ \t]*\r?)?)?)?")

_REPLY_PARSE_ERROR = b"ERROR: could not parse id.\r\n"
_REPLY_NOT_YOTON = b"ERROR: this is Yoton.\r\n"
_SELF_CONNECT = "Handshake failed (context cannot connect to self)."


def format_line(context_id: int, pid: int, joins: bool | None = None) -> bytes:
    """Return the handshake line a context with ``context_id`` and ``pid`` sends.

    ``joins``: None for 2.x's plain line; else the line also says that we
    speak join announcements on request and whether we want them now, as
    trailing whitespace 2.x ignores (:data:`._joins.LINE_JOINS_ON` / ``_OFF``).
    """
    tail = b"" if joins is None else LINE_JOINS_ON if joins else LINE_JOINS_OFF
    return b"YOTON!%016x.%d%s\r\n" % (context_id, pid, tail)


def _preview(data: bytes, limit: int = 60) -> str:
    """A short, printable repr of received bytes for error messages."""
    shown = repr(bytes(data[:limit]))
    return shown + ("..." if len(data) > limit else "")


class Handshake:
    """One side of the handshake with one peer.

    Args:
        role: ``"connect"`` (speaks first) or ``"bind"`` (answers).
        context_id: Our context id, a u64.
        pid: Our process id.
        max_line: Longest peer line accepted, CRLF included; longer lines fail
            instead of buffering without bound.
        joins: None sends 2.x's plain line; True/False also offers join
            announcements on request, wanting them now or not (``_joins.py``).

    Attributes:
        state: :attr:`AWAITING`, :attr:`DONE` or :attr:`FAILED`.
        peer_id: The peer's context id once DONE (or on self-connect).
        peer_pid: The peer's process id, likewise.
        error: Why the handshake FAILED, for the connection's close reason.
        leftover: Bytes received after the peer's line: the start of the
            framed package stream, to be fed to the frame decoder.
        peer_joins_cap: Whether the peer's line offered join announcements on
            request (a 2.x peer's never does).
        peer_joins: Whether the peer wants join announcements now (always
            True for a peer without the capability: it gets them all, as in 2.x).
    """

    AWAITING = "AWAITING"
    DONE = "DONE"
    FAILED = "FAILED"

    def __init__(
        self,
        role: Literal["connect", "bind"],
        context_id: int,
        pid: int,
        max_line: int = 256,
        joins: bool | None = None,
    ) -> None:
        if role not in ("connect", "bind"):
            raise ValueError(f"role must be 'connect' or 'bind', got {role!r}")
        if not isinstance(context_id, int) or not 0 <= context_id < 2**64:
            raise ValueError(f"context_id must be an int in [0, 2**64), got {context_id!r}")
        if not isinstance(pid, int) or pid < 0:
            raise ValueError(f"pid must be an int >= 0, got {pid!r}")
        if not isinstance(max_line, int) or max_line < 48:
            raise ValueError(f"max_line must be an int >= 48, got {max_line!r}")
        self.role = role
        self.context_id = context_id
        self.pid = pid
        self.max_line = max_line
        self.line = format_line(context_id, pid, joins)
        self.state = self.AWAITING
        self.peer_id: int | None = None
        self.peer_pid: int | None = None
        self.error: str | None = None
        self.leftover = b""
        self.peer_joins_cap = False
        self.peer_joins = True
        self._buf = b""

    def initiate(self) -> bytes:
        """Return what to send first: our line on the connect side, nothing on the bind side."""
        return self.line if self.role == "connect" else b""

    def _fail(self, reason: str, reply: bytes = b"") -> bytes:
        self.state = self.FAILED
        self.error = reason
        self._buf = b""
        self.leftover = b""
        return reply

    def _reply_for_bad_line(self, reason: str, reply: bytes) -> bytes:
        return self._fail(reason, reply if self.role == "bind" else b"")

    def timed_out(self) -> None:
        """Mark an AWAITING handshake as failed because the caller's deadline passed."""
        if self.state == self.AWAITING:
            received = f" (received {_preview(self._buf)})" if self._buf else ""
            self._fail(f"Handshake timed out{received}.")

    def receive_eof(self) -> None:
        """Mark an AWAITING handshake as failed because the peer closed the connection."""
        if self.state == self.AWAITING:
            received = f" after sending {_preview(self._buf)}" if self._buf else ""
            self._fail(f"Handshake failed: the peer closed the connection{received}.")

    def receive_data(self, data: bytes) -> bytes:
        """Consume bytes from the peer.

        Returns:
            Bytes to send to the peer now (often ``b""``). After DONE, extra
            data is appended to :attr:`leftover`; after FAILED it is ignored.
        """
        if self.state != self.AWAITING:
            if self.state == self.DONE and data:
                self.leftover += bytes(data)
            return b""
        buf = self._buf + bytes(data)
        self._buf = buf
        if not buf:
            return b""
        if not (buf.startswith(_MAGIC) or _MAGIC.startswith(buf)):
            return self._not_yoton(buf)
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= self.max_line:
                return self._reply_for_bad_line(
                    "Handshake failed: handshake line too long "
                    f"(no CRLF within {self.max_line} bytes: {_preview(buf)}).",
                    _REPLY_PARSE_ERROR,
                )
            if not _PREFIX_RE.fullmatch(buf) and len(buf) > len(_MAGIC):
                return self._unparsable(buf)
            return b""
        line, rest = buf[: end + 2], buf[end + 2 :]
        if len(line) > self.max_line:
            return self._reply_for_bad_line(
                f"Handshake failed: handshake line too long ({len(line)} bytes, "
                f"at most {self.max_line}: {_preview(line)}).",
                _REPLY_PARSE_ERROR,
            )
        m = _LINE_RE.fullmatch(line)
        if m is None:
            return self._unparsable(line)
        self.peer_id = int(m.group(1), 16)
        self.peer_pid = int(m.group(2))
        tail = m.group(3)
        if tail == LINE_JOINS_ON or tail == LINE_JOINS_OFF:
            self.peer_joins_cap = True
            self.peer_joins = tail == LINE_JOINS_ON
        reply = self.line if self.role == "bind" else b""
        if self.peer_id == self.context_id:
            return self._fail(_SELF_CONNECT, reply)
        self.state = self.DONE
        self._buf = b""
        self.leftover = rest
        return reply

    def _unparsable(self, text: bytes) -> bytes:
        return self._reply_for_bad_line(
            f"Handshake failed: could not parse the peer's id in {_preview(text)}.",
            _REPLY_PARSE_ERROR,
        )

    def _not_yoton(self, buf: bytes) -> bytes:
        if self.role == "bind":
            return self._fail(
                f"Handshake failed: the peer does not speak yoton (it sent {_preview(buf)}).",
                _REPLY_NOT_YOTON,
            )
        # Connect side: the peer's text (typically "ERROR: ...") is the reason,
        # so wait for its whole line, within reason.
        end = buf.find(b"\r\n")
        if end < 0 and len(buf) < self.max_line:
            return b""
        text = buf[:end] if end >= 0 else buf
        return self._fail(
            f"Handshake failed: the peer replied {_preview(text, 200)} instead of a yoton line."
        )

    def __repr__(self) -> str:
        detail = f", error={self.error!r}" if self.error else ""
        return f"<Handshake {self.role} {self.state}{detail}>"
