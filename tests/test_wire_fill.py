"""Large payloads received into their own bytes object (``_bytesfill``, sans-IO).

The decoder moves a large payload into its final ``bytes`` once an eighth of
it arrived; a reader with a socket then writes the rest there directly
(``recv_buffer`` / ``filled``). These tests drive the decoder the way the
readers do, with random chunkings, and check that what comes out is what went
in -- with the fill path on and off -- and that nothing half-written escapes.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yoton_core import _bytesfill
from yoton_core._decoder import FrameDecoder
from yoton_core._errors import ProtocolError
from yoton_core._wire import (
    CONTROL,
    FILL_MIN,
    FILL_RATIO,
    HEADER,
    HEARTBEAT,
    HEARTBEAT_BYTES,
    ConnectionMessage,
    Package,
    encode_connection_message,
    encode_packages,
)


@pytest.fixture(params=[True, False], ids=["fill", "join"])
def fill(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run with the fill path available (this interpreter) and without it."""
    if request.param and not _bytesfill.AVAILABLE:
        pytest.skip("_bytesfill is not available in this interpreter")
    monkeypatch.setattr(_bytesfill, "AVAILABLE", request.param)
    return bool(request.param)


def pattern(size: int, seed: int) -> bytes:
    """A payload whose every byte depends on its position (a misplaced byte shows)."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(251))
    return (block * (size // 251 + 1))[:size]


def drive(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list:
    """Feed ``stream`` like a reader: into recv_buffer() when offered, else feed_raw.

    ``cuts`` are the sizes of successive reads (cycled); a read into the
    buffer is limited to the buffer's size, as ``recv_into`` is.
    """
    out: list = []
    pos = 0
    i = 0
    while pos < len(stream):
        want = cuts[i % len(cuts)]
        i += 1
        view = decoder.recv_buffer()
        if view is not None:
            k = min(want, len(view), len(stream) - pos)
            view[:k] = stream[pos : pos + k]
            out += decoder.filled(k)
        else:
            k = min(want, len(stream) - pos)
            out += decoder.feed_raw(stream[pos : pos + k])
        pos += k
    return out


def payloads(flat: list) -> list[bytes]:
    return flat[1::2]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 100, FILL_MIN - 1, FILL_MIN, FILL_MIN + 1, 200_000, 700_001]),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=300_000), min_size=1, max_size=8),
    use_fill=st.booleans(),
)
def test_any_chunking_delivers_every_payload_whole(
    sizes: list[int], cuts: list[int], use_fill: bool
) -> None:
    old = _bytesfill.AVAILABLE
    _bytesfill.AVAILABLE = use_fill and old
    try:
        pkgs = [Package(pattern(n, seed), 1234, 1, seed + 1) for seed, n in enumerate(sizes)]
        decoder = FrameDecoder()
        flat = drive(decoder, encode_packages(pkgs), cuts)
    finally:
        _bytesfill.AVAILABLE = old
    got = payloads(flat)
    assert got == [p.data for p in pkgs if p.data]
    assert all(type(p) is bytes for p in got)
    assert [h[3] for h in flat[0::2]] == [p.source_seq for p in pkgs if p.data]
    assert decoder.buffered == 0 and decoder.recv_buffer() is None


def test_large_payload_moves_into_its_own_object_after_an_eighth(fill: bool) -> None:
    size = 1 << 20
    data = pattern(size, 3)
    stream = encode_packages([Package(data, 1234, 1, 1)])
    decoder = FrameDecoder()
    eighth = -(-size // FILL_RATIO)
    assert decoder.feed_raw(stream[: 56 + 1000]) == []
    assert decoder.recv_buffer() is None
    # The reader is told to read up to the switch, not the whole rest.
    assert decoder.wanted == (eighth - 1000 if fill else size - 1000)
    assert decoder.feed_raw(stream[56 + 1000 : 56 + eighth]) == []
    view = decoder.recv_buffer()
    if not fill:
        assert view is None
        assert payloads(decoder.feed_raw(stream[56 + eighth :])) == [data]
        return
    assert view is not None and len(view) == size - eighth
    assert decoder.wanted == size - eighth
    view[:] = stream[56 + eighth :]
    flat = decoder.filled(len(view))
    assert payloads(flat) == [data]
    assert decoder.recv_buffer() is None and decoder.wanted == 0


def test_a_first_chunk_with_an_eighth_of_a_large_payload_offers_its_buffer() -> None:
    """The switch to filling in place happens in the chunk that brings the
    header too, so the reader's next read already goes into the payload."""
    size = 1 << 20
    stream = encode_packages([Package(pattern(size, 7), 1234, 1, 1)])
    decoder = FrameDecoder()
    assert decoder.feed_raw(stream[: 56 + size // 8]) == []
    if not _bytesfill.AVAILABLE:
        assert decoder.recv_buffer() is None
        return
    view = decoder.recv_buffer()
    assert view is not None and len(view) == size - size // 8


def test_controls_are_those_of_the_last_call() -> None:
    """``controls`` lists the connection-level items of the last feed_raw() or
    filled(): a heartbeat read before a large payload is not reported again."""
    size = 1 << 20
    data = pattern(size, 5)
    stream = HEARTBEAT_BYTES + encode_packages([Package(data, 1234, 1, 1)])
    decoder = FrameDecoder()
    head = len(HEARTBEAT_BYTES) + 56 + size // 2  # past the switch to filling in place
    assert decoder.feed_raw(stream[:head]) == []
    assert decoder.controls == [(0, HEARTBEAT)]
    view = decoder.recv_buffer()
    if view is None:
        pytest.skip("no in-place filling on this platform")
    view[:10] = stream[head : head + 10]
    assert decoder.filled(10) == [] and decoder.controls == []
    view = decoder.recv_buffer()
    assert view is not None
    view[:] = stream[head + 10 :]
    assert payloads(decoder.filled(len(view))) == [data]
    assert decoder.controls == []
    assert decoder.feed_raw(HEARTBEAT_BYTES) == [] and decoder.controls == [(0, HEARTBEAT)]


def test_feed_raw_after_the_switch_fills_the_same_object(fill: bool) -> None:
    """A reader without a socket (TLS) keeps calling feed_raw: the bytes go to the object."""
    data = pattern(300_000, 5)
    stream = encode_packages([Package(data, 1234, 1, 1), Package(b"next", 1234, 1, 2)])
    decoder = FrameDecoder()
    flat: list = []
    for pos in range(0, len(stream), 7001):
        flat += decoder.feed_raw(stream[pos : pos + 7001])
    assert payloads(flat) == [data, b"next"]


def test_small_payloads_are_never_filled_in_place() -> None:
    decoder = FrameDecoder()
    stream = encode_packages([Package(b"x" * (FILL_MIN - 1), 1234, 1, 1)])
    decoder.feed_raw(stream[:-10])
    assert decoder.recv_buffer() is None
    assert payloads(decoder.feed_raw(stream[-10:])) == [b"x" * (FILL_MIN - 1)]


def test_a_large_connection_message_is_filled_too(fill: bool) -> None:
    body = pattern(500_000, 9)
    stream = encode_connection_message(body)
    decoder = FrameDecoder()
    flat = drive(decoder, stream, [65536])
    assert flat == []
    [(pos, item)] = decoder.controls
    assert pos == 0 and isinstance(item, ConnectionMessage) and item.payload == body


@pytest.mark.parametrize("bad", [0, -1, 10**9])
def test_filled_refuses_a_count_that_does_not_fit(bad: int) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ValueError, match="does not match"):
        decoder.filled(1)  # nothing is being received
    stream = encode_packages([Package(pattern(1 << 20, 1), 1234, 1, 1)])
    decoder.feed_raw(stream[: 56 + (1 << 20) // 2])
    view = decoder.recv_buffer()
    if view is None:
        pytest.skip("_bytesfill is not available in this interpreter")
    with pytest.raises(ValueError, match="does not match"):
        decoder.filled(bad)


def test_a_stream_that_ends_inside_a_filled_payload_delivers_nothing(fill: bool) -> None:
    size = 1 << 20
    stream = encode_packages([Package(pattern(size, 2), 1234, 1, 1)])
    decoder = FrameDecoder()
    got = drive(decoder, stream[: 56 + size // 2], [100_000])
    assert got == []
    with pytest.raises(ProtocolError, match=rf"{56 + size // 2} of {56 + size} bytes"):
        decoder.eof()
    # The half-written object is gone with the decoder's state.
    assert decoder.recv_buffer() is None and decoder.buffered == 0


def test_a_hostile_length_costs_at_most_fill_ratio_times_what_arrived(fill: bool) -> None:
    """The payload's object is as large as the header says: taken only after 1/8 came."""
    length = 64 << 20
    arrived = 1 << 20  # 1/64 of the announced length
    header = HEADER.pack(CONTROL, 1234, 1, 1, 0, 0, length)
    chunk = b"p" * 65536
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        decoder.feed_raw(header)
        for _ in range(arrived // len(chunk)):
            decoder.feed_raw(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoder.recv_buffer() is None  # still collecting parts
    assert peak < FILL_RATIO * arrived


def test_unfilled_bytes_is_written_through_its_view() -> None:
    if not _bytesfill.AVAILABLE:
        pytest.skip("_bytesfill is not available in this interpreter")
    obj, view = _bytesfill.unfilled_bytes(1000)
    view[:] = pattern(1000, 4)
    del view
    assert type(obj) is bytes and obj == pattern(1000, 4)
    assert hash(obj) == hash(pattern(1000, 4))
    assert {obj: 1}[pattern(1000, 4)] == 1


@pytest.mark.parametrize("size", [-1, 0, 1])
def test_unfilled_bytes_refuses_the_shared_tiny_objects(size: int) -> None:
    with pytest.raises(ValueError, match="size must be >= 2"):
        _bytesfill.unfilled_bytes(size)
