"""Fuzz targets of the sans-IO protocol layer, shared by hypothesis and atheris.

Each target takes arbitrary bytes from a fuzzer, drives one decoder with them
and returns normally, or raises the decoder's documented protocol error. Any
other exception, a hang or unbounded buffering is a bug. The same functions
run under hypothesis in ``tests/test_protocol_fuzz.py`` (every test run, a few
hundred examples) and under atheris in ``fuzz/`` (coverage-guided, as long as
you like; see docs/development.md#fuzzing), so a crash found by one reproduces
with the other: ``target(crash_input_bytes)``.

The first byte(s) of the input steer the target (chunk sizes, role), the rest
is the wire data, so a coverage-guided fuzzer can explore both. Invariants
that are cheap to check (decoder state, buffered bytes below the message size
limit) are asserted inside the target: an ``AssertionError`` is a finding.
"""

from __future__ import annotations

from typing import Any

from ._decoder import FrameDecoder
from ._errors import MessageDecodeError, ProtocolError
from ._handshake import Handshake
from ._message_types import decode_object, encode_object
from ._wire import HEADER, Item

__all__ = [
    "EXPECTED_ERRORS",
    "FUZZ_MAX_MESSAGE_SIZE",
    "TARGETS",
    "chunks_of",
    "fuzz_frame_decoder",
    "fuzz_handshake",
    "fuzz_object_decoder",
    "seeds",
]

#: The message size limit the decoder target runs with (small, so that hostile
#: lengths just above and below it are easy for a fuzzer to hit).
FUZZ_MAX_MESSAGE_SIZE = 1 << 16

#: The only exceptions a target may raise: the documented protocol errors.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (ProtocolError, MessageDecodeError)


def chunks_of(data: bytes) -> tuple[int, list[bytes]]:
    """Split fuzzer input into a control byte and wire chunks.

    The first byte is returned for the target to use; the rest is cut into
    chunks whose sizes cycle through ``1..(control % 61) + 1`` so that a fuzzer
    can make the decoder see splits at every position.
    """
    if not data:
        return 0, []
    control, rest = data[0], data[1:]
    step = control % 61 + 1
    out: list[bytes] = []
    pos = 0
    size = 1
    while pos < len(rest):
        out.append(rest[pos : pos + size])
        pos += size
        size = size % step + 1
    return control, out


def fuzz_frame_decoder(data: bytes) -> list[Item]:
    """Feed ``data`` (chunked) to a :class:`FrameDecoder`, then EOF.

    Returns:
        The items decoded (so a test can check a valid input's result).

    Raises:
        ProtocolError: the only acceptable failure.
    """
    _control, chunks = chunks_of(data)
    decoder = FrameDecoder(max_message_size=FUZZ_MAX_MESSAGE_SIZE)
    limit = FUZZ_MAX_MESSAGE_SIZE + HEADER.size
    items: list[Item] = []
    for chunk in chunks:
        items += decoder.feed(chunk)
        # Nothing beyond one package (header + largest payload) is ever held.
        assert decoder.buffered <= limit, decoder.buffered
    decoder.eof()
    assert decoder.buffered == 0
    return items


def fuzz_handshake(data: bytes) -> Handshake:
    """Feed ``data`` (chunked) to a :class:`Handshake` in the role chosen by the control byte.

    The handshake never raises on peer input: failure is a state with a reason.
    Returns the handshake, in its final state.
    """
    control, chunks = chunks_of(data)
    hs = Handshake(
        "bind" if control & 0x80 else "connect", 0x1234_5678_9ABC_DEF0, 4242, max_line=64
    )
    for chunk in chunks:
        reply = hs.receive_data(chunk)
        assert isinstance(reply, bytes)
        assert hs.state in (Handshake.AWAITING, Handshake.DONE, Handshake.FAILED), hs.state
        if hs.state == Handshake.FAILED:
            assert hs.error, "a failed handshake must say why"
        # An unfinished line is bounded by max_line (plus the chunk just looked at).
        assert len(hs._buf) <= 64 + len(chunk), len(hs._buf)
    if control & 0x40:
        hs.receive_eof()
        assert hs.state != Handshake.AWAITING
    if hs.state == Handshake.DONE:
        assert hs.peer_id != 0x1234_5678_9ABC_DEF0  # our own id is refused
    return hs


def fuzz_object_decoder(data: bytes) -> Any:
    """Decode ``data`` as an OBJECT payload; a success must re-encode to a prefix of it.

    Returns:
        The decoded object.

    Raises:
        MessageDecodeError: the only acceptable failure.
    """
    obj = decode_object(data)
    if obj is None and not data:
        return None
    try:
        again = encode_object(obj)
    except ValueError:
        # Whatever the decoder accepts, the encoder must be able to write.
        raise AssertionError(f"decoded {obj!r:.200} cannot be encoded again") from None
    # Decoding ignores trailing bytes, and the encoding of a value is unique
    # except for count prefixes (a short count may be written in the long
    # form) and bools (any non-zero byte is True): compare values instead.
    assert decode_object(again) == obj or obj != obj or _has_nan(obj)
    return obj


def _has_nan(obj: object) -> bool:
    if isinstance(obj, float):
        return obj != obj
    if isinstance(obj, (list, tuple)):
        return any(_has_nan(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_nan(k) or _has_nan(v) for k, v in obj.items())
    return False


#: name -> target, for the atheris runner and the tests.
TARGETS = {
    "decoder": fuzz_frame_decoder,
    "handshake": fuzz_handshake,
    "object": fuzz_object_decoder,
}


def seeds(name: str) -> list[bytes]:
    """A few valid inputs for target ``name``: starting points for a fuzzer's corpus."""
    from ._wire import CLOSE_BYTES, HEARTBEAT_BYTES, Package, encode_package

    if name == "decoder":
        pkg = encode_package(Package(b"hello", 1234, 1, 1, 0, 0))
        return [b"\x07" + pkg + HEARTBEAT_BYTES + pkg + CLOSE_BYTES, b"\x00" + pkg]
    if name == "handshake":
        line = b"YOTON!%016x.%d\r\n" % (0xABC, 99)
        return [b"\x00" + line, b"\x85" + line + b"rest", b"\xc0ERROR: no\r\n"]
    if name == "object":
        return [encode_object([1, "two", 3.0, None, True, (b"x".decode(),), {"k": [1]}])]
    raise ValueError(f"unknown fuzz target {name!r}; expected one of {sorted(TARGETS)}")
