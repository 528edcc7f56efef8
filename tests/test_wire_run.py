"""The decoder's bulk path for runs of one payload size (``_decoder._decode_run``).

A stream of small messages is decoded in C when a chunk starts with a run of
packages of one size; for the stream links (``feed_runs``) a run that differs
in nothing but seqs counting up by one comes as one ``Run`` and its payloads.
Both must give exactly what the per-package loop gives, in every case: the
same packages in the same order, the same connection-level items at the same
positions, the same errors with the same packages before them. Each test
decodes three ways: per package, in bulk, and in bulk with runs (expanded).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton_core import _decoder
from yoton_core._decoder import FrameDecoder, Run, expand_run
from yoton_core._errors import ProtocolError
from yoton_core._wire import (
    CONTROL,
    HEADER,
    HEARTBEAT_BYTES,
    encode_connection_message,
)

SLOT = 12345678901234


@pytest.fixture(autouse=True)
def _pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python path, also where the compiled accelerator is built
    (tests/test_frames.py checks that against this one)."""
    monkeypatch.setattr(_decoder, "_run_payloads", None)


def frame(seq: int, size: int, slot: int = SLOT, control: int = CONTROL) -> bytes:
    payload = bytes((seq + i) & 0xFF for i in range(size))
    return HEADER.pack(control, slot, 0xABC, seq, 0, 0, size) + payload


def plain(flat: list[Any], controls: list[Any], extra: int) -> tuple[list[Any], list[Any]]:
    """``feed_runs`` output in ``feed_raw``'s form: runs expanded, control positions moved."""
    out: list[Any] = []
    moved = []
    c = 0
    for i in range(0, len(flat), 2):
        while c < len(controls) and controls[c][0] <= i:
            moved.append((len(out), controls[c][1]))
            c += 1
        if isinstance(flat[i], Run):
            assert len(flat[i + 1]) == flat[i][7] >= 8
            out.extend(expand_run(flat[i], flat[i + 1]))
        else:
            out.extend(flat[i : i + 2])
    moved.extend((len(out), item) for _pos, item in controls[c:])
    assert len(out) >> 1 == (len(flat) >> 1) + extra  # what run_extra says
    return out, moved


def decode(chunks: list[bytes], mode: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Everything a decoder makes of ``chunks``: (flat, controls) per feed, or the error.

    ``mode``: "plain" (per package), "bulk" or "runs" (bulk, ``feed_runs``).
    """
    monkeypatch.setattr(_decoder, "RUN_MIN", 10**9 if mode == "plain" else 8)
    dec = FrameDecoder(max_message_size=1 << 20)
    feed = dec.feed_runs if mode == "runs" else dec.feed_raw
    out: list[Any] = []
    for chunk in chunks:
        try:
            flat = feed(chunk)
        except ProtocolError as exc:
            raw = plain(exc.raw, [], dec.run_extra)[0]  # type: ignore[attr-defined]
            out.append(("error", str(exc), raw))
            break
        out.append(plain(flat, dec.controls, dec.run_extra))
    return out


def same_both_ways(chunks: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    bulk = decode(chunks, "bulk", monkeypatch)
    assert bulk == decode(chunks, "plain", monkeypatch)
    assert bulk == decode(chunks, "runs", monkeypatch)
    return bulk


def in_order(out: list[Any]) -> tuple[list[Any], list[Any]]:
    """The packages and the connection-level items of all feeds, each in stream order."""
    packages: list[Any] = []
    controls: list[Any] = []
    for flat, feed_controls in out:
        packages += flat
        controls += [item for _pos, item in feed_controls]
    return packages, controls


def same_however_cut(chunks: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded the same all three ways, and the same as the whole stream in one feed."""
    whole = decode([b"".join(chunks)], "plain", monkeypatch)
    assert in_order(same_both_ways(chunks, monkeypatch)) == in_order(whole)


def test_a_run_is_decoded_in_bulk_and_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = _decoder._decode_run

    def spy(data: bytes, at: int, flat: list[Any], limit: int, runs: bool) -> tuple[int, int]:
        got = real(data, at, flat, limit, runs)
        calls.append(got[0])
        return got

    monkeypatch.setattr(_decoder, "_decode_run", spy)
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
    monkeypatch.setattr(_decoder, "RUN_MIN", 8)
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
        same_however_cut(chunks, mp)


def uniform_frame(seq: int, size: int = 100, slot: int = SLOT, source: int = 0xABC) -> bytes:
    return HEADER.pack(CONTROL, slot, source, seq, 7, 9, size) + bytes([seq & 0xFF]) * size


@pytest.mark.parametrize("count", [20, 64, 77])  # (unpacked 32 packages a struct, then the rest)
@pytest.mark.parametrize(
    "first", [1, 250, 0xFF00 - 3, 0x1_0000 - 10, 0x12_3456_789A, 2**64 - 100], ids=hex
)
def test_a_uniform_run_comes_whole(first: int, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # seqs whose low byte, second byte or a higher one rolls over inside the run
    monkeypatch.setattr(_decoder, "RUN_MIN", 8)
    data = b"".join(uniform_frame(first + i) for i in range(count))
    flat = FrameDecoder().feed_runs(data + uniform_frame(first + count)[:50])
    carry = (first & 0xFFFF) + count > 0x10000  # the general path's case
    if carry:
        assert not any(isinstance(x, Run) for x in flat[0::2])
    else:
        assert flat[0] == Run((CONTROL, SLOT, 0xABC, first, 7, 9, 100, count)) and len(flat) == 2
        assert flat[1] == [bytes([(first + i) & 0xFF]) * 100 for i in range(count)]
    same_both_ways([data], monkeypatch)


@pytest.mark.parametrize(
    "odd",
    [
        uniform_frame(13, slot=SLOT + 1),
        uniform_frame(13, source=0xABD),
        HEADER.pack(CONTROL, SLOT, 0xABC, 13, 8, 9, 100) + b"x" * 100,  # dest
        HEADER.pack(CONTROL, SLOT, 0xABC, 13, 7, 10, 100) + b"x" * 100,  # dest seq
        uniform_frame(14),  # a seq skipped
        uniform_frame(13 + 256),  # the low byte right, the second one not
        uniform_frame(13 + (1 << 16)),  # the third byte
        uniform_frame(13 + (1 << 40)),  # a higher one
    ],
    ids=["slot", "source", "dest", "dest-seq", "gap", "2nd-byte", "3rd-byte", "6th-byte"],
)
def test_a_run_that_differs_anywhere_but_the_seq_is_not_one(
    odd: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_decoder, "RUN_MIN", 8)
    data = b"".join(uniform_frame(i) for i in range(1, 13)) + odd
    data += b"".join(uniform_frame(i) for i in range(14, 25))
    flat = FrameDecoder().feed_runs(data)
    assert not any(isinstance(x, Run) for x in flat[0::2])
    assert len(flat) == 2 * 24
    # ...and without the odd one out, it is one
    good = b"".join(uniform_frame(i) for i in range(1, 25))
    assert FrameDecoder().feed_runs(good)[0] == Run((CONTROL, SLOT, 0xABC, 1, 7, 9, 100, 24))
    same_both_ways([data], monkeypatch)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=1, max_value=2**64 - 200),
    st.integers(min_value=1, max_value=150),
    st.lists(st.integers(min_value=0, max_value=149), max_size=3),
    st.lists(st.integers(min_value=1, max_value=9000), max_size=6),
)
def test_runs_with_odd_packages_and_any_chunking_decode_the_same(
    first: int, n: int, odd_at: list[int], cuts: list[int]
) -> None:
    parts = []
    for i in range(n):
        if i in odd_at:
            parts.append(uniform_frame(first + i, slot=SLOT + i))
        else:
            parts.append(uniform_frame(first + i))
    data = b"".join(parts)
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(data[pos : pos + cut])
        pos += cut
    chunks.append(data[pos:])
    with pytest.MonkeyPatch.context() as mp:
        same_however_cut(chunks, mp)


@pytest.mark.parametrize("cut", [1, 30, 55, 56, 57, 120, 155])
def test_a_run_after_a_package_cut_by_the_chunk_comes_whole_with_it(
    cut: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chunk ends inside the header (or the payload) of package 1: the
    # next chunk completes it by itself, and it begins the run of 2..41.
    monkeypatch.setattr(_decoder, "RUN_MIN", 8)
    data = b"".join(uniform_frame(i) for i in range(1, 42))
    dec = FrameDecoder()
    assert dec.feed_runs(data[:cut]) == []
    flat = dec.feed_runs(data[cut:])
    assert flat == [
        Run((CONTROL, SLOT, 0xABC, 1, 7, 9, 100, 41)),
        [uniform_frame(i)[56:] for i in range(1, 42)],
    ]
    assert dec.run_extra == 40
    assert dec.buffered == 0


def _other_dest(seq: int) -> bytes:
    return HEADER.pack(CONTROL, SLOT, 0xABC, seq, 8, 9, 100) + bytes([seq & 0xFF]) * 100


def _other_dest_seq(seq: int) -> bytes:
    return HEADER.pack(CONTROL, SLOT, 0xABC, seq, 7, 10, 100) + bytes([seq & 0xFF]) * 100


@pytest.mark.parametrize(
    "cut_package",
    [
        uniform_frame(1, slot=SLOT + 1),  # another slot
        uniform_frame(1, source=0xABD),  # another source
        uniform_frame(0),  # a gap in the seqs
        uniform_frame(2),  # the run's own first seq again
        uniform_frame(1, size=99),  # another size
        _other_dest(1),
        _other_dest_seq(1),
    ],
)
def test_a_cut_package_that_does_not_begin_the_run_stays_apart(
    cut_package: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_decoder, "RUN_MIN", 8)
    data = cut_package + b"".join(uniform_frame(i) for i in range(2, 42))
    dec = FrameDecoder()
    assert dec.feed_runs(data[:100]) == []
    flat = dec.feed_runs(data[100:])
    assert flat[0] == HEADER.unpack(cut_package[:56]) and flat[1] == cut_package[56:]
    assert flat[2] == Run((CONTROL, SLOT, 0xABC, 2, 7, 9, 100, 40)) and len(flat) == 4
    assert dec.run_extra == 39
