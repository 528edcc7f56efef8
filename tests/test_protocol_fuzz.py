"""Property tests of the sans-IO protocol layer: framing, handshake, OBJECT codec."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton_core._decoder import FrameDecoder
from yoton_core._errors import MessageDecodeError, ProtocolError
from yoton_core._fuzz_targets import (
    EXPECTED_ERRORS,
    TARGETS,
    fuzz_frame_decoder,
    fuzz_handshake,
    fuzz_object_decoder,
    seeds,
)
from yoton_core._handshake import Handshake
from yoton_core._hashing import port_hash, slot_hash
from yoton_core._message_types import MAX_DEPTH, decode_object, encode_object
from yoton_core._wire import (
    CLOSE_BYTES,
    CLOSE_REQUEST,
    CONTROL,
    HEADER,
    HEARTBEAT,
    HEARTBEAT_BYTES,
    ConnectionMessage,
    Package,
    encode_connection_message,
    encode_package,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u64 = st.integers(min_value=0, max_value=2**64 - 1)

packages = st.builds(
    Package,
    data=st.binary(min_size=1, max_size=300),
    slot=st.one_of(st.just(2), st.integers(min_value=8, max_value=2**64 - 1)),
    source_id=u64,
    source_seq=u64,
    dest_id=u64,
    dest_seq=u64,
)
items = st.one_of(
    packages,
    st.just(HEARTBEAT),
    st.just(CLOSE_REQUEST),
    st.binary(min_size=1, max_size=50).map(ConnectionMessage),
)


def encode_item(item: Any) -> bytes:
    if item is HEARTBEAT:
        return HEARTBEAT_BYTES
    if item is CLOSE_REQUEST:
        return CLOSE_BYTES
    if isinstance(item, ConnectionMessage):
        return encode_connection_message(item.payload)
    return encode_package(item)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@FAST
@given(st.lists(items, max_size=30), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_decodes_the_same(stream_items: list, cuts: list[int]) -> None:
    stream = b"".join(encode_item(i) for i in stream_items)
    decoder = FrameDecoder()
    out: list = []
    for chunk in split_at(stream, cuts):
        out += decoder.feed(chunk)
    decoder.eof()
    assert out == stream_items
    assert decoder.buffered == 0


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_to_decoder_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_message_size=1 << 16)
    try:
        for chunk in split_at(data, cuts):
            decoder.feed(chunk)
        decoder.eof()
    except ProtocolError:
        pass


@FAST
@given(st.lists(packages, min_size=1, max_size=5), st.binary(min_size=1, max_size=100))
def test_garbage_after_valid_packages(pkgs: list[Package], garbage: bytes) -> None:
    decoder = FrameDecoder(max_message_size=1 << 16)
    valid = b"".join(encode_package(p) for p in pkgs)
    out = decoder.feed(valid)
    assert out == pkgs
    try:
        decoder.feed(garbage)
        decoder.eof()
    except ProtocolError:
        pass


@FAST
@given(
    st.sampled_from(["bind", "connect"]),
    st.lists(st.binary(max_size=40), max_size=8),
    st.booleans(),
)
def test_random_bytes_to_handshake_never_raise(role: str, chunks: list[bytes], eof: bool) -> None:
    hs = Handshake(role, 0x1234, 99, max_line=64)  # type: ignore[arg-type]
    for chunk in chunks:
        reply = hs.receive_data(chunk)
        assert isinstance(reply, bytes)
        assert hs.state in (Handshake.AWAITING, Handshake.DONE, Handshake.FAILED)
        if hs.state == Handshake.FAILED:
            assert hs.error
    if eof:
        hs.receive_eof()
        assert hs.state != Handshake.AWAITING


@FAST
@given(
    st.sampled_from(["bind", "connect"]),
    u64,
    st.integers(min_value=0, max_value=10**9),
    st.binary(max_size=60),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_valid_line_any_chunking(
    role: str, peer_id: int, peer_pid: int, rest: bytes, cuts: list[int]
) -> None:
    hs = Handshake(role, 0x1234, 99)  # type: ignore[arg-type]
    data = b"YOTON!%016x.%d\r\n" % (peer_id, peer_pid) + rest
    replies = b"".join(hs.receive_data(c) for c in split_at(data, cuts))
    if peer_id == 0x1234:
        assert hs.state == Handshake.FAILED
    else:
        assert hs.state == Handshake.DONE
        assert (hs.peer_id, hs.peer_pid) == (peer_id, peer_pid)
        assert hs.leftover == rest
    assert replies == (hs.line if role == "bind" else b"")


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_to_decode_object(data: bytes) -> None:
    try:
        decode_object(data)
    except MessageDecodeError:
        pass


# Mostly-valid inputs reach deeper decoder paths than uniformly random bytes.
@FAST
@given(st.binary(max_size=40), st.sampled_from(b"nbifsltd"), st.binary(max_size=40))
def test_tagged_garbage_to_decode_object(prefix: bytes, tag: int, body: bytes) -> None:
    try:
        decode_object(bytes([tag]) + body + prefix)
    except MessageDecodeError:
        pass


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=6)
objects = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
    ),
    max_leaves=40,
)


@FAST
@given(objects)
def test_object_round_trip(obj: Any) -> None:
    data = encode_object(obj)
    decoded = decode_object(data)
    # Compare encodings, so NaN (which != itself) still counts as equal.
    assert encode_object(decoded) == data
    if obj is not None:
        assert type(decoded) is type(obj)


@FAST
@given(objects, st.binary(max_size=20))
def test_object_trailing_bytes_ignored(obj: Any, junk: bytes) -> None:
    if obj is None:
        return  # b"" would be the empty message
    assert encode_object(decode_object(encode_object(obj) + junk)) == encode_object(obj)


@FAST
@given(objects)
def test_truncated_encodings_raise_decode_error(obj: Any) -> None:
    """Every proper prefix of an encoding is incomplete (counts come first): an error."""
    data = encode_object(obj)
    cuts = range(1, len(data)) if len(data) <= 400 else range(1, len(data), len(data) // 200)
    for cut in cuts:
        with pytest.raises(MessageDecodeError):
            decode_object(data[:cut])


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_DEPTH))
def test_nesting_up_to_the_limit_round_trips(depth: int) -> None:
    obj: Any = None
    for _ in range(depth):
        obj = (obj,)
    assert decode_object(encode_object(obj)) == obj


@FAST
@given(st.text(max_size=200))
def test_hash_ranges(s: str) -> None:
    assert 8 <= slot_hash(s) < 2**64
    assert 49152 <= port_hash(s) < 65536


# -- the shared fuzz targets (yoton_core/_fuzz_targets.py; atheris runs them in fuzz/) ------
#
# Same functions as the atheris targets, so a crash found by either side
# reproduces with ``target(data)``. The deadline turns a hang into a failure
# (generous: it is about "never returns", not about speed).

TARGET = settings(
    max_examples=200, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow]
)


def run_target(name: str, data: bytes) -> None:
    try:
        TARGETS[name](data)
    except EXPECTED_ERRORS:
        pass


def mutated(name: str) -> st.SearchStrategy[bytes]:
    """A seed of target ``name`` with a few bytes overwritten, inserted or cut."""

    def mutate(args: tuple[bytes, list[tuple[int, int, int]]]) -> bytes:
        data, edits = bytearray(args[0]), args[1]
        for kind, pos, value in edits:
            pos %= len(data) + 1
            if kind == 0 and pos < len(data):
                data[pos] = value
            elif kind == 1:
                data[pos:pos] = bytes([value])
            else:
                del data[pos : pos + value % 8]
        return bytes(data)

    edit = st.tuples(
        st.integers(0, 2), st.integers(min_value=0), st.integers(min_value=0, max_value=255)
    )
    return st.tuples(st.sampled_from(seeds(name)), st.lists(edit, max_size=6)).map(mutate)


def test_fuzz_target_seeds_are_accepted_and_decoded() -> None:
    """Valid input: no error, and the decoders really decoded it (a fuzz target that
    silently did nothing would pass every fuzzing run)."""
    decoder, handshake, obj = (seeds(name) for name in ("decoder", "handshake", "object"))
    assert TARGETS.keys() == {"decoder", "handshake", "object"}
    pkg = Package(b"hello", 1234, 1, 1, 0, 0)
    assert fuzz_frame_decoder(decoder[0]) == [pkg, HEARTBEAT, pkg, CLOSE_REQUEST]
    assert fuzz_frame_decoder(decoder[1]) == [pkg]
    done = [fuzz_handshake(data) for data in handshake]
    assert [hs.state for hs in done] == [Handshake.DONE, Handshake.DONE, Handshake.FAILED]
    assert done[0].peer_id == done[1].peer_id == 0xABC and done[1].leftover == b"rest"
    assert "does not speak yoton" in (done[2].error or "")
    assert fuzz_object_decoder(obj[0]) == [1, "two", 3.0, None, True, ("x",), {"k": [1]}]


@pytest.mark.parametrize("name", sorted(TARGETS))
@TARGET
@given(data=st.binary(max_size=600))
def test_fuzz_target_random_bytes(name: str, data: bytes) -> None:
    run_target(name, data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@TARGET
@given(data=st.data())
def test_fuzz_target_mutated_seeds(name: str, data: st.DataObject) -> None:
    run_target(name, data.draw(mutated(name)))


# -- bounded memory for hostile lengths and counts ---------------------------------------

MEMORY_BUDGET = 256 * 1024  # far below every hostile length / count used here


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes traced while ``fn`` runs (its expected protocol error swallowed)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
        except EXPECTED_ERRORS:
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def hostile_header(length: int) -> bytes:
    return HEADER.pack(CONTROL, 1234, 1, 1, 0, 0, length)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(min_value=2**20, max_value=2**64 - 1),
    have=st.integers(min_value=0, max_value=4096),
)
def test_decoder_does_not_allocate_for_a_hostile_length(length: int, have: int) -> None:
    """A header announcing a huge payload costs only what actually arrived."""
    payload = b"p" * have

    def feed() -> None:
        decoder = FrameDecoder()  # the default limit, 1 GiB
        decoder.feed(hostile_header(length))
        decoder.feed(payload)
        assert decoder.buffered <= 56 + have
        decoder.eof()

    assert peak_memory(feed) < MEMORY_BUDGET


def test_decoder_refuses_a_length_over_the_limit_before_buffering() -> None:
    decoder = FrameDecoder(max_message_size=1000)
    with pytest.raises(ProtocolError, match="1001"):
        decoder.feed(hostile_header(1001) + b"x" * 10)
    assert decoder.buffered <= 56


@settings(max_examples=60, deadline=None)
@given(
    tag=st.sampled_from(b"sltd"),
    count=st.integers(min_value=2**16, max_value=2**64 - 1),
    tail=st.binary(max_size=64),
)
def test_object_decoder_does_not_allocate_for_a_hostile_count(
    tag: int, count: int, tail: bytes
) -> None:
    """Counts are checked against the bytes present before anything is allocated."""
    data = bytes([tag, 255]) + count.to_bytes(8, "little") + tail

    def decode() -> None:
        decode_object(data)
        raise AssertionError("a count beyond the data must not decode")

    assert peak_memory(decode) < MEMORY_BUDGET


@pytest.mark.parametrize("opener", [b"l\x01", b"t\x01", b"d\x01n"])
def test_object_decoder_deep_nesting_is_an_error_not_a_recursion_error(opener: bytes) -> None:
    data = opener * 100_000 + b"n"
    with pytest.raises(MessageDecodeError, match="deeper"):
        decode_object(data)
    assert peak_memory(lambda: decode_object(data)) < 4 * MEMORY_BUDGET


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([b"YOTON!", b"YOTON!" + b"0" * 16 + b".", b"GET / HTTP/1.1"]))
def test_handshake_buffers_at_most_one_line(prefix: bytes) -> None:
    """An endless line without CRLF fails at max_line instead of growing a buffer."""
    hs = Handshake("bind", 0x1234, 99, max_line=64)

    def feed() -> None:
        hs.receive_data(prefix)
        for _ in range(2000):
            hs.receive_data(b"1" * 512)  # 1 MiB in total

    assert peak_memory(feed) < MEMORY_BUDGET
    assert hs.state == Handshake.FAILED and hs.error


def test_shared_decoder_target_reports_truncation_as_a_protocol_error() -> None:
    """The atheris side treats only EXPECTED_ERRORS as fine; truncation must be one."""
    data = b"\x3c" + hostile_header(1 << 16) + b"x" * 5000
    with pytest.raises(ProtocolError):
        fuzz_frame_decoder(data)  # a legal length, cut short by EOF
