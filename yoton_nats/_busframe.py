"""How yoton packages ride in NATS messages: batches and fragments (pure code).

A NATS message payload holds either

* a **batch**: one or more whole yoton frames (the 56-byte header of
  docs/protocol.md#framing, then the payload), all for the same subject. The
  sender packs what is queued for one subject into as few messages as
  ``max_payload`` allows, so a burst of small packages costs the server one
  message, not one each; or
* a **fragment** of one frame too large for ``max_payload`` (1 MiB by default):
  ``b"YOTONFRG"``, the publishing context's id, a per-publisher counter and
  the byte offset (three u64 LE), then a piece of the frame. The pieces of one
  frame leave one connection back to back and a NATS server keeps one
  connection's messages in order, so the receiver appends them in order and
  drops an assembly that skips a piece (NATS core is at-most-once).

The subject already says who should get a message; the frame header keeps
what yoton routes by (slot, source id and sequence number, destination).
Garbage (a message on our subjects that is neither) is counted and dropped:
it came from some other client of the server, so dropping our server
connection would not help.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

__all__ = ["BusDecoder", "FRAGMENT_OVERHEAD", "HEADER_SIZE", "pack_run"]

_HEADER = struct.Struct("<7Q")
HEADER_SIZE = _HEADER.size
#: The control word of every yoton frame: ``b"YOTON   "``.
CONTROL_BYTES = b"YOTON   "
CONTROL = int.from_bytes(CONTROL_BYTES, "little")
_FRAG_MAGIC = b"YOTONFRG"
_FRAG = struct.Struct("<8s3Q")
FRAGMENT_OVERHEAD = _FRAG.size
#: A batch closes at this size even when ``max_payload`` would allow more, so
#: the first package of a burst is not held behind megabytes of others.
BATCH_BYTES = 256 * 1024
#: Smallest server ``max_payload`` we can work with (a header plus a fragment header).
MIN_MAX_PAYLOAD = 1024


def pack_run(
    out: list[Any],
    subject: bytes,
    items: list[tuple[tuple[int, ...], bytes]],
    max_payload: int,
    origin: int,
    counter: int,
) -> int:
    """Append the ``PUB`` commands that carry ``items`` on ``subject`` to ``out``.

    Args:
        out: Byte strings to be written in order (joined by the caller).
        subject: A checked subject (see ``_protocol.check_subject``).
        items: ``(header, payload)`` pairs, as the core hands packages over.
        max_payload: The server's limit for one message payload.
        origin: Our context id (names our fragments).
        counter: The number of fragmented frames this connection sent so far.

    Returns:
        The new counter.
    """
    limit = min(max_payload, BATCH_BYTES)
    pack = _HEADER.pack
    parts: list[Any] = []
    size = 0
    for header, data in items:
        n = HEADER_SIZE + len(data)
        if n > max_payload:
            if parts:
                _emit(out, subject, parts, size)
                parts, size = [], 0
            counter += 1
            _fragment(out, subject, pack(*header) + data, max_payload, origin, counter)
            continue
        if size + n > limit and parts:
            _emit(out, subject, parts, size)
            parts, size = [], 0
        parts.append(pack(*header))
        parts.append(data)
        size += n
    if parts:
        _emit(out, subject, parts, size)
    return counter


def _emit(out: list[Any], subject: bytes, parts: list[Any], size: int) -> None:
    out.append(b"PUB %s %d\r\n" % (subject, size))
    out.extend(parts)
    out.append(b"\r\n")


def _fragment(
    out: list[Any], subject: bytes, frame: bytes, max_payload: int, origin: int, counter: int
) -> None:
    step = max_payload - FRAGMENT_OVERHEAD
    view = memoryview(frame)
    for offset in range(0, len(frame), step):
        piece = view[offset : offset + step]
        out.append(b"PUB %s %d\r\n" % (subject, FRAGMENT_OVERHEAD + len(piece)))
        out.append(_FRAG.pack(_FRAG_MAGIC, origin, counter, offset))
        out.append(piece)
        out.append(b"\r\n")


class BusDecoder:
    """Turns received NATS payloads back into yoton packages.

    Args:
        max_message_size: Largest package payload accepted (the context's).
        max_assemblies: Large packages being reassembled at once (from
            different publishers); the oldest is dropped beyond this.

    Attributes:
        dropped: Packages lost: incomplete or oversized assemblies.
        garbage: Messages that were neither a batch nor a fragment.
    """

    def __init__(self, max_message_size: int, max_assemblies: int = 16) -> None:
        self.max_message_size = max_message_size
        self.max_assemblies = max_assemblies
        self.dropped = 0
        self.garbage = 0
        # (origin, counter) -> (frame bytes so far, total frame size)
        self._assemblies: OrderedDict[tuple[int, int], tuple[bytearray, int]] = OrderedDict()

    @property
    def assembling(self) -> int:
        """Bytes held in incomplete assemblies."""
        return sum(len(buf) for buf, _ in self._assemblies.values())

    def feed(self, payload: bytes, flat: list[Any]) -> int:
        """Decode one message; append ``header, data, ...`` to ``flat``.

        Returns:
            The number of payload bytes of the packages appended.
        """
        if payload[:8] == CONTROL_BYTES:
            return self._batch(payload, flat)
        if payload[:8] == _FRAG_MAGIC and len(payload) > FRAGMENT_OVERHEAD:
            return self._piece(payload, flat)
        self.garbage += 1
        return 0

    def _batch(self, payload: bytes, flat: list[Any]) -> int:
        unpack = _HEADER.unpack_from
        end = len(payload)
        pos = 0
        total = 0
        limit = self.max_message_size
        while pos < end:
            if end - pos < HEADER_SIZE:
                self.garbage += 1
                break
            header = unpack(payload, pos)
            n = header[6]
            start = pos + HEADER_SIZE
            if header[0] != CONTROL or n > end - start or n > limit or n == 0:
                self.garbage += 1
                break
            pos = start + n
            flat.append(header)
            flat.append(payload[start:pos])
            total += n
        return total

    def _piece(self, payload: bytes, flat: list[Any]) -> int:
        _, origin, counter, offset = _FRAG.unpack_from(payload)
        key = (origin, counter)
        piece = memoryview(payload)[FRAGMENT_OVERHEAD:]
        assemblies = self._assemblies
        if offset == 0:
            if len(piece) < HEADER_SIZE:
                self.garbage += 1
                return 0
            header = _HEADER.unpack_from(piece)
            n = header[6]
            if header[0] != CONTROL or n > self.max_message_size or n == 0:
                self.dropped += 1
                return 0
            if key in assemblies:  # a restart of the same key: the old one is lost
                del assemblies[key]
                self.dropped += 1
            while len(assemblies) >= self.max_assemblies:
                assemblies.popitem(last=False)
                self.dropped += 1
            buf = bytearray(piece)
            size = HEADER_SIZE + n
        else:
            entry = assemblies.pop(key, None)
            if entry is None:
                return 0  # the start was lost or dropped: already counted there, or unknowable
            buf, size = entry
            if offset != len(buf):
                self.dropped += 1  # a piece went missing
                return 0
            buf += piece
        if len(buf) > size:
            self.dropped += 1
            return 0
        if len(buf) < size:
            assemblies[key] = (buf, size)
            return 0
        header = _HEADER.unpack_from(buf)
        flat.append(header)
        flat.append(bytes(memoryview(buf)[HEADER_SIZE:]))
        return header[6]

    def forget(self) -> None:
        """Drop every assembly (the server connection was lost: pieces are gone)."""
        self.dropped += len(self._assemblies)
        self._assemblies.clear()
