"""Property tests of the sans-IO protocol layer: framing, handshake, OBJECT codec."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton_core._errors import MessageDecodeError, ProtocolError
from yoton_core._handshake import Handshake
from yoton_core._hashing import port_hash, slot_hash
from yoton_core._message_types import MAX_DEPTH, decode_object, encode_object
from yoton_core._wire import (
    CLOSE_BYTES,
    CLOSE_REQUEST,
    HEARTBEAT,
    HEARTBEAT_BYTES,
    ConnectionMessage,
    FrameDecoder,
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
    data = encode_object(obj)
    for cut in range(1, len(data), max(1, len(data) // 20)):
        try:
            decode_object(data[:cut])
        except MessageDecodeError:
            pass


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
