"""A ``bytes`` object the socket fills in place: large payloads without a copy.

A payload must reach the user as ``bytes`` (what 2.x hands out, hashable,
immutable). Built from Python, a 16 MiB payload that arrives in many reads
costs a copy more than the read itself: the parts are joined at the end (or a
``bytearray`` is copied into ``bytes``), and that copy and the page faults of
a second 16 MiB buffer were a third of the receiving process's CPU (benchmarks,
pub/sub 16 MiB).

C code avoids it the standard way: ``PyBytes_FromStringAndSize(NULL, n)``
makes a bytes object whose contents are not yet set, the caller writes them
and only then lets anyone else see the object. :func:`unfilled_bytes` does the
same through :mod:`ctypes`, and gives a writable view of the contents for
``socket.recv_into``. The contract the receive path keeps: the object is not
handed to anyone before every byte was written (the decoder emits a payload
only once it is complete, and drops it unseen if the stream fails first), so
no uninitialised memory ever escapes, and nothing hashes it before then (its
cached hash stays unset).

Where this is not available (no ctypes, not CPython, a layout that fails the
self-check at import) :data:`AVAILABLE` is False and the decoder collects the
parts and joins them, as before.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["AVAILABLE", "unfilled_bytes"]

_make: Any = None
#: Offset of a bytes object's contents from its address (``ob_sval``).
_OFFSET = bytes.__basicsize__ - 1
_char_array: Any = None


def _setup() -> bool:
    global _make, _char_array
    if sys.implementation.name != "cpython":
        return False
    try:
        import ctypes

        make = ctypes.pythonapi.PyBytes_FromStringAndSize
    except (ImportError, AttributeError, OSError):
        return False
    make.restype = ctypes.py_object
    make.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _make = make
    _char_array = ctypes.c_char
    # Self-check: what is written through the view must be what the object holds.
    try:
        probe, view = unfilled_bytes(64)
        view[:] = bytes(range(64))
        del view
        return probe == bytes(range(64)) and hash(probe) == hash(bytes(range(64)))
    except Exception:  # pragma: no cover - a layout we do not know
        return False


def unfilled_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of ``size`` bytes whose contents are not set yet.

    Returns:
        The object and a writable byte view of its contents. Keep the object
        referenced while the view is in use (the view does not keep it alive),
        and do not let anyone else see it before every byte was written.

    Raises:
        MemoryError: the allocation failed.
    """
    if size < 2:  # 0 and 1 byte objects are shared singletons: never write those
        raise ValueError(f"size must be >= 2, got {size}")
    obj = _make(None, size)
    view = memoryview((_char_array * size).from_address(id(obj) + _OFFSET)).cast("B")
    return obj, view


#: True when :func:`unfilled_bytes` may be used in this interpreter.
AVAILABLE = _setup()
