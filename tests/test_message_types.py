"""Message types and the OBJECT codec (docs/protocol.md#message-types)."""

from __future__ import annotations

import collections
import enum
import math
import struct
import types

import pytest

from yoton_core._errors import MessageDecodeError, ProtocolError
from yoton_core._message_types import (
    BINARY,
    MAX_DEPTH,
    OBJECT,
    TEXT,
    BinaryMessageType,
    MessageType,
    ObjectMessageType,
    TextMessageType,
    decode_object,
    encode_object,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ------------------------------------------------------------------ the three types


def test_instances_and_names() -> None:
    assert isinstance(TEXT, TextMessageType) and isinstance(TEXT, MessageType)
    assert isinstance(BINARY, BinaryMessageType)
    assert isinstance(OBJECT, ObjectMessageType)
    assert [t.message_type_name() for t in (TEXT, BINARY, OBJECT)] == ["txt", "bin", "obj"]
    assert repr(TEXT) == "<TextMessageType 'txt'>"


def test_empty_messages() -> None:
    assert TEXT.empty_message() == ""
    assert BINARY.empty_message() == b""
    assert OBJECT.empty_message() is None


def test_text() -> None:
    assert TEXT.message_to_bytes("hé") == b"h\xc3\xa9"
    assert TEXT.message_from_bytes(b"h\xc3\xa9") == "hé"
    with pytest.raises(ValueError) as info:
        TEXT.message_to_bytes(b"bytes")
    assert str(info.value).startswith("Text channel requires string messages")
    assert "bytes" in str(info.value)
    with pytest.raises(ValueError, match="got int"):
        TEXT.message_to_bytes(3)
    with pytest.raises(MessageDecodeError, match="UTF-8"):
        TEXT.message_from_bytes(b"\xff\xfe")


def test_binary() -> None:
    assert BINARY.message_to_bytes(b"\x00\x01") == b"\x00\x01"
    assert BINARY.message_from_bytes(b"\x00\x01") == b"\x00\x01"
    for bad in (bytearray(b"x"), memoryview(b"x"), "x"):
        with pytest.raises(ValueError) as info:
            BINARY.message_to_bytes(bad)
        assert str(info.value).startswith("Binary channel requires byte messages")
        assert type(bad).__name__ in str(info.value)
    # A buffer, beyond the annotated bytes: still returned as bytes.
    assert type(BINARY.message_from_bytes(bytearray(b"ab"))) is bytes  # type: ignore[arg-type]


def test_base_class_is_abstract_and_subclassable() -> None:
    base = MessageType()
    with pytest.raises(NotImplementedError):
        base.message_type_name()
    with pytest.raises(NotImplementedError):
        base.message_to_bytes("x")
    with pytest.raises(NotImplementedError):
        base.empty_message()
    assert repr(base) == "<MessageType '?'>"

    class Upper(MessageType):
        def message_type_name(self) -> str:
            return "up"

        def message_to_bytes(self, message: str) -> bytes:
            return message.upper().encode()

        def message_from_bytes(self, data: bytes) -> str:
            return data.decode()

    up = Upper()
    assert up.message_type_name() == "up"
    assert up.message_from_bytes(up.message_to_bytes("abc")) == "ABC"
    assert up.empty_message() == ""


# ------------------------------------------------------------------ OBJECT: pinned bytes

EXAMPLES: list[tuple[object, str]] = [
    (None, "6e"),
    (True, "6201"),
    (False, "6200"),
    (1, "69 0100000000000000"),
    (-1, "69 ffffffffffffffff"),
    (1.5, "66 000000000000f83f"),
    ("hé", "73 03 68c3a9"),
    ("", "73 00"),
    ([1, "a"], "6c02 690100000000000000 730161"),
    (("echo", ("foo",), {}), "7403 7304 6563686f 7401 7303 666f6f 6400"),
    ({"a": None}, "6401 730161 6e"),
    ([], "6c00"),
    ((), "7400"),
    # the req/rep request of PROTOCOL 6.5: ("add", (3, 4), {}) and the reply 7
    (("add", (3, 4), {}), "7403 7303616464 7402 690300000000000000 690400000000000000 6400"),
    (7, "69 0700000000000000"),
]


@pytest.mark.parametrize(("obj", "hexed"), EXAMPLES, ids=lambda v: repr(v)[:30])
def test_object_examples(obj: object, hexed: str) -> None:
    assert encode_object(obj) == h(hexed)
    assert OBJECT.message_to_bytes(obj) == h(hexed)
    assert decode_object(h(hexed)) == obj
    assert type(decode_object(h(hexed))) is type(obj)


def test_num_boundaries() -> None:
    assert encode_object("a" * 254)[:2] == h("73 fe")
    assert encode_object("a" * 255)[:10] == h("73 ff ff00000000000000")
    assert encode_object(list(range(255)))[:10] == h("6c ff ff00000000000000")
    assert encode_object(tuple(range(300)))[:10] == h("74 ff 2c01000000000000")
    big = {i: i for i in range(256)}
    assert encode_object(big)[:10] == h("64 ff 0001000000000000")
    for obj in ("a" * 254, "a" * 255, "é" * 200, list(range(255)), big):
        assert decode_object(encode_object(obj)) == obj


def test_int_range() -> None:
    assert encode_object(2**63 - 1) == b"i" + struct.pack("<q", 2**63 - 1)
    assert encode_object(-(2**63)) == b"i" + struct.pack("<q", -(2**63))
    with pytest.raises(ValueError, match=str(2**63)) as info:
        encode_object(2**63)
    assert not isinstance(info.value, struct.error)
    with pytest.raises(ValueError, match="out of range"):
        encode_object([-(2**63) - 1])
    with pytest.raises(ValueError, match="bits"):  # no 4300-digit str() limit trouble
        encode_object(10**5000)


def test_subclasses_encode_as_base_types() -> None:
    class Color(enum.IntEnum):
        RED = 2

    class MyFloat(float):
        pass

    class MyStr(str):
        def __str__(self) -> str:  # must not be used (could loop)
            return MyStr("other")

    class MyList(list):
        pass

    point = collections.namedtuple("point", "x y")
    assert encode_object(Color.RED) == encode_object(2)
    assert encode_object(MyFloat(2.5)) == encode_object(2.5)
    assert encode_object(MyStr("abc")) == encode_object("abc")
    assert encode_object(MyList([1])) == encode_object([1])
    assert encode_object(point(1, 2)) == encode_object((1, 2))
    od = collections.OrderedDict([("b", 1), ("a", 2)])
    assert encode_object(od) == encode_object({"b": 1, "a": 2})
    decoded = decode_object(encode_object(point(1, 2)))
    assert decoded == (1, 2) and type(decoded) is tuple
    assert type(decode_object(encode_object(od))) is dict


def test_bool_before_int() -> None:
    assert encode_object(True) == b"b\x01"
    assert decode_object(b"b\x01") is True
    assert decode_object(b"b\x07") is True  # bool(byte), as 2.x
    assert decode_object(b"b\x00") is False


def test_dict_keys_any_supported_type() -> None:
    obj = {(1, "a"): [None], 2.5: {"x": True}, None: 0}
    assert decode_object(encode_object(obj)) == obj


def test_floats() -> None:
    for value in (0.0, -0.0, math.inf, -math.inf, 1e308, 5e-324):
        out = decode_object(encode_object(value))
        assert out == value and math.copysign(1, out) == math.copysign(1, value)
    assert math.isnan(decode_object(encode_object(math.nan)))


@pytest.mark.parametrize(
    "obj", [b"bytes", {1, 2}, 1j, object(), bytearray(b"x"), [1, {2}], {"a": b"x"}]
)
def test_unsupported_types(obj: object) -> None:
    with pytest.raises(ValueError, match=r"^Unsupported type: <class '"):
        encode_object(obj)


def test_encode_depth_limit() -> None:
    nested: list = []
    for _ in range(MAX_DEPTH):
        nested = [nested]
    with pytest.raises(ValueError, match="too deep"):
        encode_object(nested)
    ok = nested[0]  # MAX_DEPTH levels of containers
    assert decode_object(encode_object(ok)) == ok
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="too deep"):
        encode_object(loop)


def test_surrogates_rejected() -> None:
    with pytest.raises(ValueError):
        encode_object("\udc80")


# ------------------------------------------------------------------ OBJECT: hostile input


def test_empty_and_trailing() -> None:
    assert decode_object(b"") is None
    assert OBJECT.message_from_bytes(b"") is None
    assert decode_object(h("6e") + b"trailing junk") is None
    assert decode_object(h("690100000000000000 ff")) == 1
    assert decode_object(bytearray(h("6201"))) is True  # type: ignore[arg-type]  # a buffer too


@pytest.mark.parametrize(
    "data",
    [
        "x",  # unknown tag
        "00",
        "69 01000000",  # truncated int
        "66 0000",  # truncated float
        "62",  # bool without body
        "73 05 6162",  # truncated str
        "73",  # str without count
        "73 ff 0100",  # truncated NUM
        "6c 02 6e",  # list missing an item
        "6c ff ffffffffffffff0f",  # 2**60 items: hostile count
        "64 ff ffffffffffffffff",  # 2**64-1 pairs
        "74 03 6e 6e",
        "64 01 6e",  # dict missing its value
        "73 02 c328",  # invalid UTF-8
        "64 01 6c00 6e",  # unhashable key (list)
        "64 01 6400 6e",  # unhashable key (dict)
    ],
)
def test_decode_errors(data: str) -> None:
    with pytest.raises(MessageDecodeError):
        decode_object(h(data) if data != "x" else b"x")


TRUNCATION_CASES = [
    "hello world",
    ["hello world"],
    ("hello world", 1),
    [1, 2**40, None],
    [[], {}, ()],
    {"key": ["hello world", 1.5]},
    ["x" * 300],  # a long str inside a list (long count form)
    [True, 2.5, "s"],
    list(range(300)),  # a long list (long count form)
]


@pytest.mark.parametrize("obj", TRUNCATION_CASES, ids=lambda o: repr(o)[:30])
def test_every_cut_of_an_encoding_is_refused(obj: object) -> None:
    """An encoding cut anywhere is a MessageDecodeError, never a shorter value.

    The encoding is prefix-free (counts and lengths come first), so no proper
    prefix of one is complete: ``["hello world"]`` cut short must not decode
    as ``['hello w']``. Values inside lists and tuples are decoded by an
    inline fast path of their own, hence the cases above.
    """
    data = encode_object(obj)
    assert decode_object(data) == obj
    for cut in range(1, len(data)):
        with pytest.raises(MessageDecodeError):
            decode_object(data[:cut])


def test_decode_error_is_a_protocol_and_value_error() -> None:
    with pytest.raises(MessageDecodeError) as info:
        decode_object(b"z")
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)
    assert "b'z'" in str(info.value)


def test_decode_depth_limit() -> None:
    deep = b"l\x01" * (MAX_DEPTH + 1) + b"n"
    with pytest.raises(MessageDecodeError, match="deeper"):
        decode_object(deep)
    very_deep = b"t\x01" * 100_000 + b"n"  # would blow the recursion limit without the bound
    with pytest.raises(MessageDecodeError):
        decode_object(very_deep)
    ok = b"l\x01" * MAX_DEPTH + b"n"
    value = decode_object(ok)
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value is None


def test_hostile_count_fails_fast() -> None:
    # A claimed 2**60-element list backed by 3 bytes must not allocate or loop.
    with pytest.raises(MessageDecodeError, match="Truncated"):
        decode_object(b"l\xff" + struct.pack("<Q", 2**60) + b"nnn")


def test_little_stack_left_gives_clean_errors() -> None:
    import sys

    deep_data = b"l\x01" * 200 + b"n"
    deep_obj: list = []
    for _ in range(200):
        deep_obj = [deep_obj]

    def at_depth(n: int, func):  # noqa: ANN001, ANN202
        return func() if n == 0 else at_depth(n - 1, func)

    frame: types.FrameType | None = sys._getframe()
    depth = 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 150)  # room for the helper, not for 200 levels
    try:
        with pytest.raises(MessageDecodeError):
            at_depth(50, lambda: decode_object(deep_data))
        with pytest.raises(ValueError, match="too deep"):
            at_depth(50, lambda: encode_object(deep_obj))
    finally:
        sys.setrecursionlimit(old)


# -- found by mutation testing (docs/development.md) --------------------------------------------


def test_the_base_class_says_which_method_a_subclass_must_implement() -> None:
    base = MessageType()
    for method, call in [
        ("message_type_name", lambda: base.message_type_name()),
        ("message_to_bytes", lambda: base.message_to_bytes("x")),
        ("message_from_bytes", lambda: base.message_from_bytes(b"x")),
    ]:
        with pytest.raises(NotImplementedError) as info:
            call()
        assert str(info.value) == f"MessageType subclasses must implement {method}()"


def test_binary_gives_exact_bytes_for_subclasses_and_buffers() -> None:
    class Tagged(bytes):
        pass

    out = BINARY.message_to_bytes(Tagged(b"abc"))
    assert type(out) is bytes and out == b"abc"
    plain = b"xyz"
    assert BINARY.message_to_bytes(plain) is plain  # no copy of a plain bytes
    for buffer in (bytearray(b"xyz"), memoryview(b"xyz")):
        got = BINARY.message_from_bytes(buffer)  # type: ignore[arg-type]
        assert type(got) is bytes and got == b"xyz"


def test_object_type_round_trips_through_its_methods() -> None:
    value = {"k": [1, "two", (3.0, None, True)]}
    assert OBJECT.message_from_bytes(OBJECT.message_to_bytes(value)) == value
    assert OBJECT.message_from_bytes(b"") is None


@pytest.mark.parametrize(("tag", "empty"), [(b"s", ""), (b"l", []), (b"t", ()), (b"d", {})])
def test_a_long_form_count_may_end_the_payload(tag: bytes, empty: object) -> None:
    """A count may be written in the long form (0xff + u64) even when short; one
    that ends exactly at the end of the payload is complete, not truncated."""
    assert decode_object(tag + b"\xff" + bytes(8)) == empty
    with pytest.raises(MessageDecodeError):
        decode_object(tag + b"\xff" + bytes(7))


def test_the_encoding_errors_say_what_was_wrong() -> None:
    with pytest.raises(ValueError) as info:
        encode_object(2**63)
    assert str(info.value) == (
        "Integer 9223372036854775808 is out of range for the object encoding "
        "(signed 64-bit: -9223372036854775808..9223372036854775807)."
    )
    for bits, shown in [(199, str(2**198)), (200, "an integer of 200 bits")]:
        with pytest.raises(ValueError, match=f"^Integer {shown} is out of range"):
            encode_object(2 ** (bits - 1))
    with pytest.raises(ValueError) as info:
        encode_object({1, 2})
    assert str(info.value) == (
        "Unsupported type: <class 'set'>; OBJECT messages hold None, bool, int (signed "
        "64-bit), float, str, and lists, tuples and dicts of these. Convert the value first "
        "(e.g. list(a_set)), or send bytes over BINARY with an encoding of your own."
    )
    deep: list = []
    deep.append(deep)
    with pytest.raises(ValueError) as info:
        encode_object(deep)
    assert str(info.value) == (
        f"Object nesting is too deep for the object encoding (more than {MAX_DEPTH} "
        "levels; a container that contains itself?)."
    )
