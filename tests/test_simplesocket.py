"""SimpleSocket and FileWrapper over real TCP connections.

What they do: docs/pubsub.md#simplesocket-and-filewrapper.

Every test joins real contexts over TCP on ``localhost:0``. Blocking behaviour
is checked without sleeps: a reader runs in a thread, the test waits (with
:func:`wait_for`) until that reader is parked inside the channel, and only
then sends; a reader that does not block would have returned before that.
"""

from __future__ import annotations

import ast
import io
import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from yoton2 import run_yoton2

import yoton
from yoton_core.testing import recv_n, wait_for

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def join(server: yoton.Context, client: yoton.Context) -> None:
    """Connect ``client`` to a fresh TCP bind of ``server`` on any free port."""
    conn = server.bind("localhost:0")
    client.connect(f"localhost:{conn.port1}", timeout=5)
    wait_for(lambda: conn.is_connected, what="the bound side to get its peer")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a daemon thread; the list gets its result (or exception)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def finished(t: threading.Thread, out: list[Any]) -> Any:
    """Join ``t`` (generously) and return what it produced."""
    t.join(10)
    assert not t.is_alive(), "the call did not return"
    assert len(out) == 1
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def parked(sub: yoton.SubChannel) -> Callable[[], bool]:
    """True once a reader is waiting inside ``sub`` (blocked, not polling past it).

    A waiting reader is counted in ``_waiters`` while it sleeps on the inbox,
    or has a waker in ``_wakers`` while it reads the sockets itself.
    """
    return lambda: sub._waiters > 0 or bool(getattr(sub, "_wakers", ()))


# == SimpleSocket ==================================================================


@pytest.fixture
def sockets(contexts: Callable[..., Any]) -> tuple[yoton.SimpleSocket, yoton.SimpleSocket]:
    a = contexts(cls=yoton.SimpleSocket)
    b = contexts(cls=yoton.SimpleSocket)
    join(a, b)
    return a, b


def test_simplesocket_is_public_and_a_context() -> None:
    assert "SimpleSocket" in yoton.__all__ and "FileWrapper" in yoton.__all__
    assert issubclass(yoton.SimpleSocket, yoton.Context)


def test_simplesockets_talk_both_ways_over_tcp(sockets: Any) -> None:
    a, b = sockets
    for i in range(5):
        b.send(f"b{i}")
    a.send("from a ✓")
    assert [a.recv(10.0) for _ in range(5)] == [f"b{i}" for i in range(5)]
    assert b.recv(10.0) == "from a ✓"
    assert a.recv() == "" and b.recv() == ""


def test_simplesocket_does_not_receive_its_own_messages(sockets: Any) -> None:
    a, b = sockets
    a.send("mine")
    assert b.recv(10.0) == "mine"
    # Local delivery happens inside send(), so by now an echo would be queued.
    assert a.pending == 0 and a.recv() == ""
    lonely = yoton.SimpleSocket()
    try:
        lonely.send("nobody hears this")
        assert lonely.recv() == ""
    finally:
        lonely.close()


def test_simplesocket_recv_does_not_block_by_default(sockets: Any) -> None:
    a, _b = sockets
    for call in (a.recv, lambda: a.recv(None), lambda: a.recv(False), lambda: a.recv(0)):
        t, out = in_thread(call)
        assert finished(t, out) == ""


@pytest.mark.parametrize("block", [True, 30, 30.0, math.inf])
def test_simplesocket_recv_waits_when_asked(sockets: Any, block: Any) -> None:
    a, b = sockets
    t, out = in_thread(lambda: a.recv(block))
    wait_for(parked(a._sub), what="recv to wait for a message")
    b.send("late")
    assert finished(t, out) == "late"


def test_simplesocket_recv_with_timeout_gives_empty_string(sockets: Any) -> None:
    a, _b = sockets
    assert a.recv(0.05) == ""


@pytest.mark.parametrize(
    ("block", "error"),
    [("soon", TypeError), ([1], TypeError), (-1, ValueError), (math.nan, ValueError)],
)
def test_simplesocket_recv_rejects_bad_block(sockets: Any, block: Any, error: type) -> None:
    a, b = sockets
    b.send("keep me")
    wait_for(lambda: a.pending == 1, what="the message to arrive")
    with pytest.raises(error, match=r"SimpleSocket\.recv\(\): block must be None/False"):
        a.recv(block)
    # Checked before reading: the bad call did not swallow the message.
    assert a.recv() == "keep me"


def test_simplesocket_meets_plain_channels_on_slot_text(contexts: Callable[..., Any]) -> None:
    sock = contexts(cls=yoton.SimpleSocket)
    listener, talker = contexts(), contexts()  # apart: a local Pub would reach the Sub
    join(sock, listener)
    join(sock, talker)
    sub = yoton.SubChannel(listener, "text")
    pub = yoton.PubChannel(talker, "TEXT")  # slots are case-insensitive
    assert sock._pub.slot_outgoing == "text.txt.pub-sub"
    sock.send("to plain")
    pub.send("to socket")
    assert recv_n(sub, 1) == ["to plain"]
    assert sock.recv(10.0) == "to socket"


def test_simplesocket_send_needs_str(sockets: Any) -> None:
    a, b = sockets
    with pytest.raises(ValueError, match="expected str, got bytes"):
        a.send(b"raw")
    a.send("")  # empty messages are never sent ...
    a.send("after")
    assert b.recv(10.0) == "after"  # ... so this is the first to arrive


def test_simplesocket_close(sockets: Any) -> None:
    a, b = sockets
    b.send("queued")
    wait_for(lambda: a.pending == 1, what="the message to arrive")
    a.close()
    with pytest.raises(OSError, match="closed"):
        a.send("x")
    assert a.recv() == "queued"  # what was queued stays readable
    t, out = in_thread(lambda: a.recv(True))  # closed: returns instead of waiting
    assert finished(t, out) == ""


def test_simplesocket_passes_context_options(contexts: Callable[..., Any]) -> None:
    s = contexts(cls=yoton.SimpleSocket, verbose=True, queue_params=(3, "new"))
    assert s.queue_params == (3, "new")
    with pytest.raises(TypeError):
        yoton.SimpleSocket(transport=5)


TWO_X_SOCKET = """
s = yoton.SimpleSocket()
s.connect("localhost:%d" % int(read_line()), timeout=5)
say("CONNECTED")
s.send("from 2.x")
say("GOT", repr(s.recv(10.0)))
"""


def test_simplesocket_talks_to_a_2x_simplesocket(contexts: Callable[..., Any]) -> None:
    ours = contexts(cls=yoton.SimpleSocket)
    conn = ours.bind("localhost:0")
    with run_yoton2(TWO_X_SOCKET) as peer:
        peer.send_line(str(conn.port1))
        peer.expect_line("CONNECTED")
        assert ours.recv(10.0) == "from 2.x"
        ours.send("from 3")
        assert peer.expect_line("GOT") == repr("from 3")


# == FileWrapper ===================================================================


class Pair:
    """Two contexts joined over TCP: ``here`` holds the wrapped channels."""

    def __init__(self, contexts: Callable[..., Any]) -> None:
        self.here = contexts()
        self.there = contexts()
        join(self.here, self.there)

    def writer(self, slot: str = "out", **kw: Any) -> tuple[yoton.FileWrapper, yoton.SubChannel]:
        """A wrapper over a PubChannel here, and the SubChannel there that reads it."""
        sub = yoton.SubChannel(self.there, slot)
        return yoton.FileWrapper(yoton.PubChannel(self.here, slot), **kw), sub

    def reader(self, slot: str = "in", **kw: Any) -> tuple[yoton.FileWrapper, yoton.PubChannel]:
        """A wrapper over a SubChannel here, and the PubChannel there that feeds it."""
        pub = yoton.PubChannel(self.there, slot)
        return yoton.FileWrapper(yoton.SubChannel(self.here, slot), **kw), pub


@pytest.fixture
def pair(contexts: Callable[..., Any]) -> Pair:
    return Pair(contexts)


def fill(wrapper: yoton.FileWrapper, pub: yoton.PubChannel, *messages: str) -> None:
    """Publish ``messages`` and wait until the wrapped SubChannel holds them all."""
    for m in messages:
        pub.send(m)
    sub = wrapper.channel
    wait_for(lambda: sub.pending == len(messages), what=f"{len(messages)} messages to arrive")


def test_filewrapper_rejects_what_is_not_a_text_pub_or_sub(pair: Pair) -> None:
    ctx = pair.here
    for bad in ("stdout", ctx, yoton.StateChannel(ctx, "state"), None):
        with pytest.raises(TypeError, match="needs a PubChannel .* or a SubChannel"):
            yoton.FileWrapper(bad)  # type: ignore[arg-type]
    pub = yoton.PubChannel(ctx, "p")
    with pytest.raises(TypeError, match="echo must be None or a PubChannel"):
        yoton.FileWrapper(pub, echo=yoton.SubChannel(ctx, "e"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="channel must carry TEXT.*BinaryMessageType"):
        yoton.FileWrapper(yoton.PubChannel(ctx, "b", yoton.BINARY))
    with pytest.raises(TypeError, match="echo must carry TEXT"):
        yoton.FileWrapper(pub, echo=yoton.PubChannel(ctx, "o", yoton.OBJECT))
    for bad_size in ("3", 1.5, True):
        with pytest.raises(TypeError, match="chunksize must be an int"):
            yoton.FileWrapper(pub, chunksize=bad_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunksize must be >= 0"):
        yoton.FileWrapper(pub, chunksize=-1)


def test_filewrapper_fixed_attributes(pair: Pair) -> None:
    w, _ = pair.writer("stdout", isatty=True)
    r, _ = pair.reader("stdin")
    assert (w.encoding, w.errors, w.newlines) == ("UTF-8", "strict", None)
    assert w.isatty() is True and r.isatty() is False
    assert (w.mode, r.mode) == ("w", "r")
    assert (w.writable(), w.readable(), r.writable(), r.readable()) == (True, False, False, True)
    assert not w.seekable()
    assert w.name == "<yoton stdout.txt.pub-sub>"
    assert w.softspace is False
    w.softspace = True
    assert w.softspace is True
    for f in (w, r):
        with pytest.raises(io.UnsupportedOperation, match="no file descriptor"):
            f.fileno()


def test_filewrapper_write_goes_through_pubsub(pair: Pair) -> None:
    w, sub = pair.writer()
    assert w.write("hello ✓") == len("hello ✓")
    assert recv_n(sub, 1) == ["hello ✓"]
    with pytest.raises(TypeError, match=r"write\(\) needs a str, got bytes"):
        w.write(b"raw")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunksize", "text", "chunks"),
    [
        (4, "abcdefghij", ["abcd", "efgh", "ij"]),
        (4, "abcd", ["abcd"]),
        (4, "abc", ["abc"]),
        (0, "x" * 1000, ["x" * 1000]),
        (2, "ééééé", ["éé", "éé", "é"]),  # characters, not UTF-8 bytes
    ],
)
def test_filewrapper_write_splits_into_chunks(
    pair: Pair, chunksize: int, text: str, chunks: list[str]
) -> None:
    w, sub = pair.writer(chunksize=chunksize)
    w.write(text)
    w.write("!")  # a marker: nothing more was sent before it
    assert recv_n(sub, len(chunks) + 1) == [*chunks, "!"]


def test_filewrapper_writelines_sends_one_message_per_line(pair: Pair) -> None:
    w, sub = pair.writer(chunksize=3)
    w.writelines(["first\n", "second", "third\n"])  # each longer than chunksize
    w.writelines(iter(["END"]))  # any iterable
    assert recv_n(sub, 4) == ["first\n", "second", "third\n", "END"]


def test_print_to_filewrapper_flushes_the_context(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, sub = pair.writer()
    calls: list[int] = []
    real_flush = pair.here.flush

    def spy(*args: Any, **kw: Any) -> bool:
        calls.append(1)
        return real_flush(*args, **kw)

    monkeypatch.setattr(pair.here, "flush", spy)
    print("hello", "world", file=w, flush=True)
    assert calls == [1]
    assert "".join(recv_n(sub, 4)) == "hello world\n"


def test_filewrapper_read_is_non_blocking_by_default(pair: Pair) -> None:
    r, pub = pair.reader()
    t, out = in_thread(r.read)
    assert finished(t, out) == ""
    fill(r, pub, "one")
    assert r.read() == "one"


def test_filewrapper_read_waits_when_asked(pair: Pair) -> None:
    r, pub = pair.reader()
    t, out = in_thread(lambda: r.read(True))
    wait_for(parked(r.channel), what="read(True) to wait")  # type: ignore[arg-type]
    pub.send("late")
    assert finished(t, out) == "late"
    assert r.read(0.05) == ""
    with pytest.raises(TypeError, match=r"FileWrapper\.read\(\): block must be"):
        r.read("now")
    with pytest.raises(ValueError, match=r"FileWrapper\.read\(\): block must be"):
        r.read(-0.5)


def test_filewrapper_echoes_what_it_reads(pair: Pair) -> None:
    echo_sub = yoton.SubChannel(pair.there, "echo")
    r, pub = pair.reader(echo=yoton.PubChannel(pair.here, "echo"))
    fill(r, pub, "typed", "line two")
    assert r.read() == "typed"
    assert r.readline() == "line two\n"
    assert r.read() == ""  # nothing read, nothing echoed
    pub.send("marker")
    assert r.read(10.0) == "marker"
    assert recv_n(echo_sub, 3) == ["typed", "line two", "marker"]


@pytest.mark.parametrize(
    ("message", "size", "line"),
    [
        ("abc", 0, "abc\n"),
        ("abc\n", 0, "abc\n"),  # no second newline
        ("two\nlines", 0, "two\nlines\n"),  # one message is one "line"
        ("abcdef", 2, "ab"),
        ("abc", 4, "abc\n"),
        ("abc", 3, "abc"),
        ("abc", -1, "abc\n"),  # negative: no limit, as for io files
    ],
)
def test_filewrapper_readline(pair: Pair, message: str, size: int, line: str) -> None:
    r, pub = pair.reader()
    fill(r, pub, message, "next")
    assert r.readline(size) == line
    assert r.readline() == "next\n"  # truncation discards the rest of that message only


def test_filewrapper_readline_blocks(pair: Pair) -> None:
    r, pub = pair.reader()
    t, out = in_thread(r.readline)
    wait_for(parked(r.channel), what="readline to wait")  # type: ignore[arg-type]
    pub.send("late")
    assert finished(t, out) == "late\n"
    with pytest.raises(TypeError, match="readline\\(\\) size must be an int"):
        r.readline("3")  # type: ignore[arg-type]


def test_filewrapper_readline_gives_eof_once_closed(pair: Pair) -> None:
    r, pub = pair.reader()
    fill(r, pub, "one", "two")
    r.close()
    assert r.closed and r.channel.closed
    assert list(r) == ["one\n", "two\n"]  # queued lines stay readable, then EOF
    assert r.readline() == ""


def test_filewrapper_as_stdin_and_stdout_for_input(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, prompt_sub = pair.writer("stdout")
    inp, line_pub = pair.reader("stdin")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", inp)
    line_pub.send("Ada")
    assert input("name? ") == "Ada"
    assert recv_n(prompt_sub, 1) == ["name? "]
    inp.close()
    with pytest.raises(EOFError):
        input()


def test_filewrapper_wrong_direction_is_unsupported(pair: Pair) -> None:
    w, _ = pair.writer()
    r, _ = pair.reader()
    call: Callable[[], object]
    for call in (lambda: r.write("x"), lambda: r.writelines(["x"])):
        with pytest.raises(io.UnsupportedOperation, match="wraps a SubChannel.*wrap a PubChannel"):
            call()
    for call in (w.read, w.readline, lambda: iter(w)):
        with pytest.raises(io.UnsupportedOperation, match="wraps a PubChannel.*wrap a SubChannel"):
            call()


def test_filewrapper_close_closes_the_channel(pair: Pair) -> None:
    w, _ = pair.writer()
    assert not w.closed
    w.close()
    assert w.closed and w.channel.closed
    with pytest.raises(OSError, match="Cannot send: PubChannel '.*' .TEXT. is closed"):
        w.write("too late")


# -- a forked child ------------------------------------------------------------------

FORK_SCRIPT = """
import multiprocessing, os, sys
import yoton
from yoton_core.testing import recv_n, wait_for

def report(*parts):
    sys.__stdout__.write(" ".join(str(p) for p in parts) + "\\n")
    sys.__stdout__.flush()

here, there = yoton.Context(), yoton.Context()
conn = here.bind("localhost:0")
there.connect("localhost:%d" % conn.port1, timeout=5)
wait_for(lambda: conn.is_connected)
out_sub = yoton.SubChannel(there, "stdout")
err_sub = yoton.SubChannel(there, "stderr")
plain_sub = yoton.SubChannel(there, "plain")
sys.stdout = yoton.FileWrapper(yoton.PubChannel(here, "stdout"))
sys.stderr = yoton.FileWrapper(yoton.PubChannel(here, "stderr"))
sys.stdin = yoton.FileWrapper(yoton.SubChannel(here, "stdin"))
plain = yoton.FileWrapper(yoton.PubChannel(here, "plain"))

def child():
    # multiprocessing has closed sys.stdin (our wrapper) and replaced it
    report("CHILD_REAL_STDIN_CLOSED", sys.__stdin__.closed)
    print("child to stdout")
    print("child to stderr", file=sys.stderr)
    plain.write("plain from child\\n")
    plain.close()  # not a std stream: closes nothing real
    report("CHILD_PLAIN_CLOSED", plain.closed, "REAL_STDOUT_CLOSED", sys.__stdout__.closed)
    # Left in the buffer of the real stdout (a pipe): it only comes out if
    # multiprocessing's final sys.stdout.flush() (our wrapper) flushes it.
    sys.__stdout__.write("CHILD_BUFFERED flushed\\n")

p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join(30)
report("CHILD_EXIT", p.exitcode)
print("parent to stdout")
print("parent to stderr", file=sys.stderr)
plain.write("plain from parent")
report("PARENT_STDIN_OPEN", not sys.stdin.closed, "PLAIN_OPEN", not plain.closed)
report("OUT", repr(recv_n(out_sub, 2)))
report("ERR", repr(recv_n(err_sub, 2)))
report("PLAIN", repr(recv_n(plain_sub, 1)))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_filewrapper_in_forked_child_writes_to_the_real_streams() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's yoton, also in the child
    env.pop("PYTHONUNBUFFERED", None)  # the real stdout must buffer (see CHILD_BUFFERED)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_SCRIPT)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    report = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines if ln[:1].isupper()}
    # The child's output went to its real stdout/stderr, each to the right one ...
    assert "child to stdout" in lines
    assert "plain from child" in lines
    assert "child to stderr" in proc.stderr.splitlines()
    assert "child to stderr" not in proc.stdout
    assert report.get("CHILD_EXIT") == "0"
    # ... close() in the child closed the real stream the wrapper stood in for,
    # and only that one.
    assert report.get("CHILD_REAL_STDIN_CLOSED") == "True"
    assert report.get("CHILD_PLAIN_CLOSED") == "True REAL_STDOUT_CLOSED False"
    # flush() in the child flushed the real stdout (multiprocessing ends with os._exit).
    assert report.get("CHILD_BUFFERED") == "flushed"
    # The parent's wrappers are untouched and still publish; the channels
    # carry the parent's writes only.
    assert report.get("PARENT_STDIN_OPEN") == "True PLAIN_OPEN True"
    assert ast.literal_eval(report["OUT"]) == ["parent to stdout", "\n"]
    assert ast.literal_eval(report["ERR"]) == ["parent to stderr", "\n"]
    assert ast.literal_eval(report["PLAIN"]) == ["plain from parent"]
