"""The error hierarchy (yoton_core/_errors.py) and the errors users meet first.

One module holds every class; each is a ``yoton.YotonError`` and the builtin a
program catches without knowing yoton. ``connect`` and ``bind`` name the address
as the user wrote it, say what to do, and keep the cause in a short chain
without the IO engine's frames. Every timeout-like argument is checked by one
validator and refused the same way.
"""

from __future__ import annotations

import ast
import builtins
import concurrent.futures
import errno
import math
import pathlib
import re
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import trio

import yoton
import yoton_core
from yoton_core import _errors
from yoton_core._decoder import FrameDecoder
from yoton_core._wire import CONTROL_BYTES, encode_package
from yoton_core.testing import wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent

# -- the hierarchy ---------------------------------------------------------------

ALSO_A: dict[str, tuple[type[BaseException], ...]] = {
    "InvalidArgumentError": (TypeError, ValueError),
    "ConnectionClosedError": (OSError,),
    "BrokenConnectionError": (OSError,),
    "ConnectError": (ConnectionRefusedError,),
    "NoServerError": (yoton.ConnectError, RuntimeError),
    "ProtocolError": (ValueError,),
    "HandshakeError": (yoton.ProtocolError,),
    "FrameError": (yoton.ProtocolError,),
    "MessageDecodeError": (yoton.ProtocolError,),
    "TimeoutError": (builtins.TimeoutError,),
    "CancelledError": (concurrent.futures.CancelledError,),
    "RemoteError": (),
    "TransportNotFoundError": (ValueError,),
    "PluginLoadError": (ImportError,),
}


def test_every_error_class_lives_in_one_module_and_is_exported() -> None:
    names = [n for n in _errors.__all__ if n != "YotonError"]
    assert sorted(names) == sorted(ALSO_A)
    for name in _errors.__all__:
        cls = getattr(yoton, name)
        assert cls is getattr(yoton_core, name) is getattr(_errors, name)
        assert cls.__module__ == "yoton_core._errors", name
        assert issubclass(cls, yoton.YotonError), name
        for base in ALSO_A.get(name, ()):
            assert issubclass(cls, base), (name, base)


def test_no_error_class_is_defined_outside_the_errors_module() -> None:
    """A new error class goes into _errors.py, not beside the code raising it."""
    for path in sorted((ROOT / "yoton_core").glob("*.py")):
        if path.name == "_errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                pytest.fail(f"{path.name} defines {node.name}: move it to _errors.py")


def test_old_import_places_still_work() -> None:
    from yoton_core._clientserver import NoServerError
    from yoton_core._eventloop import InvalidArgumentError
    from yoton_core._future import RemoteError

    assert NoServerError is yoton.NoServerError
    assert InvalidArgumentError is yoton.InvalidArgumentError
    assert RemoteError is yoton.RemoteError


def test_no_hand_written_tuple_of_link_errors() -> None:
    """The errors of a dead link are caught as one tuple, LINK_ERRORS (_engine.py)."""
    for package in ("yoton_core", "yoton_tcp", "yoton_unix", "yoton_inproc"):
        for path in sorted((ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Tuple):
                    text = ast.unparse(node.type)
                    assert not ("ClosedResourceError" in text and "OSError" in text), (
                        f"{path.name}:{node.lineno} catches {text}; use LINK_ERRORS"
                    )


# -- FrameError: declared fields --------------------------------------------------


def test_frame_error_carries_what_was_decoded_before_the_bad_bytes() -> None:
    good = encode_package(yoton.Package(b"hello", 7, 1, 1))
    decoder = FrameDecoder()
    with pytest.raises(yoton.FrameError) as info:
        decoder.feed_raw(good + b"GARBAGE!" + bytes(48))
    assert info.value.items == []
    assert [bytes(p) for p in info.value.raw[1::2]] == [b"hello"]
    with pytest.raises(yoton.FrameError) as info:
        FrameDecoder().feed(good + b"GARBAGE!" + bytes(48))
    assert [p.data for p in info.value.items] == [b"hello"]
    assert "bad control bytes" in info.value.reason
    # once failed, the decoder keeps failing, with the same reason and no packages
    with pytest.raises(yoton.FrameError) as again:
        decoder.feed_raw(good)
    assert again.value.raw == [] and again.value.reason == info.value.reason
    assert CONTROL_BYTES.hex(" ") in again.value.reason


def test_frame_error_fields_are_declared() -> None:
    error = yoton.FrameError("Lost track of the stream.")
    assert error.raw == [] and error.items == [] and error.reason == "Lost track of the stream."


# -- ConnectError: the user's address, a cause, a short traceback -------------------


def _no_engine_frames(exc: BaseException) -> None:
    files = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    assert not [f for f in files if "trio" in f or "_engine.py" in f or "outcome" in f], files
    cause = exc.__cause__
    if cause is not None:
        assert cause.__traceback__ is None  # printed as one line, not trio's internals
        assert exc.__suppress_context__


@pytest.mark.parametrize(
    ("address", "where"),
    [
        ("localhost:nobody-here", r"127\.0\.0\.1:\d+"),
        ("unix://nobody-here", r"/\S+/nobody-here\.sock"),
    ],
)
def test_connect_to_nobody_names_the_address_and_what_to_do(
    contexts: Any, rundir: Any, address: str, where: str
) -> None:
    ctx = contexts()
    with pytest.raises(yoton.ConnectError) as info:
        ctx.connect(address, timeout=0.2)
    text = str(info.value)
    assert text.startswith(f"Cannot connect to {address!r}: ")
    assert re.search(f"Nothing is listening at {where} ", text), text
    assert ".sock:0" not in text
    assert "One bind() serves one peer" in text
    assert isinstance(info.value, ConnectionRefusedError)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.errno == info.value.__cause__.errno != None  # noqa: E711
    _no_engine_frames(info.value)
    assert ctx.connections_all == []


def test_a_tcp_connect_that_reaches_its_own_socket_is_told_nothing_listens(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on a port of the ephemeral range, and the connect is given
    that very port as its source: TCP's simultaneous open connects the socket to
    itself. That is a refusal, not "context cannot connect to self" (seen under
    load in test_connect_to_nobody...). Made to happen on every attempt here
    by binding the source port, on real sockets."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    opened: list[trio.socket.SocketType] = []

    async def reaching_itself(host: str, port: int, **_: Any) -> trio.SocketStream:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(("127.0.0.1", port))
        await sock.connect(("127.0.0.1", port))
        opened.append(sock)
        return trio.SocketStream(sock)

    monkeypatch.setattr(trio, "open_tcp_stream", reaching_itself)
    ctx = contexts()
    with pytest.raises(yoton.ConnectError) as info:
        ctx.connect(f"tcp://127.0.0.1:{port}", timeout=0.3)
    assert opened, "the connect never reached its own socket"
    assert re.search(f"Nothing is listening at 127\\.0\\.0\\.1:{port} ", str(info.value))
    assert "self" not in str(info.value)
    assert info.value.errno == errno.ECONNREFUSED
    assert all(sock.fileno() == -1 for sock in opened)  # each closed at once
    assert ctx.connections_all == []


@pytest.mark.parametrize("scheme", ["tcp", "unix", "inproc"])
def test_a_second_peer_at_a_one_peer_bind_is_told_that_one_bind_serves_one_peer(
    contexts: Any, rundir: Any, scheme: str
) -> None:
    a, b, c = contexts(3)
    conn = a.bind(f"{scheme}://localhost:0")
    address = f"{scheme}://localhost:{conn.port1}"
    b.connect(address)
    wait_for(lambda: conn.is_connected, what="the first peer")
    with pytest.raises(yoton.ConnectError, match="One bind.. serves one peer") as info:
        c.connect(address, timeout=0.2)
    assert str(info.value).startswith(f"Cannot connect to {address!r}: ")


def test_a_refused_handshake_keeps_its_cause(contexts: Any) -> None:
    a = contexts(auth_key="right")
    conn = a.bind("localhost:0")
    b = contexts(auth_key="wrong")
    with pytest.raises(yoton.ConnectError) as info:
        b.connect(f"localhost:{conn.port1}")
    assert isinstance(info.value.__cause__, yoton.HandshakeError)
    assert str(info.value) == (
        f"Cannot connect to 'localhost:{conn.port1}': {info.value.__cause__.reason}"
    )
    assert "Authentication failed" in str(info.value)
    _no_engine_frames(info.value)


def test_binding_a_taken_address_names_it_and_what_to_do(contexts: Any, rundir: Any) -> None:
    a, b = contexts(2)
    port = a.bind("localhost:0").port1
    for address in (f"localhost:{port}", "unix://taken", "inproc://taken"):
        if not address.startswith("localhost"):
            a.bind(address)
        with pytest.raises(OSError, match="max_tries=N") as info:
            b.bind(address)
        assert str(info.value).startswith(f"Cannot bind to {address!r}: "), info.value
        assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError, match=f"127.0.0.1:{port}: Address already in use"):
        b.bind(f"localhost:{port}")


# -- one validator for timeouts -------------------------------------------------------


def _future() -> yoton.Future:
    return yoton.Future()


def _recv_async(timeout: Any) -> None:
    ctx = yoton.Context()
    sub = yoton.SubChannel(ctx, "validate")
    try:
        trio.run(sub.recv_async, timeout)
    finally:
        ctx.close()


TIMEOUT_CALLS: dict[str, Callable[[Any], Any]] = {
    "Context() handshake_timeout": lambda t: yoton.Context(handshake_timeout=t),
    "Context.connect() timeout": lambda t: yoton.Context().connect("localhost:1", timeout=t),
    "Connection.timeout": lambda t: setattr(yoton.Context().bind("localhost:0"), "timeout", t),
    "Future.result() timeout": lambda t: _future().result(t),
    "Future.exception() timeout": lambda t: _future().exception(t),
    "Future.set_auto_cancel_timeout()": lambda t: _future().set_auto_cancel_timeout(t),
    "call_later() timeout": lambda t: yoton.call_later(print, t),
    "do_request() timeout": lambda t: yoton.do_request("localhost:1", "x", timeout=t),
    "RequestServer() request_timeout": lambda t: yoton.RequestServer(
        "localhost:0", request_timeout=t
    ),
    "ReqChannel() default_future_timeout": lambda t: yoton.ReqChannel(
        yoton.Context(), "v", default_future_timeout=t
    ),
    "timeout": _recv_async,  # SubChannel.recv_async()
    "Timer interval": lambda t: yoton.Timer(t),
}


@pytest.mark.parametrize("bad", ["1", True, math.nan, -1, [1]], ids=repr)
@pytest.mark.parametrize("what", sorted(TIMEOUT_CALLS))
def test_every_timeout_argument_is_refused_the_same_way(what: str, bad: Any) -> None:
    call = TIMEOUT_CALLS[what]
    if bad == -1 and what in ("call_later() timeout", "do_request() timeout"):
        return  # negative means something there (front of the queue; wait forever)
    with pytest.raises(yoton.InvalidArgumentError) as info:
        call(bad)
    assert str(info.value).startswith(f"{what} must be "), str(info.value)
    assert str(info.value).endswith(f", got {bad!r}."), str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_the_validator_accepts_any_real_number_in_range() -> None:
    from fractions import Fraction

    from yoton_core._block import check_timeout

    assert check_timeout(Fraction(1, 4), "t") == 0.25
    assert check_timeout(None, "t", none=True) is None
    assert check_timeout(math.inf, "t") == math.inf
    assert check_timeout(-3, "t", minimum=-math.inf) == -3.0
    with pytest.raises(
        yoton.InvalidArgumentError, match=r"t must be None or a number of seconds > 0"
    ):
        check_timeout(0, "t", none=True, above=True)
    with pytest.raises(yoton.InvalidArgumentError, match="t must be a finite number"):
        check_timeout(math.inf, "t", finite=True)
    with pytest.raises(yoton.InvalidArgumentError, match="t must be a finite number"):
        check_timeout(-math.inf, "t", minimum=-math.inf, finite=True)


# -- channels: the user's slot and channel kind, and what to do ------------------------


def test_a_second_channel_on_a_slot_is_named_in_the_users_terms(contexts: Any) -> None:
    ctx = contexts()
    yoton.SubChannel(ctx, "MEASUREMENTS", yoton.OBJECT)
    with pytest.raises(yoton.InvalidArgumentError) as info:
        yoton.SubChannel(ctx, "measurements", yoton.OBJECT)
    text = str(info.value)
    assert "SubChannel 'MEASUREMENTS' (OBJECT)" in text
    assert ".obj." not in text and "sub-pub" not in text  # no internal slot string
    assert "close() it first" in text and "another slot name" in text
    assert isinstance(info.value, ValueError)  # what 2.x raised
    yoton.ReqChannel(ctx, "svc")
    with pytest.raises(yoton.InvalidArgumentError, match=r"a ReqChannel 'svc' \("):
        yoton.ReqChannel(ctx, "svc")


@pytest.mark.parametrize(
    ("make", "send", "named"),
    [
        (
            lambda c: yoton.PubChannel(c, "news"),
            lambda ch: ch.send("x"),
            "PubChannel 'news' (TEXT)",
        ),
        (
            lambda c: yoton.StateChannel(c, "level", yoton.OBJECT),
            lambda ch: ch.send(1),
            "StateChannel 'level' (OBJECT)",
        ),
        (lambda c: yoton.ReqChannel(c, "svc"), lambda ch: ch.add(1, 2), "ReqChannel 'svc' is"),
    ],
)
def test_a_closed_channel_names_its_slot_not_an_id(
    contexts: Any, make: Callable[[Any], Any], send: Callable[[Any], Any], named: str
) -> None:
    channel = make(contexts())
    channel.close()
    with pytest.raises(yoton.ConnectionClosedError) as info:
        send(channel)
    assert named in str(info.value) and "is closed" in str(info.value)
    assert str(id(channel)) not in str(info.value)
    assert isinstance(info.value, OSError)  # documented: IOError


def test_an_object_channel_refusing_a_value_lists_what_it_holds(contexts: Any) -> None:
    pub = yoton.PubChannel(contexts(), "data", yoton.OBJECT)
    for value in ({1, 2}, [1, {2}], {"a": object()}):
        with pytest.raises(yoton.InvalidArgumentError) as info:
            pub.send(value)
        text = str(info.value)
        assert "OBJECT messages hold None, bool, int (signed 64-bit), float, str" in text
        assert "lists, tuples and dicts" in text and "BINARY" in text


@pytest.mark.parametrize(
    "call",
    [
        lambda: yoton.Context().bind("localhost:"),
        lambda: yoton.Context().bind("nohost"),
        lambda: yoton.Context(queue_params=(0, "old")),
        lambda: yoton.SubChannel(yoton.Context(), "s").recv(block="yes"),
        lambda: yoton.PubChannel(yoton.Context(), 5),  # type: ignore[arg-type]  # under test
        lambda: yoton.PubChannel(yoton.Context(), "s").send(b"bytes on TEXT"),
        lambda: yoton.slot_hash(5),
        lambda: yoton.Context(auth_key=""),
    ],
)
def test_a_users_mistake_in_an_argument_is_an_invalid_argument_error(
    call: Callable[[], Any],
) -> None:
    with pytest.raises(yoton.InvalidArgumentError):
        call()
