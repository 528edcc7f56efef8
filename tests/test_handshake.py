"""The handshake state machine, both roles (docs/protocol.md#handshake)."""

from __future__ import annotations

import pytest

from yoton_core._handshake import Handshake, format_line
from yoton_core._wire import HEARTBEAT_BYTES

MY_ID = 0x1204AE60731A19A9
PEER_ID = 0x00000000DEADBEEF
MY_LINE = b"YOTON!1204ae60731a19a9.7977\r\n"
PEER_LINE = b"YOTON!00000000deadbeef.42\r\n"


def bind() -> Handshake:
    return Handshake("bind", MY_ID, 7977)


def connect() -> Handshake:
    return Handshake("connect", MY_ID, 7977)


def test_format_line() -> None:
    assert format_line(MY_ID, 7977) == MY_LINE
    assert format_line(1, 0) == b"YOTON!0000000000000001.0\r\n"
    assert bind().line == MY_LINE


def test_initial_state_and_initiate() -> None:
    c = connect()
    assert c.state == Handshake.AWAITING == "AWAITING"
    assert (c.peer_id, c.peer_pid, c.error, c.leftover) == (None, None, None, b"")
    assert c.initiate() == MY_LINE
    assert bind().initiate() == b""


# ------------------------------------------------------------------ bind side


def test_bind_success() -> None:
    b = bind()
    assert b.receive_data(PEER_LINE) == MY_LINE
    assert b.state == Handshake.DONE == "DONE"
    assert (b.peer_id, b.peer_pid) == (PEER_ID, 42)
    assert b.error is None
    assert b.leftover == b""


def test_bind_one_byte_at_a_time() -> None:
    b = bind()
    replies = [b.receive_data(PEER_LINE[i : i + 1]) for i in range(len(PEER_LINE))]
    assert replies[:-1] == [b""] * (len(PEER_LINE) - 1)
    assert replies[-1] == MY_LINE
    assert b.state == Handshake.DONE
    assert b.peer_id == PEER_ID


def test_bind_line_plus_stream_in_one_chunk() -> None:
    b = bind()
    assert b.receive_data(PEER_LINE + HEARTBEAT_BYTES + b"YO") == MY_LINE
    assert b.state == Handshake.DONE
    assert b.leftover == HEARTBEAT_BYTES + b"YO"
    # data after DONE is kept for the frame decoder
    assert b.receive_data(b"TON") == b""
    assert b.leftover == HEARTBEAT_BYTES + b"YOTON"


@pytest.mark.parametrize(
    ("line", "peer_id", "peer_pid"),
    [
        (b"YOTON!ABCDEF.7\r\n", 0xABCDEF, 7),  # upper case, fewer digits
        (b"YOTON!0.0\r\n", 0, 0),
        (b"YOTON!FFFFFFFFFFFFFFFF.123  \r\n", 2**64 - 1, 123),  # trailing spaces
        (b"YOTON!abc.5\t\r\n", 0xABC, 5),
        (b"YOTON!DeadBeef.0042\r\n", 0xDEADBEEF, 42),
    ],
)
def test_bind_accepts_lenient_valid_lines(line: bytes, peer_id: int, peer_pid: int) -> None:
    b = bind()
    assert b.receive_data(line) == MY_LINE
    assert b.state == Handshake.DONE
    assert (b.peer_id, b.peer_pid) == (peer_id, peer_pid)


def test_bind_self_connect() -> None:
    b = bind()
    assert b.receive_data(MY_LINE) == MY_LINE  # 2.x replies with its line first
    assert b.state == Handshake.FAILED == "FAILED"
    assert b.error == "Handshake failed (context cannot connect to self)."
    assert b.peer_id == MY_ID


@pytest.mark.parametrize(
    "line",
    [
        b"YOTON!xyz.1\r\n",
        b"YOTON!.1\r\n",
        b"YOTON!abc\r\n",
        b"YOTON!abc.\r\n",
        b"YOTON!abc.-1\r\n",
        b"YOTON!abc.1x\r\n",
        b"YOTON!00000000000000001.1\r\n",  # 17 hex digits
        b"YOTON!abc.1 2\r\n",
        b"YOTON!abc.1\r\r\n",
        b"YOTON!\r\n",
    ],
)
def test_bind_unparsable_yoton_line(line: bytes) -> None:
    b = bind()
    reply = b.receive_data(line)
    assert reply == b"ERROR: could not parse id.\r\n"
    assert b.state == Handshake.FAILED
    assert b.error is not None
    assert b.error.startswith("Handshake failed: could not parse the peer's id in b'YOTON!")
    assert b.peer_id is None


def test_bind_unparsable_detected_before_crlf() -> None:
    b = bind()
    assert b.receive_data(b"YOTON!12") == b""
    assert b.receive_data(b"g") == b"ERROR: could not parse id.\r\n"
    assert b.state == Handshake.FAILED


def test_bind_not_yoton() -> None:
    b = bind()
    reply = b.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply == b"ERROR: this is Yoton.\r\n"
    assert b.state == Handshake.FAILED
    assert b.error is not None
    assert "does not speak yoton" in b.error
    assert "GET / HTTP" in b.error


def test_bind_not_yoton_decided_on_first_byte() -> None:
    b = bind()
    assert b.receive_data(b"G") == b"ERROR: this is Yoton.\r\n"
    assert b.state == Handshake.FAILED
    b2 = bind()
    assert b2.receive_data(b"YOT") == b""
    assert b2.state == Handshake.AWAITING
    assert b2.receive_data(b"A") == b"ERROR: this is Yoton.\r\n"
    assert b2.error is not None
    assert "b'YOTA'" in b2.error


def test_bind_line_too_long() -> None:
    b = Handshake("bind", MY_ID, 1, max_line=64)
    assert b.receive_data(b"YOTON!abc." + b"1" * 40) == b""
    reply = b.receive_data(b"1" * 20)
    assert reply == b"ERROR: could not parse id.\r\n"
    assert b.state == Handshake.FAILED
    assert b.error is not None
    assert "handshake line too long" in b.error


def test_line_with_crlf_beyond_max_line() -> None:
    b = Handshake("bind", MY_ID, 1, max_line=48)
    line = b"YOTON!abc." + b"1" * 37 + b"\r\n"  # 49 bytes
    assert b.receive_data(line) == b"ERROR: could not parse id.\r\n"
    assert b.error is not None
    assert "handshake line too long" in b.error
    ok = Handshake("bind", MY_ID, 1, max_line=48)
    assert ok.receive_data(line[:10] + line[11:]) == ok.line  # 48 bytes: fine
    assert ok.state == Handshake.DONE


def test_no_reply_after_failure() -> None:
    b = bind()
    b.receive_data(b"nope")
    assert b.receive_data(PEER_LINE) == b""
    assert b.state == Handshake.FAILED
    assert b.leftover == b""


def test_empty_data_is_harmless() -> None:
    b = bind()
    assert b.receive_data(b"") == b""
    assert b.state == Handshake.AWAITING


# ------------------------------------------------------------------ connect side


def test_connect_success_with_leftover() -> None:
    c = connect()
    c.initiate()
    assert c.receive_data(PEER_LINE + HEARTBEAT_BYTES) == b""
    assert c.state == Handshake.DONE
    assert (c.peer_id, c.peer_pid) == (PEER_ID, 42)
    assert c.leftover == HEARTBEAT_BYTES


def test_connect_one_byte_at_a_time() -> None:
    c = connect()
    for i in range(len(PEER_LINE)):
        assert c.receive_data(PEER_LINE[i : i + 1]) == b""
    assert c.state == Handshake.DONE


def test_connect_self() -> None:
    c = connect()
    c.receive_data(MY_LINE)
    assert c.state == Handshake.FAILED
    assert c.error == "Handshake failed (context cannot connect to self)."


@pytest.mark.parametrize("reply", [b"ERROR: could not parse id.\r\n", b"ERROR: this is Yoton.\r\n"])
def test_connect_error_reply(reply: bytes) -> None:
    c = connect()
    assert c.receive_data(reply[:5]) == b""
    assert c.state == Handshake.AWAITING  # waits for the whole line to report it
    assert c.receive_data(reply[5:]) == b""
    assert c.state == Handshake.FAILED
    assert c.error is not None
    assert reply[:-2].decode() in c.error


def test_connect_garbage_reply() -> None:
    c = connect()
    c.receive_data(b"SSH-2.0-OpenSSH_9.0\r\n")
    assert c.state == Handshake.FAILED
    assert c.error is not None
    assert "SSH-2.0-OpenSSH_9.0" in c.error


def test_connect_garbage_without_crlf_too_long() -> None:
    c = Handshake("connect", MY_ID, 1, max_line=64)
    c.receive_data(b"x" * 63)
    assert c.state == Handshake.AWAITING
    c.receive_data(b"x")
    assert c.state == Handshake.FAILED


def test_connect_unparsable_yoton_line() -> None:
    c = connect()
    assert c.receive_data(b"YOTON!zz.1\r\n") == b""  # the connect side never replies
    assert c.state == Handshake.FAILED
    assert c.error is not None
    assert "could not parse the peer's id" in c.error


# ------------------------------------------------------------------ timeouts and EOF


def test_timed_out() -> None:
    c = connect()
    c.timed_out()
    assert c.state == Handshake.FAILED
    assert c.error == "Handshake timed out."
    b = bind()
    b.receive_data(b"YOTON!ab")
    b.timed_out()
    assert b.error == "Handshake timed out (received b'YOTON!ab')."


def test_receive_eof() -> None:
    c = connect()
    c.receive_data(b"ERROR: this is")
    c.receive_eof()
    assert c.state == Handshake.FAILED
    assert c.error is not None
    assert "closed the connection" in c.error and "ERROR: this is" in c.error


def test_timeout_and_eof_after_done_do_nothing() -> None:
    b = bind()
    b.receive_data(PEER_LINE)
    b.timed_out()
    b.receive_eof()
    assert b.state == Handshake.DONE and b.error is None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("listen", 1, 1), {}),
        (("bind", -1, 1), {}),
        (("bind", 2**64, 1), {}),
        (("bind", 1, -1), {}),
        (("bind", 1, 1), {"max_line": 10}),
    ],
)
def test_constructor_validation(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Handshake(*args, **kwargs)


def test_repr() -> None:
    b = bind()
    b.receive_data(b"?")
    assert repr(b).startswith("<Handshake bind FAILED")
