"""The two string hashes of the yoton wire protocol (docs/protocol.md#hashes).

Both hashes must give exactly the values yoton 2.x computes, because they are
part of the wire contract: a slot hash travels in every package header, and a
port name (``localhost:chat``) must map to the same TCP port on both peers.

2.x computes them with unbounded Python ints over Unicode code points and only
reduces at the end. ``v`` grows by about x1.125 per character and passes 2**64
at around 133 characters, so wrapping 64-bit arithmetic would give different
results for long slot names. We therefore keep the arbitrary-precision loop.
"""

from __future__ import annotations

import functools

from ._errors import InvalidArgumentError

__all__ = ["slot_hash", "port_hash", "normalize_slot"]

_FACTOR = 0xD2D84A61
_SLOT_MOD = 2**64 - 8
_PORT_BASE = 49152
_PORT_MOD = 2**14


def _raw_hash(s: str) -> int:
    """Return the unreduced hash value ``v`` shared by both hash functions."""
    f = _FACTOR
    v = 0
    for c in s:
        v = v + (v >> 3) + ord(c) * f
    return v + (v >> 3) + len(s) * f


@functools.lru_cache(maxsize=4096)
def slot_hash(s: str) -> int:
    """Hash a (normalised) slot string to the 64-bit slot id used on the wire.

    The result is always >= 8 because slots 0..7 are reserved for
    connection- and context-level packages.

    Channels call this for every slot they create, hence the cache; it is keyed on
    the exact string, so callers should pass the :func:`normalize_slot` form.

    Args:
        s: The slot string, e.g. ``"foo.txt.pub-sub"``.

    Returns:
        An int in ``[8, 2**64)``.
    """
    if not isinstance(s, str):
        raise InvalidArgumentError(f"slot_hash() needs a str, got {type(s).__name__}")
    return 8 + _raw_hash(s) % _SLOT_MOD


def port_hash(s: str) -> int:
    """Hash a port name (the ``test`` in ``localhost:test``) to a TCP port.

    The result lies in the IANA dynamic range ``[49152, 65536)``. The name is
    hashed as given: case-sensitive and not stripped, as in 2.x.

    Args:
        s: The port name.

    Returns:
        An int in ``[49152, 65536)``.
    """
    if not isinstance(s, str):
        raise InvalidArgumentError(f"port_hash() needs a str, got {type(s).__name__}")
    return _PORT_BASE + _raw_hash(s) % _PORT_MOD


def normalize_slot(s: str) -> str:
    """Return the form of a slot string that is hashed.

    Only the outer ends are stripped (inner spaces are significant), and the
    string is lower-cased, which makes slots case-insensitive (``"Foo"`` and
    ``"foo"`` are the same slot), as in 2.x.
    """
    return s.strip().lower()
