"""The NATS client protocol as pure code: bytes in, events out, bytes out.

NATS speaks a small text protocol (docs.nats.io, "Client Protocol"): the server
sends ``INFO {json}``, ``MSG``/``HMSG`` with a payload, ``PING``/``PONG``,
``+OK`` and ``-ERR '<text>'``; the client sends ``CONNECT {json}``,
``PUB``/``HPUB``, ``SUB``, ``UNSUB``, ``PING`` and ``PONG``. Every line ends
in CRLF; a payload follows its control line and ends in CRLF too.

Why our own and not a client library: the transport must see one server
connection as one ordered stream (yoton drops a package whose source
sequence number went backwards, so a client that dispatches each subscription
on its own queue loses messages) and must batch its writes with the rest of
yoton's IO engine. The protocol is small enough that a parser is a page.

Like h11, this module owns no socket, thread or clock: :class:`ServerReader`
turns received bytes into frozen event objects, and the ``*_command``
functions turn requests into bytes. The IO side (``_client.py``) moves the
bytes. Garbage from the server raises :class:`NatsProtocolError`, which names
what was wrong; the caller drops that server connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Err",
    "Info",
    "Msg",
    "NatsProtocolError",
    "Ok",
    "PING",
    "PONG",
    "Ping",
    "Pong",
    "ServerReader",
    "check_subject",
    "connect_command",
    "pub_command",
    "pub_header",
    "sub_command",
    "unsub_command",
]

PING = b"PING\r\n"
PONG = b"PONG\r\n"

#: Longest control line accepted from a server (an INFO with many cluster URLs
#: is the longest there is); longer means garbage, not a line to buffer forever.
MAX_CONTROL_LINE = 1 << 20
#: Largest payload accepted in one MSG unless the reader is told otherwise.
DEFAULT_MAX_PAYLOAD_IN = 64 << 20


class NatsProtocolError(Exception):
    """The server sent something that is not the NATS protocol."""


@dataclass(frozen=True, slots=True)
class Info:
    """``INFO``: what the server is and what it asks of the client.

    Attributes:
        fields: The decoded JSON object, as sent (unknown keys included).
    """

    fields: dict[str, Any] = field(repr=False)

    @property
    def max_payload(self) -> int:
        """Largest message payload the server accepts (1 MiB by default)."""
        value = self.fields.get("max_payload", 1 << 20)
        return value if isinstance(value, int) and value > 0 else 1 << 20

    @property
    def connect_urls(self) -> list[str]:
        """``host:port`` of the other servers of the cluster a client may use."""
        urls = self.fields.get("connect_urls") or []
        return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []

    @property
    def auth_required(self) -> bool:
        return bool(self.fields.get("auth_required"))

    @property
    def tls_required(self) -> bool:
        return bool(self.fields.get("tls_required"))

    @property
    def tls_available(self) -> bool:
        return bool(self.fields.get("tls_available"))

    @property
    def headers(self) -> bool:
        """True when the server understands HPUB/HMSG (needed for no-responders)."""
        return bool(self.fields.get("headers"))

    @property
    def lame_duck(self) -> bool:
        """True when the server is about to shut down (lame duck mode)."""
        return bool(self.fields.get("ldm"))

    @property
    def proto(self) -> int:
        value = self.fields.get("proto", 0)
        return value if isinstance(value, int) else 0

    @property
    def server_id(self) -> str:
        return str(self.fields.get("server_id", ""))

    @property
    def nonce(self) -> str | None:
        value = self.fields.get("nonce")
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return f"Info(server_id={self.server_id!r}, max_payload={self.max_payload})"


@dataclass(frozen=True, slots=True)
class Msg:
    """``MSG`` / ``HMSG``: a message for one of our subscriptions.

    Attributes:
        subject: The subject it was published on.
        sid: The id we gave the subscription.
        reply: The reply subject, or "".
        payload: The message bytes.
        headers: The raw header block (``NATS/1.0 ...`` up to the blank line)
            for ``HMSG``; None for ``MSG``.
    """

    subject: str
    sid: int
    reply: str
    payload: bytes = field(repr=False)
    headers: bytes | None = None

    @property
    def status(self) -> int | None:
        """The status code of a header-only server message (503: no responders)."""
        h = self.headers
        if not h or not h.startswith(b"NATS/1.0 "):
            return None
        code = h[9:12]
        return int(code) if code.isdigit() else None


@dataclass(frozen=True, slots=True)
class Ping:
    """``PING``: the server asks whether we are alive (answer ``PONG``)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """``PONG``: the answer to our oldest unanswered ``PING``."""


@dataclass(frozen=True, slots=True)
class Ok:
    """``+OK``: only sent in verbose mode, which we never ask for."""


@dataclass(frozen=True, slots=True)
class Err:
    """``-ERR``: the server reports an error; most close the connection.

    Attributes:
        message: The text without the quotes, e.g. "Authorization Violation".
    """

    message: str

    @property
    def is_auth_failure(self) -> bool:
        text = self.message.lower()
        return "authorization" in text or "authentication" in text or "user " in text

    @property
    def closes_connection(self) -> bool:
        """False for the errors after which the server keeps the connection."""
        text = self.message.lower()
        return not (text.startswith("invalid subject") or text.startswith("permissions violation"))


Event = Info | Msg | Ping | Pong | Ok | Err

_PING_EVENT = Ping()
_PONG_EVENT = Pong()
_OK_EVENT = Ok()


def _preview(data: bytes | bytearray, limit: int = 60) -> str:
    shown = repr(bytes(data[:limit]))
    return shown + ("..." if len(data) > limit else "")


class ServerReader:
    """Turns the bytes a NATS server sends into events, in order.

    Args:
        max_payload: Largest ``MSG`` payload accepted; a larger announced size
            is garbage (raise) rather than a reason to buffer without bound.

    Call :meth:`feed` with each chunk received; it returns the complete events
    so far. A partial line or payload stays buffered for the next call.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD_IN) -> None:
        if not isinstance(max_payload, int) or max_payload < 1:
            raise ValueError(f"max_payload must be a positive int, got {max_payload!r}")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0
        # A MSG whose payload has not fully arrived: (subject, sid, reply, hdr_len, total).
        self._pending: tuple[str, int, str, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Add received bytes; return the events they complete.

        Raises:
            NatsProtocolError: the bytes are not the NATS server protocol.
        """
        buf = self._buf
        if self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        buf += data
        events: list[Event] = []
        append = events.append
        pos = self._pos
        end = len(buf)
        try:
            while pos < end:
                pending = self._pending
                if pending is not None:
                    subject, sid, reply, hdr_len, total = pending
                    if end - pos < total + 2:
                        break
                    stop = pos + total
                    if buf[stop : stop + 2] != b"\r\n":
                        raise NatsProtocolError(
                            f"a message payload of {total} bytes on {subject!r} is not "
                            f"followed by CRLF (got {_preview(buf[stop : stop + 2])})"
                        )
                    if hdr_len < 0:
                        append(Msg(subject, sid, reply, bytes(buf[pos:stop])))
                    else:
                        split = pos + hdr_len
                        append(
                            Msg(subject, sid, reply, bytes(buf[split:stop]), bytes(buf[pos:split]))
                        )
                    pos = stop + 2
                    self._pending = None
                    continue
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_CONTROL_LINE:
                        raise NatsProtocolError(
                            f"a control line longer than {MAX_CONTROL_LINE} bytes "
                            f"(starts {_preview(buf[pos:])})"
                        )
                    break
                line = bytes(buf[pos:nl])
                pos = nl + 2
                event = self._line(line)
                if event is not None:
                    append(event)
        finally:
            self._pos = pos
            if pos > 65536 and pos * 2 > len(buf):
                del buf[:pos]
                self._pos = 0
        return events

    def _line(self, line: bytes) -> Event | None:
        op = line[:4].upper()
        if op == b"MSG " or op == b"MSG\t":
            self._pending = self._msg_args(line, line[4:].split(), headers=False)
            return None
        if op == b"HMSG":
            self._pending = self._msg_args(line, line[5:].split(), headers=True)
            return None
        if op == b"PING":
            return _PING_EVENT
        if op == b"PONG":
            return _PONG_EVENT
        if op == b"INFO":
            return _info(line)
        if op == b"+OK":
            return _OK_EVENT
        if op == b"-ERR":
            text = line[4:].strip().decode("utf-8", "replace")
            if len(text) >= 2 and text[0] == text[-1] == "'":
                text = text[1:-1]
            return Err(text)
        raise NatsProtocolError(f"unknown operation from the server: {_preview(line)}")

    def _msg_args(
        self, line: bytes, args: list[bytes], headers: bool
    ) -> tuple[str, int, str, int, int]:
        n = len(args)
        want = (4, 5) if headers else (3, 4)
        if n not in want:
            raise NatsProtocolError(f"a malformed message line: {_preview(line)}")
        try:
            subject = args[0].decode("utf-8")
            sid = int(args[1])
            reply = args[2].decode("utf-8") if n == want[1] else ""
            total = int(args[-1])
            hdr_len = int(args[-2]) if headers else -1
        except (ValueError, UnicodeDecodeError):
            raise NatsProtocolError(f"a malformed message line: {_preview(line)}") from None
        if total < 0 or total > self.max_payload:
            raise NatsProtocolError(
                f"a message of {total} bytes, above the limit of {self.max_payload}: "
                f"{_preview(line)}"
            )
        if headers and not 0 <= hdr_len <= total:
            raise NatsProtocolError(f"a header size outside the message: {_preview(line)}")
        return subject, sid, reply, hdr_len, total


def _info(line: bytes) -> Info:
    body = line[5:].strip()
    try:
        fields = json.loads(body)
    except ValueError:
        raise NatsProtocolError(f"an INFO that is not JSON: {_preview(line)}") from None
    if not isinstance(fields, dict):
        raise NatsProtocolError(f"an INFO that is not a JSON object: {_preview(line)}")
    return Info(fields)


# -- what the client sends -------------------------------------------------------


def check_subject(subject: str, *, wildcards: bool = False) -> bytes:
    """Return ``subject`` as bytes, or raise ValueError saying what is wrong with it.

    A subject is one or more non-empty tokens separated by dots, without
    whitespace; ``*`` and ``>`` are wildcards (``>`` only last) and only
    allowed when ``wildcards`` is true (subscriptions).
    """
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"a NATS subject must be a non-empty str, got {subject!r}")
    try:
        raw = subject.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"a NATS subject must be ASCII, got {subject!r}") from None
    if any(c in raw for c in b" \t\r\n"):
        raise ValueError(f"a NATS subject cannot contain whitespace, got {subject!r}")
    tokens = raw.split(b".")
    for i, token in enumerate(tokens):
        if not token:
            raise ValueError(f"a NATS subject cannot have an empty token, got {subject!r}")
        if token in (b"*", b">"):
            if not wildcards:
                raise ValueError(f"wildcards are not allowed here, got {subject!r}")
            if token == b">" and i != len(tokens) - 1:
                raise ValueError(f"'>' must be the last token, got {subject!r}")
        elif b"*" in token or b">" in token:
            raise ValueError(f"a wildcard must be a whole token, got {subject!r}")
    return raw


def connect_command(options: dict[str, Any]) -> bytes:
    """``CONNECT {json}`` with ``options`` (user, pass, auth_token, name, echo, ...)."""
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode("utf-8") + b"\r\n"


def pub_header(subject: bytes, size: int, reply: bytes = b"") -> bytes:
    """The control line of a ``PUB`` (the payload and CRLF follow it).

    ``subject`` (and ``reply``) must have been checked (:func:`check_subject`):
    this is the hot path.
    """
    if reply:
        return b"PUB %s %s %d\r\n" % (subject, reply, size)
    return b"PUB %s %d\r\n" % (subject, size)


def pub_command(subject: str, payload: bytes, reply: str = "") -> bytes:
    """A whole ``PUB`` command (checked; for anything but the hot path)."""
    subj = check_subject(subject)
    rep = check_subject(reply) if reply else b""
    return pub_header(subj, len(payload), rep) + bytes(payload) + b"\r\n"


def sub_command(subject: str, sid: int, queue: str = "") -> bytes:
    """``SUB <subject> [queue] <sid>``."""
    subj = check_subject(subject, wildcards=True)
    if not isinstance(sid, int) or isinstance(sid, bool) or sid < 1:
        raise ValueError(f"a subscription id must be a positive int, got {sid!r}")
    if queue:
        return b"SUB %s %s %d\r\n" % (subj, check_subject(queue), sid)
    return b"SUB %s %d\r\n" % (subj, sid)


def unsub_command(sid: int, max_msgs: int | None = None) -> bytes:
    """``UNSUB <sid> [max_msgs]``."""
    if not isinstance(sid, int) or isinstance(sid, bool) or sid < 1:
        raise ValueError(f"a subscription id must be a positive int, got {sid!r}")
    if max_msgs is None:
        return b"UNSUB %d\r\n" % sid
    return b"UNSUB %d %d\r\n" % (sid, max_msgs)
