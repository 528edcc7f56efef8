"""Package framing of the yoton TCP stream (docs/protocol.md#framing), sans-IO.

Every package is a 56-byte header of seven little-endian u64 -- control word,
slot, source id, source seq, dest id, dest seq, payload length -- followed by
the payload. This module turns packages into bytes and a byte stream back into
packages. It never touches a socket, so the stream engine, tests and fuzzers
all use the same code.

Zero-length packages are connection-level control messages in 2.x, decided
only by ``source_seq``: 0 is a heartbeat, 1 a close request, anything else is
ignored. A package on slot :data:`SLOT_DUMMY` *with* a payload is a
:class:`ConnectionMessage`: 2.x peers drop it unseen (its source_seq 0 is never
newer than anything), so new-style peers can use it to talk about the
connection itself without disturbing 2.x.

Unlike 2.x (docs/protocol.md#differences-from-2x, items 4 and 5) the decoder enforces a
maximum message size before buffering a payload, and reports a truncated
package at EOF instead of spinning.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import _bytesfill
from ._errors import FrameError

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "CONTROL",
    "CONTROL_BYTES",
    "SLOT_NONE",
    "SLOT_DUMMY",
    "SLOT_CONTEXT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Package",
    "Heartbeat",
    "CloseRequest",
    "ConnectionMessage",
    "HEARTBEAT",
    "CLOSE_REQUEST",
    "HEARTBEAT_BYTES",
    "CLOSE_BYTES",
    "encode_package",
    "encode_packages",
    "encode_connection_message",
    "decode_header",
    "FrameDecoder",
    "Header",
    "make_header",
    "package_header",
    "raw_package",
]

HEADER = struct.Struct("<7Q")
#: Bytes in a package header: seven little-endian u64 (docs/protocol.md#framing).
HEADER_SIZE = 56
CONTROL = 0x2020204E4F544F59
CONTROL_BYTES = b"YOTON   "
SLOT_NONE = 0
SLOT_DUMMY = 1
SEQ_HEARTBEAT, SEQ_CLOSE = 0, 1  # the source_seq of a zero-length package
#: The slot of context messages (``NEW_CONNECTION``); a transport that carries
#: packages its own way keeps them (docs/protocol.md#context-messages).
SLOT_CONTEXT = 2
DEFAULT_MAX_MESSAGE_SIZE = 2**30
#: Payloads of at least this many bytes that span reads are received into
#: their final ``bytes`` object (``_bytesfill``), not collected and joined...
FILL_MIN = 65536
#: ... once 1/FILL_RATIO of them has arrived: the object is as large as the
#: header says, so a hostile length costs at most this many times what came.
FILL_RATIO = 8

assert HEADER.size == HEADER_SIZE
assert CONTROL.to_bytes(8, "little") == CONTROL_BYTES


class Package:
    """One routed unit: a payload plus the header fields that route it.

    ``recv_seq`` is stamped by the receiving context and never sent. The
    constructor does no validation because it runs once per message; values
    out of the u64 range fail when the package is encoded.
    """

    __slots__ = ("slot", "source_id", "source_seq", "dest_id", "dest_seq", "data", "recv_seq")

    def __init__(
        self,
        data: bytes,
        slot: int,
        source_id: int = 0,
        source_seq: int = 0,
        dest_id: int = 0,
        dest_seq: int = 0,
    ) -> None:
        self.data: bytes = data
        self.slot: int = slot
        self.source_id: int = source_id
        self.source_seq: int = source_seq
        self.dest_id: int = dest_id
        self.dest_seq: int = dest_seq
        self.recv_seq: int = 0

    def __repr__(self) -> str:
        data = self.data
        preview = repr(data[:32]) + ("..." if len(data) > 32 else "")
        return (
            f"Package(slot={self.slot}, source_id={self.source_id:#x}, "
            f"source_seq={self.source_seq}, dest_id={self.dest_id:#x}, "
            f"dest_seq={self.dest_seq}, data={preview} ({len(data)} bytes))"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Package):
            return NotImplemented
        return (
            self.slot == other.slot
            and self.source_id == other.source_id
            and self.source_seq == other.source_seq
            and self.dest_id == other.dest_id
            and self.dest_seq == other.dest_seq
            and self.data == other.data
        )

    __hash__: None = None  # type: ignore[assignment]  # mutable, compared by value


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A zero-length package with source_seq 0: "I am still here"."""


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A zero-length package with source_seq 1: the peer closes the connection."""


@dataclass(frozen=True, slots=True)
class ConnectionMessage:
    """A non-empty package on :data:`SLOT_DUMMY`, for the connection itself.

    Only exchanged between new-style yoton peers and never routed to a context.
    """

    payload: bytes


HEARTBEAT = Heartbeat()
CLOSE_REQUEST = CloseRequest()

_pack = HEADER.pack
HEARTBEAT_BYTES = _pack(CONTROL, SLOT_DUMMY, 0, SEQ_HEARTBEAT, 0, 0, 0)
CLOSE_BYTES = _pack(CONTROL, SLOT_DUMMY, 0, SEQ_CLOSE, 0, 0, 0)


def encode_package(pkg: Package) -> bytes:
    """Return the header and payload of ``pkg`` as one bytes object.

    One object means one ``send`` call: 2.x wrote header and payload separately,
    which together with Nagle's algorithm cost ~88 ms per round trip.
    """
    return _pack(*package_header(pkg)) + pkg.data


def encode_packages(pkgs: Iterable[Package]) -> bytes:
    """Encode many packages into one bytes object (for one batched write)."""
    pack = _pack
    control = CONTROL
    parts: list[bytes] = []
    append = parts.append
    for p in pkgs:
        data = p.data
        append(pack(control, p.slot, p.source_id, p.source_seq, p.dest_id, p.dest_seq, len(data)))
        append(data)
    return b"".join(parts)


def encode_connection_message(payload: bytes) -> bytes:
    """Frame ``payload`` as a :class:`ConnectionMessage` (slot 1, other fields 0).

    Raises:
        TypeError: ``payload`` is not bytes-like.
        ValueError: ``payload`` is empty (that would be a heartbeat).
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if not payload:
        raise ValueError("A connection message needs a non-empty payload.")
    return _pack(CONTROL, SLOT_DUMMY, 0, 0, 0, 0, len(payload)) + payload


#: Unpack one header, unchecked (:class:`FrameDecoder` and ``unpack_header`` check).
decode_header = HEADER.unpack_from


def _bad_control(head: bytes) -> str:
    return (
        "Lost track of the stream: bad control bytes "
        f"{head.hex(' ')} ({head!r}), expected {CONTROL_BYTES.hex(' ')} ({CONTROL_BYTES!r})."
    )


Item = Package | Heartbeat | CloseRequest | ConnectionMessage

#: A package header as ``HEADER`` unpacks it: ``(control, slot, source_id,
#: source_seq, dest_id, dest_seq, length)``; ``HEADER.pack(*header)`` gives its
#: 56 bytes. With the payload beside it, this is how packages travel inside a
#: process (no object per package): see :meth:`FrameDecoder.feed_raw`.
Header = tuple[int, int, int, int, int, int, int]


def make_header(
    data: bytes, slot: int, source_id: int, source_seq: int, dest_id: int = 0, dest_seq: int = 0
) -> Header:
    """The :data:`Header` of a package with payload ``data``."""
    return (CONTROL, slot, source_id, source_seq, dest_id, dest_seq, len(data))


def package_header(pkg: Package) -> Header:
    """The :data:`Header` of ``pkg``."""
    return (
        CONTROL,
        pkg.slot,
        pkg.source_id,
        pkg.source_seq,
        pkg.dest_id,
        pkg.dest_seq,
        len(pkg.data),
    )


def raw_package(header: Header, data: bytes) -> Package:
    """A :class:`Package` from a header tuple and its payload."""
    return Package(data, header[1], header[2], header[3], header[4], header[5])


def _items(flat: list[Any], controls: list[tuple[int, Item]]) -> list[Item]:
    """:meth:`FrameDecoder.feed_raw` output as items, in stream order."""
    out: list[Item] = []
    c = 0
    nc = len(controls)
    for i in range(0, len(flat), 2):
        while c < nc and controls[c][0] <= i:
            out.append(controls[c][1])
            c += 1
        h = flat[i]
        out.append(Package(flat[i + 1], h[1], h[2], h[3], h[4], h[5]))
    out.extend(item for _pos, item in controls[c:])
    return out


#: A chunk starting with RUN_MIN packages of one size <= RUN_MAX_PAYLOAD: _decode_run.
RUN_MIN = 8
RUN_MAX_PAYLOAD = 4096
_run_structs: dict[int, tuple[struct.Struct, struct.Struct]] = {}  # by payload size
_FIRST = _CONTROL_OF = operator.itemgetter(0)
_SLOT_OF = operator.itemgetter(1)
_LENGTH_OF = operator.itemgetter(6)


def _decode_run(data: bytes, flat: list[Any], limit: int) -> int:
    """Decode the packages of one payload size that start ``data``, in bulk.

    Small messages come as runs of one size: with a fixed stride,
    ``struct.iter_unpack`` reads their headers and payloads in C (the loop of
    :meth:`FrameDecoder.feed_raw` spends ~0.5 us a package in bytecode). Every
    header is checked (control word, size, not a connection-level package)
    before anything is used; a run that does not hold is left to the loop.
    Returns the offset where the run ended (0: no run, nothing appended).
    """
    size = HEADER.unpack_from(data, 0)[6]
    if not 0 < size <= RUN_MAX_PAYLOAD or size > limit:
        return 0
    stride = HEADER_SIZE + size
    k = len(data) // stride
    if k < RUN_MIN or HEADER.unpack_from(data, stride)[6] != size:
        return 0
    structs = _run_structs.get(size)
    if structs is None:  # (at most RUN_MAX_PAYLOAD of them)
        structs = (struct.Struct(f"<7Q{size}x"), struct.Struct(f"<{HEADER_SIZE}x{size}s"))
        _run_structs[size] = structs
    with memoryview(data) as whole, whole[: k * stride] as view:
        heads = list(structs[0].iter_unpack(view))
        if (
            list(map(_CONTROL_OF, heads)).count(CONTROL) != k
            or list(map(_LENGTH_OF, heads)).count(size) != k
            or list(map(_SLOT_OF, heads)).count(SLOT_DUMMY)
        ):
            return 0
        payloads = list(map(_FIRST, structs[1].iter_unpack(view)))
    run: list[Any] = [None] * (2 * k)
    run[0::2], run[1::2] = heads, payloads
    flat.extend(run)
    return k * stride


class FrameDecoder:
    """Incremental decoder of a yoton package stream.

    Feed it whatever the transport read, in chunks of any size; it returns the
    complete items in order. Parsing works directly on the incoming bytes, and
    only a tail shorter than one package is carried to the next feed. A large
    payload that spans many chunks is collected in parts until an eighth of it
    has arrived, then moved into its final ``bytes`` object
    (:mod:`._bytesfill`), where the rest goes as it arrives; a reader that has
    a socket lets the kernel write it there directly (:meth:`recv_buffer`,
    :meth:`filled`), so most of a 16 MiB message is never copied after the
    read. Without ``_bytesfill`` the parts are joined once at the end.

    Any violation (bad control word, length above ``max_message_size``) raises
    :class:`FrameError` and kills the decoder: there is no way to resync a
    stream that has no frame markers, so the connection must close. Items
    decoded from the same chunk before the bad header are in the exception's
    ``items`` attribute, so the caller may still deliver them.

    Args:
        max_message_size: Largest payload accepted, in bytes. Checked as soon as
            the header arrives, before anything is buffered for the payload.
    """

    __slots__ = (
        "_max",
        "_tail",
        "_head",
        "_parts",
        "_fill",
        "_view",
        "_have",
        "_need",
        "_error",
        "controls",
    )

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if not isinstance(max_message_size, int) or max_message_size < 0:
            raise ValueError(f"max_message_size must be an int >= 0, got {max_message_size!r}")
        self._max = max_message_size
        self._tail = b""  # bytes of an incomplete header (< one header)
        self._head: Header | None = None  # header whose payload is being collected
        self._parts: list[bytes] = []  # payload chunks collected so far
        # Or: the payload's own bytes object, filled through _view (see recv_buffer).
        self._fill: bytes | None = None
        self._view: memoryview | None = None
        self._have = 0  # payload bytes received (in _parts, or written into _fill)
        self._need = 0  # payload length of _head
        self._error: str | None = None
        #: The connection-level items (heartbeats, close requests, connection
        #: messages) of the last :meth:`feed_raw`, as ``(position, item)``:
        #: the item came before the package at ``flat[position]``.
        self.controls: list[tuple[int, Item]] = []

    @property
    def _fillable(self) -> bool:
        """The payload being collected is large enough to be filled in place."""
        return self._need >= FILL_MIN and _bytesfill.AVAILABLE

    @property
    def wanted(self) -> int:
        """Bytes worth asking for in the next read inside a payload (0 if none).

        The payload's missing bytes, or while it is still collected in parts,
        only those up to the point where it moves into its own object (from
        there the reader writes into :meth:`recv_buffer`).
        """
        if self._head is None:
            return 0
        missing = self._need - self._have
        if self._view is None and self._fillable:
            until = -(-self._need // FILL_RATIO) - self._have
            if 0 < until < missing:
                return until
        return missing

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as items."""
        if self._head is not None:
            return HEADER_SIZE + self._have
        return len(self._tail)

    @property
    def max_message_size(self) -> int:
        return self._max

    def _fail(self, message: str, flat: list) -> FrameError:
        self._error = message
        self._tail = b""
        self._head = None
        self._parts = []
        self._fill = self._view = None  # never seen by anyone: not all of it was written
        return FrameError(message, flat)  # with what came before the bad bytes

    def _finish_payload(self, data: bytes, flat: list) -> bytes:
        """Add ``data`` to the collected payload; emit it if complete; return the rest."""
        missing = self._need - self._have
        view = self._view
        if view is not None:  # filling the payload's own bytes object
            if len(data) < missing:
                view[self._have : self._have + len(data)] = data
                self._have += len(data)
                return b""
            view[self._have :] = memoryview(data)[:missing]
            self._complete(self._fill, flat)
            return data[missing:]
        if len(data) < missing:
            self._parts.append(data)
            self._have += len(data)
            if self._have * FILL_RATIO >= self._need:
                self._start_filling()
            return b""
        parts = self._parts
        parts.append(data[:missing] if len(data) > missing else data)
        self._complete(b"".join(parts), flat)
        return data[missing:]

    def _complete(self, payload: Any, flat: list) -> None:
        """The payload being collected is whole: emit it, collect nothing more."""
        head = self._head
        assert head is not None
        self._head = None
        self._parts = []
        self._fill = self._view = None
        self._have = self._need = 0
        if head[1] == SLOT_DUMMY:
            self.controls.append((len(flat), ConnectionMessage(payload)))
        else:
            flat.append(head)
            flat.append(payload)

    def _start_payload(self, head: Header, data: bytes, start: int) -> None:
        """A header whose payload did not arrive whole: collect from ``data[start:]``."""
        self._head = head
        self._need = head[6]
        self._have = len(data) - start
        self._parts = [data[start:]] if self._have else []
        if self._have * FILL_RATIO >= self._need:
            self._start_filling()

    def _start_filling(self) -> None:
        """Move the collected parts into the payload's own bytes object, if worth it."""
        if not self._fillable:
            return
        try:
            fill, view = _bytesfill.unfilled_bytes(self._need)
        except MemoryError:  # keep collecting parts
            return
        pos = 0
        for part in self._parts:
            view[pos : pos + len(part)] = part
            pos += len(part)
        self._parts = []
        self._fill = fill
        self._view = view

    def recv_buffer(self) -> memoryview | None:
        """Where the next bytes of the stream may be written directly, or None.

        While a large payload is being received this is the rest of its final
        ``bytes`` object: a reader with a socket passes it to ``recv_into`` and
        then calls :meth:`filled`. At most the payload's missing bytes fit, so
        nothing of the next package lands there.
        """
        view = self._view
        if view is None:
            return None
        return view[self._have :]

    def filled(self, n: int) -> list[Any]:
        """``n`` bytes were written into :meth:`recv_buffer`'s view.

        Returns:
            The completed packages, in :meth:`feed_raw`'s form: the payload
            once its last byte came, else an empty list.

        Raises:
            ValueError: no payload is being received in place, or ``n`` is not
                between 1 and the bytes still missing (a reader bug).
        """
        if self._view is None or not 0 < n <= self._need - self._have:
            raise ValueError(f"filled({n}) does not match the buffer being received")
        if self.controls:
            self.controls = []
        flat: list[Any] = []
        self._have += n
        if self._have == self._need:
            self._complete(self._fill, flat)
        return flat

    def feed_raw(self, data: bytes) -> list[Any]:
        """Consume ``data``; return the packages it completed as a flat list.

        The list alternates header tuples (:data:`Header`, as ``HEADER``
        unpacks them) and payloads: ``[header, payload, header, payload, ...]``,
        in stream order. Connection-level items are put in :attr:`controls`.
        This is the receive path's form: no object per package.

        Raises:
            FrameError: the stream is invalid (or was found invalid earlier);
                its ``raw`` attribute holds the packages decoded before the bad
                bytes, in the same form.
        """
        if self._error is not None:
            raise FrameError(self._error)
        if type(data) is not bytes:
            data = bytes(data)
        flat: list[Any] = []
        if self.controls:
            self.controls = []
        if self._head is not None:
            data = self._finish_payload(data, flat)
            if not data:
                return flat
        if self._tail:
            data = self._tail + data
            self._tail = b""
        unpack = HEADER.unpack_from
        limit = self._max
        n = len(data)
        off = 0
        control_word, hsize, dummy = CONTROL, HEADER_SIZE, SLOT_DUMMY  # (locals: per package)
        if n >= RUN_MIN * (hsize + 1):
            off = _decode_run(data, flat, limit)
        append = flat.append
        while n - off >= hsize:
            h = unpack(data, off)
            start = off + hsize
            end = start + h[6]
            if h[0] != control_word or h[6] > limit:
                if h[0] != control_word:
                    raise self._fail(_bad_control(data[off : off + 8]), flat)
                raise self._fail(
                    f"Package of {h[6]} bytes exceeds the maximum message size of {limit} bytes.",
                    flat,
                )
            if end > n:
                self._start_payload(h, data, start)  # header complete, payload not
                return flat
            if start != end and h[1] != dummy:  # a package
                append(h)
                append(data[start:end])
            elif start != end:
                self.controls.append((len(flat), ConnectionMessage(data[start:end])))
            elif h[3] == SEQ_HEARTBEAT:
                self.controls.append((len(flat), HEARTBEAT))
            elif h[3] == SEQ_CLOSE:
                self.controls.append((len(flat), CLOSE_REQUEST))
            off = end
        if off < n:
            tail = data[off:]
            # Fail early on garbage shorter than a header (e.g. an HTTP request).
            if not CONTROL_BYTES.startswith(tail[:8]):
                raise self._fail(_bad_control(tail[:8]), flat)
            self._tail = tail
        return flat

    def feed(self, data: bytes) -> list[Item]:
        """Consume ``data`` and return every item completed by it, in stream order.

        Like :meth:`feed_raw`, with packages as :class:`Package` objects and
        connection-level items in their places.

        Raises:
            FrameError: the stream is invalid (or was found invalid earlier);
                its ``items`` attribute holds the items decoded before the bad bytes.
        """
        try:
            flat = self.feed_raw(data)
        except FrameError as exc:
            raise FrameError(exc.reason, exc.raw, _items(exc.raw, self.controls)) from None
        return _items(flat, self.controls)

    def eof(self) -> None:
        """Tell the decoder that the stream ended (the peer closed its side).

        Raises:
            FrameError: the stream ended inside a package (a peer can close
                there: 2.x writes header and payload separately), or was invalid.
        """
        if self._error is not None:
            raise FrameError(self._error)
        if self._head is not None:
            total = HEADER_SIZE + self._need
            message = (
                "Other end dropped the connection in the middle of a package "
                f"({HEADER_SIZE + self._have} of {total} bytes received)."
            )
            raise self._fail(message, [])
        if self._tail:
            message = (
                "Other end dropped the connection in the middle of a package header "
                f"({len(self._tail)} of {HEADER_SIZE} bytes received)."
            )
            raise self._fail(message, [])
