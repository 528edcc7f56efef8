"""The slot and port hashes must equal yoton 2.x's values (docs/protocol.md#hashes and #slots)."""

from __future__ import annotations

import pytest

from yoton_core._hashing import normalize_slot, port_hash, slot_hash

SLOT_TABLE = {
    "": 8,
    "a": 389555093250,
    "test": 2156616211481,
    "foo": 1463028650595,
    "foo.txt.pub-sub": 15285871923228,
    "foo.txt.sub-pub": 15294965165520,
    "chat.txt.pub-sub": 17460451874447,
    "é": 930775790331,
    "a" * 300: 12179530906847317059,
}

PORT_TABLE = {
    "": 49152,
    "a": 65274,
    "test": 56337,
    "test1": 49382,
    "test2": 54419,
    "foo": 53851,
    "chat": 49264,
    "pyzo": 53281,
    "yoton": 58084,
    "a" * 100: 53719,
}

# docs/protocol.md#slots: full slot strings as channels build them (before normalisation).
CHANNEL_SLOTS = {
    "Foo.txt.pub-sub": 15285871923228,
    "Foo.txt.sub-pub": 15294965165520,
    "Foo.bin.pub-sub": 14819689489144,
    "Foo.bin.sub-pub": 14828782731437,
    "Foo.obj.pub-sub": 14866435366344,
    "Foo.obj.sub-pub": 14875528608640,
    "Foo.txt.state": 11630341172885,
    "Foo.bin.state": 11261999496570,
    "Foo.obj.state": 11298934510656,
    "Foo.obj.req-rep": 14842492431819,
    "Foo.obj.rep-req": 14840097503808,
    "bar.obj.req-rep": 14551158792090,
    "bar.obj.rep-req": 14548763864078,
    "chat.txt.sub-pub": 17469545116738,
    "text.txt.pub-sub": 18217440170564,
}


@pytest.mark.parametrize(("s", "expected"), SLOT_TABLE.items(), ids=lambda v: repr(v)[:20])
def test_slot_hash_table(s: str, expected: int) -> None:
    assert slot_hash(s) == expected


@pytest.mark.parametrize(("s", "expected"), PORT_TABLE.items(), ids=lambda v: repr(v)[:20])
def test_port_hash_table(s: str, expected: int) -> None:
    assert port_hash(s) == expected


@pytest.mark.parametrize(("s", "expected"), CHANNEL_SLOTS.items())
def test_channel_slot_hashes(s: str, expected: int) -> None:
    assert slot_hash(normalize_slot(s)) == expected


def test_long_string_needs_arbitrary_precision() -> None:
    # With wrapping u64 arithmetic the 300-char value would differ; it is also >= 2**63,
    # so it must not be squeezed into a signed 64-bit int anywhere.
    value = slot_hash("a" * 300)
    assert value >= 2**63
    assert value < 2**64


def test_hashes_use_code_points_not_utf8() -> None:
    # "é" is one code point but two UTF-8 bytes; hashing bytes would give another value.
    assert slot_hash("é") == 930775790331
    assert slot_hash("é") != slot_hash("Ã©")


def test_normalize_slot() -> None:
    assert normalize_slot("  Foo.TXT.Pub-Sub \t\n") == "foo.txt.pub-sub"
    assert normalize_slot("a b") == "a b"  # inner spaces are kept
    assert normalize_slot("Ü") == normalize_slot("ü") == "ü"


def test_slot_hash_reserved_range() -> None:
    for s in ["", "x", "slot", "a" * 50]:
        assert 8 <= slot_hash(s) < 2**64


def test_port_hash_range() -> None:
    for s in ["", "x", "chat", "a" * 500]:
        assert 49152 <= port_hash(s) <= 65535


def test_port_hash_is_case_sensitive_and_unstripped() -> None:
    assert port_hash("Test") != port_hash("test")
    assert port_hash(" test") != port_hash("test")


def test_slot_hash_is_cached() -> None:
    slot_hash.cache_clear()
    slot_hash("cached.txt.pub-sub")
    slot_hash("cached.txt.pub-sub")
    info = slot_hash.cache_info()
    assert info.hits >= 1
    assert info.misses >= 1


@pytest.mark.parametrize("bad", [b"foo", 3, None])
def test_non_str_rejected(bad: object) -> None:
    with pytest.raises(TypeError):
        slot_hash(bad)
    with pytest.raises(TypeError):
        port_hash(bad)  # type: ignore[arg-type]
