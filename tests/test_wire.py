"""Package framing and the incremental frame decoder (docs/protocol.md#framing)."""

from __future__ import annotations

import pytest

from yoton_core._decoder import FrameDecoder
from yoton_core._errors import FrameError, ProtocolError
from yoton_core._wire import (
    CLOSE_BYTES,
    CLOSE_REQUEST,
    CONTROL,
    CONTROL_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER,
    HEADER_SIZE,
    HEARTBEAT,
    HEARTBEAT_BYTES,
    SLOT_CONTEXT,
    SLOT_DUMMY,
    SLOT_NONE,
    CloseRequest,
    ConnectionMessage,
    Heartbeat,
    Item,
    Package,
    decode_header,
    encode_connection_message,
    encode_package,
    encode_packages,
    make_header,
    package_header,
    raw_package,
)

EXAMPLE_HEX = (
    "594f544f4e202020 1c50f704e70d0000 efcdab8967452301 0500000000000000"
    " 0000000000000000 0000000000000000 0500000000000000 68656c6c6f"
)


def example_package() -> Package:
    return Package(b"hello", 15285871923228, 0x0123456789ABCDEF, 5)


def packages_of(items: list[Item]) -> list[Package]:
    """``items``, checked to hold packages only (no connection-level item)."""
    packages = [item for item in items if isinstance(item, Package)]
    assert packages == items
    return packages


def test_constants() -> None:
    assert HEADER.format == "<7Q"
    assert HEADER_SIZE == HEADER.size == 56
    assert CONTROL == 2314885729178898265
    assert CONTROL_BYTES == b"YOTON   "
    assert (SLOT_NONE, SLOT_DUMMY, SLOT_CONTEXT) == (0, 1, 2)
    assert DEFAULT_MAX_MESSAGE_SIZE == 2**30


def test_encode_example_from_protocol() -> None:
    assert encode_package(example_package()) == bytes.fromhex(EXAMPLE_HEX.replace(" ", ""))


def test_heartbeat_and_close_bytes() -> None:
    assert HEARTBEAT_BYTES == bytes.fromhex("594f544f4e2020200100000000000000") + bytes(40)
    expected_close = bytearray(HEARTBEAT_BYTES)
    expected_close[24:32] = bytes.fromhex("0100000000000000")
    assert CLOSE_BYTES == bytes(expected_close)


def test_encode_connection_message() -> None:
    data = encode_connection_message(b"ping")
    assert data == HEADER.pack(CONTROL, 1, 0, 0, 0, 0, 4) + b"ping"
    with pytest.raises(ValueError, match="^A connection message needs a non-empty payload.$"):
        encode_connection_message(b"")
    with pytest.raises(TypeError, match="^payload must be bytes, got str$"):
        encode_connection_message("ping")  # type: ignore[arg-type]


def test_encode_packages_joins() -> None:
    a = Package(b"a", 10, 1, 1)
    b = Package(b"bc", 11, 1, 2, 7, 9)
    assert encode_packages([a, b]) == encode_package(a) + encode_package(b)
    assert encode_packages([]) == b""
    assert encode_packages(iter([a])) == encode_package(a)


def test_decode_header() -> None:
    raw = encode_package(example_package())
    assert decode_header(raw) == (CONTROL, 15285871923228, 0x0123456789ABCDEF, 5, 0, 0, 5)
    assert decode_header(b"xx" + raw, 2)[1] == 15285871923228


def test_package_fields_repr_eq() -> None:
    p = Package(b"x" * 100, 9, 1, 2, 3, 4)
    assert (p.data, p.slot, p.source_id, p.source_seq, p.dest_id, p.dest_seq) == (
        b"x" * 100,
        9,
        1,
        2,
        3,
        4,
    )
    assert p.recv_seq == 0
    q = Package(b"x" * 100, 9, 1, 2, 3, 4)
    q.recv_seq = 77  # not a wire field
    assert p == q
    assert p != Package(b"x" * 100, 9, 1, 2, 3, 5)
    assert p != Package(b"y", 9, 1, 2, 3, 4)
    assert p != "not a package"
    assert repr(p) == (
        "Package(slot=9, source_id=0x1, source_seq=2, dest_id=0x3, dest_seq=4, "
        f"data={b'x' * 32!r}... (100 bytes))"
    )
    assert repr(Package(b"hi", 8)) == (
        "Package(slot=8, source_id=0x0, source_seq=0, dest_id=0x0, dest_seq=0, "
        "data=b'hi' (2 bytes))"
    )
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]
    assert repr(Package(b"y" * 32, 8)).endswith(f"data={b'y' * 32!r} (32 bytes))")  # all shown
    assert repr(Package(b"y" * 33, 8)).endswith(f"data={b'y' * 32!r}... (33 bytes))")
    d = Package(b"d", 8)  # the defaults: no source, no destination
    assert (d.source_id, d.source_seq, d.dest_id, d.dest_seq, d.recv_seq) == (0, 0, 0, 0, 0)


def test_header_tuples_and_packages_convert_both_ways() -> None:
    """make_header / package_header / raw_package: the receive path's form."""
    pkg = Package(b"abc", 9, 1, 2, 3, 4)
    header = make_header(b"abc", 9, 1, 2, 3, 4)
    assert header == package_header(pkg) == (CONTROL, 9, 1, 2, 3, 4, 3)
    assert HEADER.pack(*header) + b"abc" == encode_package(pkg)
    assert raw_package(header, b"abc") == pkg
    assert make_header(b"", 8, 5, 6) == (CONTROL, 8, 5, 6, 0, 0, 0)


def test_events_are_values() -> None:
    assert Heartbeat() == HEARTBEAT
    assert CloseRequest() == CLOSE_REQUEST
    assert ConnectionMessage(b"a") == ConnectionMessage(b"a")
    assert ConnectionMessage(b"a") != ConnectionMessage(b"b")
    with pytest.raises(AttributeError):
        ConnectionMessage(b"a").payload = b"b"  # type: ignore[misc]


# ------------------------------------------------------------------ decoding


def test_decode_one_package() -> None:
    d = FrameDecoder()
    items = packages_of(d.feed(encode_package(example_package())))
    assert items == [example_package()]
    assert type(items[0].data) is bytes
    assert d.buffered == 0
    d.eof()


def test_decode_control_packages() -> None:
    stream = (
        HEARTBEAT_BYTES
        + CLOSE_BYTES
        + HEADER.pack(CONTROL, 1, 0, 7, 0, 0, 0)  # other zero-length: ignored
        + HEADER.pack(CONTROL, 99, 5, 0, 0, 0, 0)  # slot not checked: heartbeat
        + encode_connection_message(b"hi")
    )
    assert FrameDecoder().feed(stream) == [
        HEARTBEAT,
        CLOSE_REQUEST,
        HEARTBEAT,
        ConnectionMessage(b"hi"),
    ]


def test_items_come_in_stream_order_when_packages_and_control_items_mix() -> None:
    """feed() puts heartbeats, connection messages and close requests between the
    packages exactly where they were in the stream (feed_raw says where)."""
    a, b, c = (Package(bytes([i]) * 3, 9, 1, i) for i in (1, 2, 3))
    stream = (
        HEARTBEAT_BYTES
        + encode_package(a)
        + encode_connection_message(b"m1")
        + HEARTBEAT_BYTES
        + encode_package(b)
        + encode_package(c)
        + encode_connection_message(b"m2")
        + CLOSE_BYTES
    )
    m1, m2 = ConnectionMessage(b"m1"), ConnectionMessage(b"m2")
    assert FrameDecoder().feed(stream) == [HEARTBEAT, a, m1, HEARTBEAT, b, c, m2, CLOSE_REQUEST]
    d = FrameDecoder()
    flat = d.feed_raw(stream)
    assert flat[1::2] == [a.data, b.data, c.data]
    # (position in flat, item): the item came before the package at flat[position]
    assert d.controls == [(0, HEARTBEAT), (2, m1), (2, HEARTBEAT), (6, m2), (6, CLOSE_REQUEST)]


@pytest.mark.parametrize("size", [100, 200_000], ids=["collected in parts", "filled in place"])
def test_a_payload_completed_by_the_end_of_a_chunk_is_returned_at_once(size: int) -> None:
    """The chunk that brings a payload's last byte returns the package, not the next one."""
    pkg = Package(bytes(range(256)) * (size // 256) + b"e" * (size % 256), 9, 1, 1)
    raw = encode_package(pkg)
    d = FrameDecoder()
    cut = HEADER_SIZE + size // 4  # a quarter: the large payload moves into its own object
    assert d.feed(raw[:cut]) == []
    assert d.buffered == cut
    assert d.feed(raw[cut:]) == [pkg]  # exactly the rest
    assert d.buffered == 0
    assert d.feed(HEARTBEAT_BYTES) == [HEARTBEAT]


def test_only_source_seq_0_and_1_of_an_empty_package_mean_something() -> None:
    """0 is a heartbeat, 1 a close request; any other is ignored.

    See docs/protocol.md#connection-level-packages.
    """
    for seq, expected in [
        (0, [HEARTBEAT]),
        (1, [CLOSE_REQUEST]),
        (2, []),
        (7, []),
        (2**64 - 1, []),
    ]:
        assert FrameDecoder().feed(HEADER.pack(CONTROL, 1, 0, seq, 0, 0, 0)) == expected, seq


def test_a_limit_of_zero_accepts_empty_packages_only() -> None:
    d = FrameDecoder(max_message_size=0)
    assert d.max_message_size == 0
    assert d.feed(HEARTBEAT_BYTES) == [HEARTBEAT]
    with pytest.raises(
        FrameError, match="Package of 1 bytes exceeds the maximum message size of 0"
    ):
        d.feed(encode_package(Package(b"x", 9)))


def test_decode_one_byte_at_a_time() -> None:
    pkgs = [Package(bytes([i]) * i, 8 + i, 1, i + 1, 0, i) for i in range(1, 20)]
    stream = encode_packages(pkgs) + HEARTBEAT_BYTES
    sizes = [HEADER_SIZE + len(p.data) for p in pkgs] + [HEADER_SIZE]
    d = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
        assert d.buffered == (i + 1) - sum(sizes[: len(out)])
    assert out == [*pkgs, HEARTBEAT]
    assert d.buffered == 0
    d.eof()


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = encode_package(example_package())
    d = FrameDecoder()
    assert d.feed(bytearray(raw[:30])) == []
    out = packages_of(d.feed(memoryview(raw)[30:]))
    assert out == [example_package()]
    assert type(out[0].data) is bytes


def test_empty_feed() -> None:
    d = FrameDecoder()
    assert d.feed(b"") == []
    d.feed(HEARTBEAT_BYTES[:10])
    assert d.feed(b"") == []
    assert d.buffered == 10


def test_large_payload_in_chunks() -> None:
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    pkg = Package(payload, 1234, 5, 6)
    raw = encode_package(pkg) + encode_package(example_package())
    d = FrameDecoder()
    out = []
    chunk = 65536
    for i in range(0, len(raw), chunk):
        out += d.feed(raw[i : i + chunk])
        if not out:
            assert d.buffered == min(i + chunk, len(raw))
    assert out == [pkg, example_package()]
    assert d.buffered == 0


def test_payload_split_exactly_at_boundaries() -> None:
    raw = encode_package(Package(b"abcdef", 9)) * 3
    for cut in range(len(raw) + 1):
        d = FrameDecoder()
        out = packages_of(d.feed(raw[:cut]) + d.feed(raw[cut:]))
        assert [p.data for p in out] == [b"abcdef"] * 3, cut


def test_bad_control_word() -> None:
    good = encode_package(example_package())
    bad = b"XOTON   " + good[8:]
    d = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        d.feed(good + bad)
    assert str(info.value) == (
        "Lost track of the stream: bad control bytes 58 4f 54 4f 4e 20 20 20 "
        "(b'XOTON   '), expected 59 4f 54 4f 4e 20 20 20 (b'YOTON   ')."
    )
    assert info.value.items == [example_package()]  # type: ignore[attr-defined]
    # The decoder is dead now.
    with pytest.raises(ProtocolError, match="Lost track of the stream"):
        d.feed(good)
    with pytest.raises(ProtocolError, match="Lost track of the stream"):
        d.eof()


def test_bad_control_detected_before_a_whole_header() -> None:
    d = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        d.feed(b"GET / HTTP/1.1\r\n")
    assert str(info.value) == (
        "Lost track of the stream: bad control bytes 47 45 54 20 2f 20 48 54 "
        "(b'GET / HT'), expected 59 4f 54 4f 4e 20 20 20 (b'YOTON   ')."
    )
    d2 = FrameDecoder()
    assert d2.feed(b"YOT") == []  # still a possible prefix
    with pytest.raises(ProtocolError, match="Lost track of the stream"):
        d2.feed(b"X")


def test_length_over_maximum_raises_at_header() -> None:
    d = FrameDecoder(max_message_size=1000)
    header = HEADER.pack(CONTROL, 9, 0, 1, 0, 0, 1001)
    with pytest.raises(ProtocolError) as info:
        d.feed(header)  # no payload sent at all: refused on the header alone
    assert "1001" in str(info.value) and "1000" in str(info.value)
    with pytest.raises(ProtocolError, match="1001"):
        d.feed(b"")


def _over_limit_chunkings() -> list[tuple[str, list[bytes]]]:
    ok = encode_package(Package(b"fine", 9, 7, 1))
    big = encode_package(Package(b"x" * 101, 9, 7, 2))
    after = encode_package(Package(b"after", 9, 7, 3))
    stream = ok + big + after
    return [
        ("all in one chunk", [stream]),
        ("whole package alone", [ok, big + after]),
        ("header split, then the rest whole", [ok + big[:30], big[30:] + after]),
        ("header, then the payload whole", [ok + big[:HEADER_SIZE], big[HEADER_SIZE:] + after]),
    ]


@pytest.mark.parametrize(
    "chunks", [c for _, c in _over_limit_chunkings()], ids=[n for n, _ in _over_limit_chunkings()]
)
@pytest.mark.parametrize("raw", [False, True], ids=["feed", "feed_raw"])
def test_an_over_limit_package_is_refused_however_it_arrives(
    chunks: list[bytes], raw: bool
) -> None:
    """Whole in one chunk too: the limit is checked on every header, not only on
    a payload that must be collected over several reads."""
    d = FrameDecoder(max_message_size=100)
    delivered: list[bytes] = []
    with pytest.raises(FrameError) as info:
        for chunk in chunks:
            if raw:
                delivered += d.feed_raw(chunk)[1::2]
            else:
                delivered += [p.data for p in d.feed(chunk) if isinstance(p, Package)]
    error = info.value
    delivered += error.raw[1::2] if raw else [p.data for p in error.items]
    assert delivered == [b"fine"]  # what came before; never the big one, nor what follows
    assert error.reason == "Package of 101 bytes exceeds the maximum message size of 100 bytes."


def test_hostile_length_default_maximum() -> None:
    d = FrameDecoder()
    with pytest.raises(ProtocolError, match=str(2**64 - 1)):
        d.feed(HEADER.pack(CONTROL, 9, 0, 1, 0, 0, 2**64 - 1))


def test_length_equal_to_maximum_is_fine() -> None:
    d = FrameDecoder(max_message_size=5)
    assert d.feed(encode_package(example_package())) == [example_package()]


def test_eof_inside_payload() -> None:
    d = FrameDecoder()
    raw = encode_package(example_package())
    d.feed(raw[:-2])
    assert d.buffered == len(raw) - 2
    with pytest.raises(ProtocolError) as info:
        d.eof()
    assert str(info.value) == (
        "Other end dropped the connection in the middle of a package (59 of 61 bytes received)."
    )


def test_eof_inside_header() -> None:
    d = FrameDecoder()
    d.feed(HEARTBEAT_BYTES[:20])
    with pytest.raises(ProtocolError) as info:
        d.eof()
    assert str(info.value) == (
        "Other end dropped the connection in the middle of a package header "
        "(20 of 56 bytes received)."
    )


def test_eof_clean() -> None:
    d = FrameDecoder()
    assert d.feed(HEARTBEAT_BYTES * 2) == [HEARTBEAT, HEARTBEAT]
    d.eof()  # a clean end between packages: no error
    assert d.buffered == 0
    assert d.feed(b"") == []  # and the decoder is still usable, not failed


@pytest.mark.parametrize("bad", [-1, 1.5, "10"])
def test_bad_max_message_size(bad: object) -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        FrameDecoder(bad)  # type: ignore[arg-type]


def test_many_small_packages_across_64k_chunks() -> None:
    pkgs = [Package(b"m" * 100, 1000 + i % 7, 42, i + 1) for i in range(5000)]
    stream = encode_packages(pkgs)
    d = FrameDecoder()
    out: list[Package] = []
    for i in range(0, len(stream), 65536):
        out += packages_of(d.feed(stream[i : i + 65536]))
    assert out == pkgs
    assert [p.source_seq for p in out] == list(range(1, 5001))
