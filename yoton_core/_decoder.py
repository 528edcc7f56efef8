"""Decoding the yoton package stream (docs/protocol.md#framing), sans-IO.

:class:`FrameDecoder` turns the bytes a transport read, in chunks of any size,
back into packages (:mod:`._wire` has the format and the encoding). It never
touches a socket: the stream engine, tests and fuzzers use the same code.

Runs: small messages come as runs of one payload size, and a chunk that
starts with one is decoded in bulk, in C (``struct`` with the run's fixed
stride), every header checked before anything is used. For the core's stream
links (:meth:`FrameDecoder.feed_runs`), a run whose headers differ in nothing
but their seq, counting up by one -- one source, one slot, one destination: a
publisher's stream -- comes as one :class:`Run` and the list of its payloads,
and the context routes it in one step (``Router._route_run``). Its headers
are checked as bytes, all in one comparison, never unpacked to numbers: per
package that is the payload's ``bytes`` and a short-lived header ``bytes``;
a header tuple (four ints too large to be cached) cost as much again as the
payload, and more to route.
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable
from itertools import chain
from typing import Any

from . import _bytesfill
from ._accel import speedups
from ._errors import FrameError
from ._wire import (
    CLOSE_REQUEST,
    CONTROL,
    CONTROL_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    FILL_MIN,
    FILL_RATIO,
    HEADER,
    HEADER_SIZE,
    HEARTBEAT,
    SEQ_CLOSE,
    SEQ_HEARTBEAT,
    SLOT_DUMMY,
    ConnectionMessage,
    Header,
    Item,
    _bad_control,
    _items,
)

__all__ = ["RUN_MAX_PAYLOAD", "RUN_MIN", "FrameDecoder", "Run", "expand_run"]


class Run(tuple[int, ...]):
    """``count`` packages that differ only in their seq: ``first_seq``, ``first_seq + 1``...

    A tuple ``(control, slot, source_id, first_seq, dest_id, dest_seq, length,
    count)``: the first package's :data:`~._wire.Header` and how many there
    are. In a decoded flat list it stands where a header would, with the list
    of the run's payloads beside it (:meth:`FrameDecoder.feed_runs`).
    """

    __slots__ = ()


def expand_run(run: Run, payloads: list[bytes]) -> list[Any]:
    """The flat ``[header, payload, ...]`` form of a run's packages."""
    c, slot, sid, seq, dest, dseq, size, _count = run
    flat: list[Any] = []
    append = flat.append
    for i, payload in enumerate(payloads):
        append((c, slot, sid, seq + i, dest, dseq, size))
        append(payload)
    return flat


#: A chunk starting with RUN_MIN packages of one size <= RUN_MAX_PAYLOAD: _decode_run.
RUN_MIN = 8
RUN_MAX_PAYLOAD = 4096
_run_structs: dict[int, tuple[struct.Struct, struct.Struct]] = {}  # by payload size
_FIRST = _CONTROL_OF = operator.itemgetter(0)
_SLOT_OF = operator.itemgetter(1)
_LENGTH_OF = operator.itemgetter(6)

#: A uniform run is unpacked _BLOCK packages to a struct (header and payload
#: as bytes), the rest with a struct for as many: at most _BLOCK structs a
#: payload size, each made once (_block_struct).
_BLOCK = 32
_blocks: dict[tuple[int, int], struct.Struct] = {}  # (payload size, packages) -> its struct


def _block_struct(size: int, n: int) -> struct.Struct:
    st = _blocks.get((size, n))
    if st is None:
        if len(_blocks) >= 8 * _BLOCK:  # (a bound: streams change sizes rarely)
            _blocks.clear()
        st = _blocks[size, n] = struct.Struct("<" + f"{HEADER_SIZE}s{size}s" * n)
    return st


def _ramp16() -> array[int]:
    """0, 1, ..., 65535 as 16-bit words in the wire's byte order (little-endian).

    Only ever copied into a header template, never read as numbers: the
    array's items are its bytes, whatever the machine's byte order.
    """
    raw = bytearray(0x20000)
    raw[0::2] = bytes(range(256)) * 256  # the low bytes
    raw[1::2] = b"".join(bytes((i,)) * 256 for i in range(256))  # the high bytes
    ramp = array("H")
    ramp.frombytes(raw)
    return ramp


#: ``_speedups.run_payloads`` when the optional compiled accelerator is used
#: (``_accel.py``; a build older than run_payloads lacks it): what
#: :func:`_uniform_payloads` does after its first checks, in C.
_run_payloads: Callable[[bytes, int, int, int], list[bytes] | None] | None = getattr(
    speedups, "run_payloads", None
)

#: The low 16 bits of consecutive seqs (a header's 13th 16-bit word): see _uniform_payloads.
_RAMP16 = _ramp16()
_SEQ_WORD = 24 // 2
_HEADER_WORDS = HEADER_SIZE // 2


def _uniform_payloads(data: bytes, at: int, size: int, k: int, first: Header) -> list[bytes] | None:
    """The payloads of the ``k`` packages at ``data[at:]``, if they are a uniform run.

    A uniform run: every header is ``first``'s but for the seq, counting up
    by one. ``first`` was checked by the caller (control word, size, slot).
    Headers and payloads are unpacked as ``bytes`` in C, a block of packages
    per struct; the headers, joined, must then equal ``first``'s header
    repeated with the seqs' low 16-bit words replaced by a ramp from
    ``first``'s: one comparison for the whole run, no number per package.
    Returns None for anything else (the general path decodes it).
    """
    seq = first[3]
    low = seq & 0xFFFF
    if low + k > 0x10000:
        return None  # a carry past the seq's second byte (rare): the general path
    stride = HEADER_SIZE + size
    if HEADER.unpack_from(data, at + (k - 1) * stride) != (*first[:3], seq + k - 1, *first[4:]):
        return None  # (the common way not to be one, found before unpacking anything)
    if _run_payloads is not None:  # the compiled accelerator: every header compared in place
        return _run_payloads(data, at, size, k)
    blocks, rest = divmod(k, _BLOCK)
    end = at + blocks * _BLOCK * stride
    items: list[Any] = []
    if blocks:
        with memoryview(data) as whole, whole[at:end] as view:
            items = list(chain.from_iterable(_block_struct(size, _BLOCK).iter_unpack(view)))
    if rest:
        items.extend(_block_struct(size, rest).unpack_from(data, end))
    want = array("H", data[at : at + HEADER_SIZE]) * k
    want[_SEQ_WORD::_HEADER_WORDS] = _RAMP16[low : low + k]
    if want.tobytes() != b"".join(items[0::2]):
        return None
    return items[1::2]


def _decode_run(data: bytes, at: int, flat: list[Any], limit: int, runs: bool) -> tuple[int, int]:
    """Decode the packages of one payload size that start at ``data[at:]``, in bulk.

    Small messages come as runs of one size: with a fixed stride,
    ``struct.iter_unpack`` reads their headers and payloads in C (the loop of
    :meth:`FrameDecoder.feed_raw` spends ~0.5 us a package in bytecode). Every
    header is checked (control word, size, not a connection-level package)
    before anything is used; a run that does not hold is left to the loop.
    With ``runs``, a run of one source, slot and destination with consecutive
    seqs is appended as ``Run, payloads`` (see the module docstring).
    Returns the offset where the run ended (``at``: no run, nothing appended)
    and how many packages the appended items hold beyond one per pair.
    """
    first = HEADER.unpack_from(data, at)
    size = first[6]
    if not 0 < size <= RUN_MAX_PAYLOAD or size > limit:
        return at, 0
    stride = HEADER_SIZE + size
    k = (len(data) - at) // stride
    if k < RUN_MIN or HEADER.unpack_from(data, at + stride)[6] != size:
        return at, 0
    structs = _run_structs.get(size)
    if structs is None:  # (at most RUN_MAX_PAYLOAD of them)
        structs = (struct.Struct(f"<7Q{size}x"), struct.Struct(f"<{HEADER_SIZE}x{size}s"))
        _run_structs[size] = structs
    end = at + k * stride
    if runs and first[0] == CONTROL and first[1] != SLOT_DUMMY:
        payloads = _uniform_payloads(data, at, size, k, first)
        if payloads is not None:
            flat.append(Run((*first, k)))
            flat.append(payloads)
            return end, k - 1
    with memoryview(data) as whole, whole[at:end] as view:
        heads = list(structs[0].iter_unpack(view))
        if (
            list(map(_CONTROL_OF, heads)).count(CONTROL) != k
            or list(map(_LENGTH_OF, heads)).count(size) != k
            or list(map(_SLOT_OF, heads)).count(SLOT_DUMMY)
        ):
            return at, 0
        payloads = list(map(_FIRST, structs[1].iter_unpack(view)))
    run: list[Any] = [None] * (2 * k)
    run[0::2], run[1::2] = heads, payloads
    flat.extend(run)
    return end, 0


def _join_run(flat: list[Any], extra: int) -> int:
    """``flat`` is a package, then a run: make it one run if the package begins it.

    A chunk read from a stream seldom ends where a package does: the next one
    starts by completing that package (decoded on its own), and the run comes
    after it. Routed apart, that one package cost a pass of the per-package
    router per chunk (~25,000 instructions); it is the run's predecessor
    whenever the stream is one publisher's. Nothing lies between the two in
    the stream (the run starts where the package ended), so no connection-level
    item's position moves. Returns the new :attr:`run_extra`.
    """
    head, payload, run, payloads = flat
    if head[3] + 1 != run[3] or head[:3] != run[:3] or head[4:] != run[4:7]:
        return extra
    payloads.insert(0, payload)
    flat[:] = (Run((*head, len(payloads))), payloads)
    return extra + 1


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
        "run_extra",
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
        #: How many packages the last :meth:`feed_runs` returned beyond one per
        #: pair of its list (each :class:`Run` of ``count`` adds ``count - 1``).
        self.run_extra = 0

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

    def _finish_payload(self, data: bytes, flat: list) -> int:
        """Add ``data`` to the collected payload; emit it if complete.

        Returns where the rest of ``data`` starts (``len(data)``: nothing left).
        """
        missing = self._need - self._have
        view = self._view
        if view is not None:  # filling the payload's own bytes object
            if len(data) < missing:
                view[self._have : self._have + len(data)] = data
                self._have += len(data)
                return len(data)
            view[self._have :] = memoryview(data)[:missing]
            self._complete(self._fill, flat)
            return missing
        if len(data) < missing:
            self._parts.append(data)
            self._have += len(data)
            if self._have * FILL_RATIO >= self._need:
                self._start_filling()
            return len(data)
        parts = self._parts
        parts.append(data[:missing] if len(data) > missing else data)
        self._complete(b"".join(parts), flat)
        return missing

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

    def feed_raw(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Consume ``data``; return the packages it completed as a flat list.

        The list alternates header tuples (:data:`Header`, as ``HEADER``
        unpacks them) and payloads: ``[header, payload, header, payload, ...]``,
        in stream order. Connection-level items are put in :attr:`controls`.
        This is the receive path's form: no object per package. ``data`` may
        be any bytes-like object (a bytearray or memoryview is copied once).

        Raises:
            FrameError: the stream is invalid (or was found invalid earlier);
                its ``raw`` attribute holds the packages decoded before the bad
                bytes, in the same form.
        """
        return self._feed(data, False)

    def feed_runs(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """:meth:`feed_raw`, with each uniform run as one ``Run, payloads`` pair.

        The core's stream links read this form (``Router._route_run``); a
        :class:`Run` stands for ``count`` packages, which :func:`expand_run`
        turns into the plain form. :attr:`run_extra` says how many packages
        the list holds beyond one per pair. Raises as :meth:`feed_raw`; the
        error's ``raw`` is in this form.
        """
        return self._feed(data, True)

    def _feed(self, data: bytes | bytearray | memoryview, runs: bool) -> list[Any]:
        if self._error is not None:
            raise FrameError(self._error)
        if type(data) is not bytes:
            data = bytes(data)
        flat: list[Any] = []
        if self.controls:
            self.controls = []
        self.run_extra = 0
        off = 0
        if self._head is not None:
            off = self._finish_payload(data, flat)
            if off == len(data):
                return flat
        if self._tail:
            # The start of a header came last time: the package it begins,
            # if this chunk completes it, is decoded by itself, and the rest
            # of the chunk where it lies (not copied behind the tail).
            tail = self._tail
            self._tail = b""
            need = HEADER_SIZE - len(tail)
            size = -1
            if len(data) - off >= need:
                size = HEADER.unpack(tail + data[off : off + need])[6]
            if 0 <= size <= self._max and len(data) - off >= need + size:
                self._scan(tail + data[off : off + need + size], 0, flat, False)
                off += need + size
            else:  # (a large payload, or too few bytes: as one)
                data = tail + data[off:]
                off = 0
        return self._scan(data, off, flat, runs)

    def _scan(self, data: bytes, off: int, flat: list[Any], runs: bool) -> list[Any]:
        """Decode ``data`` from ``off`` on into ``flat``; keep what is incomplete."""
        unpack = HEADER.unpack_from
        limit = self._max
        n = len(data)
        control_word, hsize, dummy = CONTROL, HEADER_SIZE, SLOT_DUMMY  # (locals: per package)
        if n - off >= RUN_MIN * (hsize + 1):
            off, extra = _decode_run(data, off, flat, limit, runs)
            if extra and len(flat) == 4:  # (a package the tail began, then the run)
                extra = _join_run(flat, extra)
            self.run_extra = extra
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

    def feed(self, data: bytes | bytearray | memoryview) -> list[Item]:
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
