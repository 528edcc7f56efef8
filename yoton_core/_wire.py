"""Package framing of the yoton TCP stream (docs/protocol.md#framing), sans-IO.

Every package is a 56-byte header of seven little-endian u64 -- control word,
slot, source id, source seq, dest id, dest seq, payload length -- followed by
the payload. This module turns packages into bytes; :mod:`._decoder` turns a
byte stream back into packages. Neither touches a socket, so the stream
engine, tests and fuzzers all use the same code.

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

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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
