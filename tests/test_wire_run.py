"""The decoder's bulk path for runs of one payload size (``_wire._decode_run``).

A stream of small messages is decoded in C when a chunk starts with a run of
packages of one size. It must give exactly what the per-package loop gives, in
every case: the same packages in the same order, the same connection-level
items at the same positions, the same errors with the same packages before
them. Each test decodes twice, with the bulk path and without it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton_core import _wire
from yoton_core._errors import ProtocolError
from yoton_core._wire import (
    CONTROL,
    HEADER,
    HEARTBEAT_BYTES,
    FrameDecoder,
    encode_connection_message,
)

SLOT = 12345678901234


def frame(seq: int, size: int, slot: int = SLOT, control: int = CONTROL) -> bytes:
    payload = bytes((seq + i) & 0xFF for i in range(size))
    return HEADER.pack(control, slot, 0xABC, seq, 0, 0, size) + payload


def decode(chunks: list[bytes], bulk: bool, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Everything a decoder makes of ``chunks``: (flat, controls) per feed, or the error."""
    monkeypatch.setattr(_wire, "RUN_MIN", 8 if bulk else 10**9)
    dec = FrameDecoder(max_message_size=1 << 20)
    out: list[Any] = []
    for chunk in chunks:
        try:
            flat = dec.feed_raw(chunk)
        except ProtocolError as exc:
            out.append(("error", str(exc), exc.raw))  # type: ignore[attr-defined]
            break
        out.append((flat, list(dec.controls)))
    return out


def same_both_ways(chunks: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    bulk = decode(chunks, True, monkeypatch)
    assert bulk == decode(chunks, False, monkeypatch)
    return bulk


def test_a_run_is_decoded_in_bulk_and_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = _wire._decode_run

    def spy(data: bytes, flat: list[Any], limit: int) -> int:
        calls.append(real(data, flat, limit))
        return calls[-1]

    monkeypatch.setattr(_wire, "_decode_run", spy)
    data = b"".join(frame(i, 100) for i in range(1, 41)) + frame(41, 100)[:70]
    ((flat, controls),) = same_both_ways([data], monkeypatch)
    assert calls and calls[0] == 40 * 156  # the bulk path took the whole run
    assert len(flat) == 80 and controls == []
    assert flat[0] == (CONTROL, SLOT, 0xABC, 1, 0, 0, 100) and flat[1] == frame(1, 100)[56:]
    assert [h[3] for h in flat[0::2]] == list(range(1, 41))


def test_a_bad_control_word_inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(frame(i, 50) for i in range(10)) + frame(10, 50, control=CONTROL ^ 1)
    data += b"".join(frame(i, 50) for i in range(11, 20))
    ((kind, message, before),) = same_both_ways([data], monkeypatch)
    assert kind == "error" and "bad control bytes" in message
    assert [h[3] for h in before[0::2]] == list(range(10))


def test_a_connection_message_inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same stride as the packages around it: only its slot tells it apart.
    inner = encode_connection_message(b"m" * 30)
    assert len(inner) == len(frame(0, 30))
    data = b"".join(frame(i, 30) for i in range(5)) + inner
    data += b"".join(frame(i, 30) for i in range(5, 20)) + HEARTBEAT_BYTES
    ((flat, controls),) = same_both_ways([data], monkeypatch)
    assert len(flat) == 40 and [pos for pos, _item in controls] == [10, 40]


def test_another_size_inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(frame(i, 64) for i in range(9)) + frame(9, 65)
    data += b"".join(frame(i, 64) for i in range(10, 30))
    ((flat, _controls),) = same_both_ways([data], monkeypatch)
    assert [len(p) for p in flat[1::2]] == [64] * 9 + [65] + [64] * 20


def test_another_size_that_keeps_the_stride(monkeypatch: pytest.MonkeyPatch) -> None:
    # 44 bytes of payload and a heartbeat take the place of one 100-byte
    # package: every header after them is where the run expects one.
    odd = frame(9, 44) + HEARTBEAT_BYTES
    assert len(odd) == len(frame(0, 100))
    data = b"".join(frame(i, 100) for i in range(9)) + odd
    data += b"".join(frame(i, 100) for i in range(10, 30))
    ((flat, controls),) = same_both_ways([data], monkeypatch)
    assert [len(p) for p in flat[1::2]] == [100] * 9 + [44] + [100] * 20
    assert [pos for pos, _item in controls] == [20]


def test_an_oversized_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wire, "RUN_MIN", 8)
    dec = FrameDecoder(max_message_size=99)
    with pytest.raises(ProtocolError, match="exceeds the maximum message size"):
        dec.feed_raw(b"".join(frame(i, 100) for i in range(20)))


sizes = st.sampled_from([1, 7, 100, 100, 100, 4096, 4097])
packages = st.lists(
    st.tuples(sizes, st.sampled_from(["package", "package", "package", "heartbeat", "message"])),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packages, st.lists(st.integers(min_value=1, max_value=3000), max_size=12))
def test_any_stream_any_chunking_decodes_the_same(
    items: list[tuple[int, str]], cuts: list[int]
) -> None:
    parts = []
    for seq, (size, kind) in enumerate(items):
        if kind == "heartbeat":
            parts.append(HEARTBEAT_BYTES)
        elif kind == "message":
            parts.append(encode_connection_message(b"c" * size))
        else:
            parts.append(frame(seq, size))
    data = b"".join(parts)
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(data[pos : pos + cut])
        pos += cut
    chunks.append(data[pos:])
    with pytest.MonkeyPatch.context() as mp:
        same_both_ways(chunks, mp)
