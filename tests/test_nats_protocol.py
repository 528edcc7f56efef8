"""The sans-IO NATS layer: the client protocol parser and the bus framing.

Pure code, no server: property tests (hypothesis) that any split of the
server's bytes gives the same events, that garbage raises a clear error
instead of buffering without bound, and that packages packed for NATS come
back as they went in (batches, fragments, lost pieces).
"""

from __future__ import annotations

import ast
import pathlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoton_nats._busframe import (
    CONTROL,
    FRAGMENT_OVERHEAD,
    HEADER_SIZE,
    BusDecoder,
    pack_run,
)
from yoton_nats._protocol import (
    Err,
    Info,
    Msg,
    NatsProtocolError,
    Ok,
    Ping,
    Pong,
    ServerReader,
    check_subject,
    connect_command,
    pub_command,
    sub_command,
    unsub_command,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

subjects = st.from_regex(r"[A-Za-z0-9_\-]{1,8}(\.[A-Za-z0-9_\-]{1,8}){0,3}", fullmatch=True)


def encode_event(ev) -> bytes:
    if isinstance(ev, Msg):
        reply = f" {ev.reply}" if ev.reply else ""
        if ev.headers is None:
            line = f"MSG {ev.subject} {ev.sid}{reply} {len(ev.payload)}\r\n"
            return line.encode() + ev.payload + b"\r\n"
        total = len(ev.headers) + len(ev.payload)
        line = f"HMSG {ev.subject} {ev.sid}{reply} {len(ev.headers)} {total}\r\n"
        return line.encode() + ev.headers + ev.payload + b"\r\n"
    if isinstance(ev, Ping):
        return b"PING\r\n"
    if isinstance(ev, Pong):
        return b"PONG\r\n"
    if isinstance(ev, Ok):
        return b"+OK\r\n"
    if isinstance(ev, Err):
        return f"-ERR '{ev.message}'\r\n".encode()
    raise AssertionError(ev)


msgs = st.builds(
    Msg,
    subject=subjects,
    sid=st.integers(min_value=1, max_value=2**40),
    reply=st.one_of(st.just(""), subjects),
    payload=st.binary(max_size=200),
    headers=st.one_of(st.none(), st.just(b"NATS/1.0\r\nA: b\r\n\r\n")),
)
events = st.one_of(
    msgs,
    st.just(Ping()),
    st.just(Pong()),
    st.just(Ok()),
    st.builds(Err, st.from_regex(r"[A-Za-z ]{1,30}", fullmatch=True)),
)


@FAST
@given(st.lists(events, max_size=20), st.data())
def test_any_split_of_the_server_bytes_gives_the_same_events(evs, data):
    wire = b"".join(encode_event(e) for e in evs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = ServerReader()
    got = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        got += reader.feed(wire[prev:cut])
        prev = cut
    assert got == evs
    assert reader.buffered == 0


def test_info_is_parsed_with_its_fields():
    line = (
        b'INFO {"server_id":"S1","max_payload":2048,"connect_urls":["10.0.0.1:4222"],'
        b'"tls_required":true,"headers":true,"ldm":true,"auth_required":true}\r\n'
    )
    (info,) = ServerReader().feed(line)
    assert isinstance(info, Info)
    assert info.max_payload == 2048
    assert info.connect_urls == ["10.0.0.1:4222"]
    assert info.tls_required and info.headers and info.lame_duck and info.auth_required
    assert info.server_id == "S1"


def test_status_of_a_no_responders_message():
    wire = b"HMSG r.1 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    (msg,) = ServerReader().feed(wire)
    assert isinstance(msg, Msg)
    assert msg.status == 503 and msg.payload == b"" and msg.sid == 3


def test_err_text_loses_its_quotes_and_says_what_it_is():
    (err,) = ServerReader().feed(b"-ERR 'Authorization Violation'\r\n")
    assert isinstance(err, Err)
    assert err.message == "Authorization Violation"
    assert err.is_auth_failure and err.closes_connection
    (err,) = ServerReader().feed(b"-ERR 'Permissions Violation for Publish to x'\r\n")
    assert isinstance(err, Err)
    assert not err.closes_connection


@pytest.mark.parametrize(
    "wire, words",
    [
        (b"HELLO\r\n", "unknown operation"),
        (b"INFO {not json}\r\n", "not JSON"),
        (b"INFO [1]\r\n", "not a JSON object"),
        (b"MSG a\r\n", "malformed"),
        (b"MSG a b 3\r\n", "malformed"),
        (b"MSG a 1 3\r\nabcXY", "not followed by CRLF"),
        (b"HMSG a 1 9 3\r\n", "header size"),
        (b"MSG a 1 99999999999\r\n", "above the limit"),
    ],
)
def test_garbage_from_the_server_raises_a_clear_error(wire, words):
    with pytest.raises(NatsProtocolError, match=words):
        ServerReader().feed(wire)


def test_an_endless_line_is_refused_not_buffered():
    reader = ServerReader()
    with pytest.raises(NatsProtocolError, match="longer than"):
        for _ in range(40):
            reader.feed(b"x" * 65536)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_either_parse_or_raise_the_protocol_error(blob):
    try:
        ServerReader(max_payload=1000).feed(blob)
    except NatsProtocolError:
        pass


def test_commands():
    assert sub_command("a.*", 7) == b"SUB a.* 7\r\n"
    assert sub_command("a.>", 7, "q") == b"SUB a.> q 7\r\n"
    assert unsub_command(7) == b"UNSUB 7\r\n"
    assert unsub_command(7, 2) == b"UNSUB 7 2\r\n"
    assert pub_command("a.b", b"hi", "r") == b"PUB a.b r 2\r\nhi\r\n"
    assert connect_command({"echo": False}) == b'CONNECT {"echo":false}\r\n'


@pytest.mark.parametrize(
    "subject, words",
    [("", "non-empty"), ("a b", "whitespace"), ("a..b", "empty token"), ("a.*", "wildcards")],
)
def test_bad_subjects_are_refused_with_the_reason(subject, words):
    with pytest.raises(ValueError, match=words):
        check_subject(subject)
    with pytest.raises(ValueError, match="must be the last"):
        check_subject("a.>.b", wildcards=True)


# -- bus framing -----------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=2**64 - 1)
packages = st.tuples(
    st.tuples(st.just(CONTROL), u64, u64, u64, u64, u64),
    st.binary(min_size=1, max_size=3000),
)


def run_to_payloads(items, max_payload, origin=5):
    out: list = []
    pack_run(out, b"s.x", [(h + (len(d),), d) for h, d in items], max_payload, origin, 0)
    # Split the PUB commands back into their payloads, as the server would deliver them.
    wire = b"".join(bytes(p) for p in out)
    payloads = []
    pos = 0
    while pos < len(wire):
        nl = wire.index(b"\r\n", pos)
        size = int(wire[pos:nl].split()[-1])
        assert size <= max_payload
        payloads.append(wire[nl + 2 : nl + 2 + size])
        pos = nl + 4 + size
    return payloads


@FAST
@given(st.lists(packages, max_size=12), st.integers(1024, 5000))
def test_packed_packages_come_back_in_order(items, max_payload):
    payloads = run_to_payloads(items, max_payload)
    dec = BusDecoder(max_message_size=1 << 20)
    flat: list = []
    for p in payloads:
        dec.feed(p, flat)
    got = list(zip(flat[::2], flat[1::2], strict=True))
    assert got == [(h + (len(d),), d) for h, d in items]
    assert dec.dropped == dec.garbage == 0 and dec.assembling == 0


def test_a_burst_of_small_packages_is_one_message():
    items = [((CONTROL, 9, 1, i, 0, 0), b"x" * 100) for i in range(1, 101)]
    assert len(run_to_payloads(items, 1 << 20)) == 1


def test_a_lost_piece_drops_that_package_only():
    big = ((CONTROL, 9, 1, 1, 0, 0), b"a" * 5000)
    small = ((CONTROL, 9, 1, 2, 0, 0), b"b")
    payloads = run_to_payloads([big, small], 1024)
    assert len(payloads) > 3
    del payloads[2]  # a piece in the middle
    dec = BusDecoder(max_message_size=1 << 20)
    flat: list = []
    for p in payloads:
        dec.feed(p, flat)
    assert flat == [small[0] + (1,), b"b"]
    assert dec.dropped == 1 and dec.assembling == 0


def test_assemblies_are_bounded():
    dec = BusDecoder(max_message_size=1 << 20, max_assemblies=2)
    flat: list = []
    for origin in range(5):  # five publishers each start a large package
        first = run_to_payloads([((CONTROL, 9, origin, 1, 0, 0), b"z" * 4000)], 1024, origin)[0]
        dec.feed(first, flat)
    assert dec.dropped == 3 and len(dec._assemblies) == 2
    assert dec.assembling <= 2 * 1024


def test_oversized_and_garbage_payloads_are_counted_not_delivered():
    dec = BusDecoder(max_message_size=100)
    flat: list = []
    big = run_to_payloads([((CONTROL, 9, 1, 1, 0, 0), b"q" * 200)], 1 << 20)[0]
    dec.feed(big, flat)
    dec.feed(b"hello world, not yoton", flat)
    bad_control = struct.pack("<7Q", 1, 9, 1, 1, 0, 0, 1) + b"x"
    dec.feed(bad_control, flat)
    assert flat == [] and dec.garbage == 3
    frag = run_to_payloads([((CONTROL, 9, 1, 1, 0, 0), b"q" * 2000)], 1024)
    for p in frag:
        dec.feed(p, flat)
    assert flat == [] and dec.dropped == 1
    assert FRAGMENT_OVERHEAD + HEADER_SIZE < 1024


def test_the_sans_io_modules_import_no_io():
    root = pathlib.Path(__file__).parent.parent / "yoton_nats"
    for name in ("_protocol.py", "_busframe.py"):
        tree = ast.parse((root / name).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"trio", "socket", "threading", "ssl", "asyncio", "time"}, name


@FAST
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_random_payloads_never_raise_and_never_hold_more_than_they_were_given(a, b):
    dec = BusDecoder(max_message_size=1000, max_assemblies=4)
    flat: list = []
    for blob in (a, b, b"YOTONFRG" + a, b"YOTON   " + b):
        dec.feed(blob, flat)
    assert len(flat) % 2 == 0
    assert dec.assembling <= 4 * (1000 + HEADER_SIZE)
    for header, data in zip(flat[::2], flat[1::2], strict=True):
        assert header[0] == CONTROL and header[6] == len(data) > 0
