"""The publisher's small frames, with or without the compiled accelerator.

``Context._send`` packs a small package's frame once for all its stream links
(_stream_queue.py, "The fan-out path"). The header's first three fields
(control word, slot, source id) are the same for every package a channel
publishes, so the context keeps them packed (:func:`prefix`) and only the
package's own fields are packed per message (:func:`frame`).

:func:`frame` is the compiled ``_speedups.frame`` when that optional extension
was built (README, "Fast build"), else the pure-Python function below; both
return the same bytes (tests/test_frames.py). ``YOTON_PURE_PYTHON=1`` in the
environment makes the pure-Python path be used even when the extension is
there (``_accel.py``; benchmarks compare the two; tests run both).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ._accel import ACCELERATED, speedups
from ._wire import CONTROL

__all__ = ["ACCELERATED", "TAIL", "frame", "prefix"]

_PREFIX = struct.Struct("<3Q")
#: The package's own fields: seq, dest_id, dest_seq, payload size.
TAIL = struct.Struct("<4Q")
_pack_tail = TAIL.pack


def prefix(slot: int, source_id: int) -> bytes:
    """The first 24 bytes of every frame ``source_id`` sends on ``slot``."""
    return _PREFIX.pack(CONTROL, slot, source_id)


def _frame(prefix: bytes, seq: int, dest_seq: int, data: bytes) -> bytes:
    """``prefix`` + seq, dest_id 0, dest_seq, len(data) + ``data`` (pure Python)."""
    return prefix + _pack_tail(seq, 0, dest_seq, len(data)) + data


frame: Callable[[bytes, int, int, bytes], bytes] = (
    speedups.frame if speedups is not None else _frame
)
