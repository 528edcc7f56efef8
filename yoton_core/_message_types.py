"""Message types: how a channel turns messages into payload bytes (docs/protocol.md#message-types).

A message type has a *name*, which becomes part of the channel's slot string
(``base.<name>.pub-sub``), so only channels of the same type meet, and a pair of
conversions between messages and bytes. Three are built in: :data:`TEXT` (str,
UTF-8), :data:`BINARY` (bytes as is) and :data:`OBJECT` (a small tagged
encoding of None, bool, int, float, str, list, tuple and dict).

The OBJECT encoding is 2.x's, byte for byte. Decoding treats its input as
hostile: nothing is evaluated or unpickled, counts are checked against the
bytes actually present before anything is allocated, nesting is bounded, and
every failure is a :class:`~yoton_core._errors.MessageDecodeError`.
"""

from __future__ import annotations

import struct
from typing import Any

from ._errors import InvalidArgumentError, MessageDecodeError

__all__ = [
    "MessageType",
    "TextMessageType",
    "BinaryMessageType",
    "ObjectMessageType",
    "TEXT",
    "BINARY",
    "OBJECT",
    "encode_object",
    "decode_object",
    "MAX_DEPTH",
]

#: Deepest nesting of lists/tuples/dicts that OBJECT encodes or decodes.
MAX_DEPTH = 256

#: What an OBJECT message may hold, as its errors say it.
OBJECT_HOLDS = "None, bool, int (signed 64-bit), float, str, and lists, tuples and dicts of these"


class MessageType:
    """Base class of message types; subclass it to send your own kind of message.

    Override the three methods below. The name is part of the slot, so two
    channels only talk if both use a type with the same name. For example::

        class JsonType(yoton.MessageType):
            def message_type_name(self):
                return "json"

            def message_to_bytes(self, message):
                return json.dumps(message).encode()

            def message_from_bytes(self, data):
                return json.loads(data) if data else None

        pub = yoton.PubChannel(ctx, "news", JsonType)

    ``message_from_bytes(b"")`` must work: it gives the "empty" message that
    ``recv`` returns when nothing arrived. Raise ``ValueError`` for messages you
    cannot encode and for payloads you cannot decode.
    """

    def message_type_name(self) -> str:
        """Return the short name of the type (e.g. ``"txt"``), used in slot strings.

        Channels meet only if their types have the same name, so give your type
        a name of its own (not ``txt``, ``bin`` or ``obj``).
        """
        raise NotImplementedError("MessageType subclasses must implement message_type_name()")

    def message_to_bytes(self, message: Any) -> bytes:
        """Encode ``message`` as payload bytes; raise ValueError if it has the wrong type.

        Called by the sending channel, in the sending thread. An empty result
        (``b""``) is not sent at all.
        """
        raise NotImplementedError("MessageType subclasses must implement message_to_bytes()")

    def message_from_bytes(self, data: bytes) -> Any:
        """Decode payload bytes back into a message.

        Called by the receiving channel when the message is read. ``data`` comes
        from the network: treat it as hostile, and raise ValueError for bytes
        you cannot decode rather than evaluating them.
        """
        raise NotImplementedError("MessageType subclasses must implement message_from_bytes()")

    def empty_message(self) -> Any:
        """Return what ``recv`` gives when no message is available."""
        return self.message_from_bytes(b"")

    def __repr__(self) -> str:
        try:
            name = self.message_type_name()
        except NotImplementedError:
            name = "?"
        return f"<{type(self).__name__} {name!r}>"


class TextMessageType(MessageType):
    """Messages are ``str``, sent as UTF-8. The empty message is ``""``."""

    def message_type_name(self) -> str:
        return "txt"

    def message_to_bytes(self, message: Any) -> bytes:
        if not isinstance(message, str):
            raise InvalidArgumentError(
                "Text channel requires string messages: expected str, got "
                f"{type(message).__name__} (use BINARY for bytes, OBJECT for other values)."
            )
        return message.encode("utf-8")

    def message_from_bytes(self, data: bytes) -> str:
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise MessageDecodeError(f"Text message is not valid UTF-8: {exc}") from None


class BinaryMessageType(MessageType):
    """Messages are ``bytes``, sent unchanged. The empty message is ``b""``."""

    def message_type_name(self) -> str:
        return "bin"

    def message_to_bytes(self, message: Any) -> bytes:
        if not isinstance(message, bytes):
            raise InvalidArgumentError(
                "Binary channel requires byte messages: expected bytes, got "
                f"{type(message).__name__} (convert with bytes(...))."
            )
        return message if type(message) is bytes else bytes(message)

    def message_from_bytes(self, data: bytes) -> bytes:
        return data if type(data) is bytes else bytes(data)


class ObjectMessageType(MessageType):
    """Messages are None, bool, int (64-bit), float, str, list, tuple or dict, nested.

    Subclasses of these encode as their base type (an IntEnum as int, a
    namedtuple as tuple, an OrderedDict as dict) and decode as the base type.
    The empty message is ``None``.
    """

    def message_type_name(self) -> str:
        return "obj"

    def message_to_bytes(self, message: Any) -> bytes:
        return encode_object(message)

    def message_from_bytes(self, data: bytes) -> Any:
        return decode_object(data)


TEXT = TextMessageType()
"""The default message type: ``str`` messages, sent as UTF-8 (slot type ``txt``).

The empty message is ``""``; sending a non-str raises InvalidArgumentError.
"""
BINARY = BinaryMessageType()
"""``bytes`` messages, sent unchanged (slot type ``bin``); the empty message is ``b""``.

Over ``inproc`` the receiver gets the very bytes object that was sent.
"""
OBJECT = ObjectMessageType()
"""Structured values: None, bool, int (64-bit), float, str, list, tuple, dict, nested.

Encoded in 2.x's small tagged format (slot type ``obj``), never pickled, so
receiving is safe from any peer; the empty message is ``None``. Request/reply
always uses it for arguments and results. docs/protocol.md#message-types has
the bytes.
"""


# ---------------------------------------------------------------- OBJECT codec

_Q = struct.Struct("<Q")
_q = struct.Struct("<q")
_d = struct.Struct("<d")
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


def _count_prefixes(tag: bytes) -> list[bytes]:
    return [tag + bytes((i,)) for i in range(255)]


_S = _count_prefixes(b"s")
_L = _count_prefixes(b"l")
_T = _count_prefixes(b"t")
_D = _count_prefixes(b"d")


def _too_deep() -> InvalidArgumentError:
    return InvalidArgumentError(
        f"Object nesting is too deep for the object encoding (more than {MAX_DEPTH} "
        "levels; a container that contains itself?)."
    )


def _int_out_of_range(value: int) -> InvalidArgumentError:
    shown = str(value) if value.bit_length() < 200 else f"an integer of {value.bit_length()} bits"
    return InvalidArgumentError(
        f"Integer {shown} is out of range for the object encoding "
        f"(signed 64-bit: {_INT_MIN}..{_INT_MAX})."
    )


def _encode(obj: Any, out: list[bytes], depth: int) -> None:
    t = type(obj)
    if t is str:
        b = obj.encode("utf-8")
        n = len(b)
        out.append(_S[n] if n < 255 else b"s\xff" + _Q.pack(n))
        out.append(b)
    elif t is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise _int_out_of_range(obj)
        out.append(b"i" + _q.pack(obj))
    elif obj is None:
        out.append(b"n")
    elif t is float:
        out.append(b"f" + _d.pack(obj))
    elif t is bool:
        out.append(b"b\x01" if obj else b"b\x00")
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        n = len(obj)
        append = out.append
        if n < 255:
            append(_L[n] if t is list else _T[n])
        else:
            append((b"l\xff" if t is list else b"t\xff") + _Q.pack(n))
        depth += 1
        for item in obj:
            # Short strings and None inline: most items are (saves a call each).
            ti = type(item)
            if ti is str:
                b = item.encode("utf-8")
                if len(b) < 255:
                    append(_S[len(b)])
                    append(b)
                    continue
            elif ti is int:
                if _INT_MIN <= item <= _INT_MAX:
                    append(b"i" + _q.pack(item))
                    continue
            elif item is None:
                append(b"n")
                continue
            elif not item and (ti is dict or ti is tuple or ti is list) and depth < MAX_DEPTH:
                append(b"d\x00" if ti is dict else b"t\x00" if ti is tuple else b"l\x00")
                continue
            _encode(item, out, depth)
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        n = len(obj)
        out.append(_D[n] if n < 255 else b"d\xff" + _Q.pack(n))
        for key, value in obj.items():
            _encode(key, out, depth + 1)
            _encode(value, out, depth + 1)
    else:
        _encode(_as_base_type(obj), out, depth)


def _as_base_type(obj: Any) -> Any:
    """Convert an instance of a subclass of a supported type to exactly that type.

    The unbound base-class methods are used on purpose: they ignore overrides such
    as a ``__str__`` that returns another subclass instance, so the result is
    always of the exact base type and :func:`_encode` cannot loop.
    """
    if isinstance(obj, bool):  # bool cannot be subclassed, but it must win over int
        return obj is True
    if isinstance(obj, int):
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, tuple):
        return tuple(obj)
    if isinstance(obj, dict):
        return dict(obj.items())
    raise InvalidArgumentError(
        f"Unsupported type: {type(obj)!r}; OBJECT messages hold {OBJECT_HOLDS}. Convert "
        "the value first (e.g. list(a_set)), or send bytes over BINARY with an encoding "
        "of your own."
    )


def encode_object(obj: Any) -> bytes:
    """Encode ``obj`` with the OBJECT encoding.

    Raises:
        ValueError: an unsupported type (``"Unsupported type: <class ...>"``),
            an int outside the signed 64-bit range, a str that is not valid
            Unicode, or nesting deeper than :data:`MAX_DEPTH`.
    """
    out: list[bytes] = []
    try:
        _encode(obj, out, 0)
    except RecursionError:  # only when called with little stack left
        raise _too_deep() from None
    return b"".join(out)


class _Truncated(Exception):
    """Internal: the input ended inside a value."""


def _read_count(data: bytes, pos: int) -> tuple[int, int]:
    n = data[pos]
    if n == 255:
        if pos + 9 > len(data):
            raise _Truncated
        return _Q.unpack_from(data, pos + 1)[0], pos + 9
    return n, pos + 1


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    tag = data[pos]
    pos += 1
    if tag == 0x73:  # s
        n = data[pos]
        if n < 255:
            pos += 1
        else:
            n, pos = _read_count(data, pos)
        end = pos + n
        if end > len(data):
            raise _Truncated
        return data[pos:end].decode(), end
    if tag == 0x69:  # i
        if pos + 8 > len(data):
            raise _Truncated
        return _q.unpack_from(data, pos)[0], pos + 8
    if tag == 0x6E:  # n
        return None, pos
    if tag == 0x66:  # f
        if pos + 8 > len(data):
            raise _Truncated
        return _d.unpack_from(data, pos)[0], pos + 8
    if tag == 0x62:  # b
        return bool(data[pos]), pos + 1
    if tag == 0x6C or tag == 0x74:  # l, t
        n = data[pos]
        if n < 255:
            pos += 1
        else:
            n, pos = _read_count(data, pos)
        if n > len(data) - pos:  # every item takes at least one byte
            raise _Truncated
        if depth >= MAX_DEPTH:
            raise MessageDecodeError(f"Object message nests deeper than {MAX_DEPTH} levels.")
        items: list[Any] = []
        append = items.append
        depth += 1
        for _ in range(n):
            # The usual items inline (a call each saved): short str, int,
            # None, and empty containers.
            t = data[pos]
            if t == 0x73:  # s
                k = data[pos + 1]
                if k < 255:
                    end = pos + 2 + k
                    if end > len(data):
                        raise _Truncated
                    append(data[pos + 2 : end].decode())
                    pos = end
                    continue
            elif t == 0x69:  # i
                append(_q.unpack_from(data, pos + 1)[0])
                pos += 9
                continue
            elif t == 0x6E:  # n
                append(None)
                pos += 1
                continue
            elif data[pos + 1] == 0 and depth < MAX_DEPTH:
                if t == 0x64:  # d
                    append({})
                    pos += 2
                    continue
                if t == 0x74:  # t
                    append(())
                    pos += 2
                    continue
                if t == 0x6C:  # l
                    append([])
                    pos += 2
                    continue
            item, pos = _decode(data, pos, depth)
            append(item)
        return (items if tag == 0x6C else tuple(items)), pos
    if tag == 0x64:  # d
        n, pos = _read_count(data, pos)
        if 2 * n > len(data) - pos:
            raise _Truncated
        if depth >= MAX_DEPTH:
            raise MessageDecodeError(f"Object message nests deeper than {MAX_DEPTH} levels.")
        result = {}
        for _ in range(n):
            key, pos = _decode(data, pos, depth + 1)
            value, pos = _decode(data, pos, depth + 1)
            try:
                result[key] = value
            except TypeError:
                raise MessageDecodeError(
                    f"Object message has an unhashable dict key of type {type(key).__name__}."
                ) from None
        return result, pos
    raise MessageDecodeError(
        f"Unsupported type tag {bytes((tag,))!r} at byte {pos - 1} of an object message."
    )


def decode_object(data: bytes) -> Any:
    """Decode an OBJECT payload. An empty payload is ``None``; trailing bytes are ignored.

    Raises:
        MessageDecodeError: the payload is not a valid encoding (unknown tag,
            truncated, invalid UTF-8, impossible count, too deeply nested, or an
            unhashable dict key).
    """
    if not data:
        return None
    if type(data) is not bytes:
        data = bytes(data)
    try:
        return _decode(data, 0, 0)[0]
    except (_Truncated, IndexError, struct.error):
        raise MessageDecodeError(
            f"Truncated object message ({len(data)} bytes): a value or count runs past the end."
        ) from None
    except UnicodeDecodeError as exc:
        raise MessageDecodeError(f"Object message has a string that is not UTF-8: {exc}") from None
    except RecursionError:  # only when called with little stack left
        raise MessageDecodeError("Object message nests too deeply to decode here.") from None
