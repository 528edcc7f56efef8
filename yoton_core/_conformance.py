"""The transport contract as executable checks (used by :mod:`yoton_core.testing`).

Each check takes a :class:`TransportUnderTest` and raises ``AssertionError``
when the transport breaks the contract, or :class:`ConformanceSkip` when the
check does not apply (e.g. garbage bytes for a transport that moves packages,
not bytes). Checks use real contexts, threads and, for peer death, a real
child process; they wait on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from ._connection import Connection
from ._context import Context
from ._engine import LINK_ERRORS
from ._errors import RemoteError
from ._events import process_events
from ._handshake import format_line
from ._message_types import BINARY, OBJECT
from ._plugins import resolve_transport
from ._pubsub import PubChannel, SubChannel
from ._repchannel import RepChannel
from ._reqrep import ReqChannel
from ._stream import StreamConnection
from ._wire import CONTROL, HEADER

__all__ = ["ConformanceSkip", "TransportUnderTest", "CHECKS", "wait_for"]


class ConformanceSkip(Exception):
    """A check does not apply to this transport; the message says why."""


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # polling a condition with a deadline, not a fixed wait
        delay = min(delay * 2, 0.05)


def recv_n(sub: SubChannel, n: int, timeout: float = 15.0) -> list[Any]:
    """Receive exactly ``n`` messages, falsy ones included (or fail saying how many arrived)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"received {len(out)} of {n} messages within {timeout} s")
        item = sub._recv(min(left, 0.5))
        if item is not None:
            out.append(sub._decode(item))
    return out


@dataclass
class TransportUnderTest:
    """What the checks need to know about a transport.

    Args:
        scheme: The scheme under test, e.g. ``"tcp"``.
        make_address: Returns a fresh address for one bind (used for the
            matching connect too). Default: bind ``scheme://localhost:0`` and
            connect to ``scheme://localhost:<port1>``.
        plugin_module: Module a child process imports (and registers) to get
            the transport when entry points do not provide it. Default: the
            module that defines the transport's class.
        timeout: Seconds any single wait may take before the check fails.
    """

    scheme: str
    make_address: Callable[[], str] | None = None
    plugin_module: str | None = None
    timeout: float = 10.0
    _contexts: list[Context] = field(default_factory=list)

    @property
    def cls(self) -> type[Connection]:
        return resolve_transport(self.scheme)

    @property
    def carries_bytes(self) -> bool:
        return issubclass(self.cls, StreamConnection)

    @property
    def joins_bus(self) -> bool:
        return bool(getattr(self.cls, "joins_bus", False))

    def peer_to_peer_only(self, what: str) -> None:
        """Skip a check that is about one peer at the other end of a link."""
        if self.joins_bus:
            raise ConformanceSkip(
                f"{self.scheme!r} joins a bus (bind and connect both join; no single peer): "
                f"{what} is peer-to-peer only"
            )

    def context(self, **kwargs: Any) -> Context:
        ctx = Context(**kwargs)
        self._contexts.append(ctx)
        return ctx

    def bind(self, ctx: Context, **kwargs: Any) -> tuple[Connection, str]:
        """Bind ``ctx``; return the connection and the address to connect to."""
        if self.make_address is not None:
            address = self.make_address()
            return ctx.bind(address, **kwargs), address
        conn = ctx.bind(f"{self.scheme}://localhost:0", **kwargs)
        return conn, self.connect_address(conn.port1)

    def connect_address(self, port: int) -> str:
        return f"{self.scheme}://localhost:{port}"

    def pair(self, a: Context, b: Context) -> tuple[Connection, Connection]:
        """``a`` binds, ``b`` connects; return both ends once both are connected."""
        ca, address = self.bind(a)
        cb = b.connect(address, timeout=self.timeout)
        wait_for(lambda: ca.is_connected, self.timeout, "the bound end to see its peer")
        return ca, cb

    def close_all(self) -> None:
        for ctx in self._contexts:
            with contextlib.suppress(Exception):
                ctx.close()
        self._contexts.clear()

    @contextlib.contextmanager
    def session(self) -> Iterator[TransportUnderTest]:
        try:
            yield self
        finally:
            self.close_all()


# -- checks -------------------------------------------------------------------


def check_bind_connect(t: TransportUnderTest) -> None:
    """bind returns a waiting connection; connect pairs it; properties on both ends."""
    t.peer_to_peer_only("a bind waiting for one peer")
    a, b = t.context(), t.context()
    ca, address = t.bind(a)
    assert isinstance(ca, t.cls), f"bind() returned {type(ca).__name__}, not {t.cls.__name__}"
    assert type(ca).scheme == t.scheme
    assert ca.is_waiting and ca.is_alive and not ca.is_connected, ca.status
    assert ca.status == "waiting"
    assert (ca.id1, ca.id2, ca.pid1) == (a.id, 0, os.getpid())
    assert ca in a.connections_all and a.connection_count == 0
    cb = b.connect(address, timeout=t.timeout, name="kit")
    assert cb.is_connected and cb.status == "connected", cb.status
    assert (cb.id1, cb.id2, cb.pid1, cb.pid2) == (b.id, a.id, os.getpid(), os.getpid())
    assert b.connections["kit"] is cb and b.connection_count == 1
    wait_for(lambda: ca.is_connected, t.timeout, "the bound end to see its peer")
    assert ca.status == "hosting" and not ca.is_waiting
    assert (ca.id2, ca.pid2) == (b.id, os.getpid())
    assert a.connection_count == 1 and a.connections[0] is ca
    # One bind serves one peer: a second connect to the same address fails.
    c = t.context()
    try:
        c.connect(address, timeout=0.3)
    except OSError:
        pass
    else:
        raise AssertionError(f"a second peer could connect to the used address {address}")
    assert c.connections_all == []


def check_connect_refused(t: TransportUnderTest) -> None:
    """Connecting where nobody is bound raises OSError in time and leaves nothing behind."""
    t.peer_to_peer_only("connecting where nobody is bound")
    a, b = t.context(), t.context()
    ca, address = t.bind(a)
    ca.close()
    assert not ca.is_alive and ca.close_reason == "Closed on command.", ca.close_reason
    assert a.connections_all == []
    started = time.monotonic()
    try:
        b.connect(address, timeout=0.3)
    except OSError as exc:
        assert str(exc), "the error should say what failed"
    else:
        raise AssertionError(f"connect to the closed address {address} succeeded")
    assert time.monotonic() - started < t.timeout, "connect() ignored its timeout"
    assert b.connections_all == [] and b.connection_count == 0
    # The address can be bound again right away.
    if t.make_address is None:
        again = a.bind(address)
        assert again.is_waiting
        b.connect(address, timeout=t.timeout)
        wait_for(lambda: again.is_connected, t.timeout, "the re-bound address to get a peer")


def check_self_connect(t: TransportUnderTest) -> None:
    """A context cannot connect to itself; its bind keeps waiting for a real peer."""
    t.peer_to_peer_only("a bind waiting for a real peer")
    a, b = t.context(), t.context()
    ca, address = t.bind(a)
    try:
        a.connect(address, timeout=t.timeout)
    except OSError:
        pass
    else:
        raise AssertionError("a context could connect to itself")
    assert a.connection_count == 0
    wait_for(lambda: ca.is_waiting, t.timeout, "the bind to keep waiting")
    b.connect(address, timeout=t.timeout)
    wait_for(lambda: ca.is_connected, t.timeout, "a real peer to connect after the self-connect")


def check_pubsub(t: TransportUnderTest) -> None:
    """Pub/sub both ways, in order, all message types, early and large messages."""
    a, b = t.context(), t.context()
    early_pub = PubChannel(a, "kit-early")
    early_pub.send("sent before any peer")  # waits in a's start-up queue
    early_sub = SubChannel(b, "kit-early")
    t.pair(a, b)
    if not t.joins_bus:  # on a bus, a's join flushes it before b listens
        assert early_sub.recv(t.timeout) == "sent before any peer"
    for src, dst in ((a, b), (b, a)):
        pub = PubChannel(src, "kit-text")
        sub = SubChannel(dst, "kit-text")
        msgs = [f"message {i}" for i in range(500)]
        for m in msgs:
            pub.send(m)
        assert recv_n(sub, 500, t.timeout) == msgs, "messages lost, duplicated or reordered"
        pub.close()
        sub.close()
    pub_bin, sub_bin = PubChannel(a, "kit-bin", BINARY), SubChannel(b, "kit-bin", BINARY)
    big = random.randbytes(1 << 20)
    pub_bin.send(big)
    pub_bin.send(b"\x00small")
    assert recv_n(sub_bin, 2, t.timeout) == [big, b"\x00small"]
    pub_obj, sub_obj = PubChannel(b, "kit-obj", OBJECT), SubChannel(a, "kit-obj", OBJECT)
    obj = {"n": [1, 2.5, None, True], "s": "h\u00e9", ("t", 1): (1, 2)}
    pub_obj.send(obj)
    assert sub_obj.recv(t.timeout) == obj
    assert sub_obj.recv(False) is None and sub_bin.recv(False) == b""


def check_multi_hop(t: TransportUnderTest) -> None:
    """A chain a-b-c carries messages end to end; a cycle a-b-c-a delivers each once."""
    a, b, c = t.context(), t.context(), t.context()
    t.pair(a, b)
    t.pair(b, c)
    subs = {ctx: SubChannel(ctx, "kit-hop") for ctx in (a, b, c)}
    PubChannel(a, "kit-hop").send("from a")
    assert subs[c].recv(t.timeout) == "from a" and subs[b].recv(t.timeout) == "from a"
    back = PubChannel(c, "kit-back")
    sub_back = SubChannel(a, "kit-back")
    back.send("from c")
    assert sub_back.recv(t.timeout) == "from c"
    t.pair(c, a)  # close the cycle
    pub = PubChannel(b, "kit-cycle")
    cycle_subs = [SubChannel(ctx, "kit-cycle") for ctx in (a, c)]
    for i in range(50):
        pub.send(str(i))
    b.flush(t.timeout)
    for sub in cycle_subs:
        assert recv_n(sub, 50, t.timeout) == [str(i) for i in range(50)]
    # a and c forwarded their copies to each other when they received them; a
    # marker each sends afterwards arrives behind those copies, so once the
    # markers are in, a duplicate would have been delivered too.
    for src, dst in ((c, a), (a, c)):
        marker_sub = SubChannel(dst, "kit-marker")
        PubChannel(src, "kit-marker").send("end")
        assert marker_sub.recv(t.timeout) == "end"
        marker_sub.close()
    assert [s.pending for s in cycle_subs] == [0, 0], "duplicates arrived through the cycle"


def check_flush_and_stats(t: TransportUnderTest) -> None:
    """flush() returns once queued data left; counters count it."""
    a, b = t.context(), t.context()
    ca, cb = t.pair(a, b)
    pub, sub = PubChannel(a, "kit-flush", BINARY), SubChannel(b, "kit-flush", BINARY)
    payload = b"x" * 1000
    for _ in range(2000):
        pub.send(payload)
    ca.flush(t.timeout)
    assert a.flush(t.timeout) is True
    assert ca.stats.queued == 0
    assert len(recv_n(sub, 2000, t.timeout)) == 2000
    assert ca.stats.packages_sent >= 2000 and ca.stats.bytes_sent >= 2000 * 1000
    wait_for(lambda: cb.stats.packages_received >= 2000, t.timeout, "the receive counters")
    assert cb.stats.bytes_received >= 2000 * 1000 and cb.stats.packages_dropped == 0
    waiting, _ = t.bind(t.context())
    waiting.flush(0.5)  # nothing to do while waiting: returns at once


def _check_close(t: TransportUnderTest, closer_binds: bool) -> None:
    a, b = t.context(), t.context()
    ca, cb = t.pair(a, b)
    closer, other = (ca, cb) if closer_binds else (cb, ca)
    closer_ctx, other_ctx = (a, b) if closer_binds else (b, a)
    seen: list[tuple[Connection, str]] = []
    lock = threading.Lock()

    def handler(conn: Connection, reason: str) -> None:
        with lock:
            seen.append((conn, reason))

    closer.closed.bind(handler)
    other.closed.bind(handler)
    pub, sub = PubChannel(closer_ctx, "kit-close"), SubChannel(other_ctx, "kit-close")
    for i in range(200):
        pub.send(str(i))
    closer.close()
    assert closer.close_reason == "Closed on command.", closer.close_reason
    assert not closer.is_alive and closer.status == "closed"
    assert other.wait_closed(t.timeout), "the other end was not told about the close"
    assert other.close_reason == "Closed from other end.", other.close_reason
    assert closer_ctx.connection_count == 0 and other_ctx.connection_count == 0
    assert recv_n(sub, 200, t.timeout) == [str(i) for i in range(200)], "queued data lost"

    def both_emitted() -> bool:
        process_events(0.01)
        with lock:
            return len(seen) >= 2

    wait_for(both_emitted, t.timeout, "the closed signals")
    assert sorted(seen, key=lambda s: s[0] is other) == [
        (closer, "Closed on command."),
        (other, "Closed from other end."),
    ], seen
    closer.close()  # closing again is harmless and emits nothing more
    process_events(0.01)
    assert len(seen) == 2


def check_close_from_binder(t: TransportUnderTest) -> None:
    """The bound end closes: reasons on both ends, queued data delivered, signals once."""
    t.peer_to_peer_only("telling the other end about a close")
    _check_close(t, closer_binds=True)


def check_close_from_connector(t: TransportUnderTest) -> None:
    """The connecting end closes: same contract."""
    t.peer_to_peer_only("telling the other end about a close")
    _check_close(t, closer_binds=False)


def check_context_close(t: TransportUnderTest) -> None:
    """Context.close() closes connections ("Closed by the context.") and channels."""
    a, b = t.context(), t.context()
    ca, cb = t.pair(a, b)
    waiting, _ = t.bind(a)
    pub = PubChannel(a, "kit-ctx")
    a.close()
    assert ca.close_reason == "Closed by the context.", ca.close_reason
    assert waiting.close_reason == "Closed by the context.", waiting.close_reason
    if not t.joins_bus:  # on a bus, b's link stays: others may still be there
        assert cb.wait_closed(t.timeout) and cb.close_reason == "Closed from other end."
    assert a.connections_all == [] and pub.closed
    try:
        pub.send("x")
    except OSError:
        pass
    else:
        raise AssertionError("send on a channel of a closed context did not raise OSError")


class _KitReplier(RepChannel):
    """The replier of the req/rep check."""

    def add(self, x: Any, y: Any) -> Any:
        return x + y

    def fail(self, text: str) -> None:
        raise ZeroDivisionError(text)


def check_reqrep(t: TransportUnderTest) -> None:
    """Request/reply both ways: results in order, echo, and remote errors."""
    a, b = t.context(), t.context()
    t.pair(a, b)
    for server, client in ((a, b), (b, a)):
        rep = _KitReplier(server, "kit-calc")
        rep.set_mode("thread")
        req = ReqChannel(client, "kit-calc")
        futures = [req.add(i, 1000) for i in range(20)]
        assert [f.result(t.timeout) for f in futures] == [i + 1000 for i in range(20)]
        assert req.echo("ping").result(t.timeout) == ("ping", hex(server.id))
        error = req.fail("broken on purpose").exception(t.timeout)
        assert isinstance(error, RemoteError), repr(error)
        assert error.type_name == "ZeroDivisionError" and "broken on purpose" in str(error)
        rep.close()
        req.close()


_CHILD = r"""
import importlib, sys
import yoton
scheme, module, role, address = sys.argv[1:5]
if scheme not in yoton.transports() and module:
    yoton.plugin_manager().register(importlib.import_module(module))
ctx = yoton.Context()
if role == "bind":
    conn = ctx.bind(address)
    print("READY", conn.port1, flush=True)
else:
    conn = ctx.connect(address, timeout=10.0)
    print("READY", conn.port1, flush=True)
sys.stdin.read()  # live until killed
"""


def _spawn_peer(t: TransportUnderTest, role: str, address: str) -> tuple[subprocess.Popen, int]:
    module = t.plugin_module or t.cls.__module__
    if module == "__main__":
        raise AssertionError(
            f"the {t.scheme!r} transport is defined in __main__, which a child process "
            "cannot import: pass plugin_module='your.module'"
        )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, t.scheme, module, role, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the child prints READY or dies (EOF)
    if not line.startswith("READY"):
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"the peer process failed to {role} {address!r} (exit {proc.returncode})"
        )
    return proc, int(line.split()[1])


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()
    if proc.stdout is not None:
        proc.stdout.close()


def check_peer_death(t: TransportUnderTest) -> None:
    """A peer process killed with SIGKILL is noticed, with a reason, on either role."""
    t.peer_to_peer_only("a peer's death closing the link")
    if not t.carries_bytes or not hasattr(signal, "SIGKILL"):
        raise ConformanceSkip(
            f"{t.scheme!r} connects contexts of one process: a peer cannot die on its own"
        )
    a = t.context()
    # The child connects to us.
    ours, address = t.bind(a)
    proc, _ = _spawn_peer(t, "connect", address)
    try:
        wait_for(lambda: ours.is_connected, t.timeout, "the child process to connect")
        assert ours.pid2 == proc.pid
    finally:
        _kill(proc)
    assert ours.wait_closed(t.timeout), "the death of the connected peer went unnoticed"
    assert ours.close_reason and ours.close_reason not in (
        "Closed on command.",
        "Closed from other end.",
    ), ours.close_reason
    # We connect to the child.
    child_address = t.make_address() if t.make_address is not None else ""
    proc, port = _spawn_peer(t, "bind", child_address or f"{t.scheme}://localhost:0")
    try:
        conn = a.connect(child_address or t.connect_address(port), timeout=t.timeout)
        assert conn.pid2 == proc.pid
    finally:
        _kill(proc)
    assert conn.wait_closed(t.timeout), "the death of the bound peer went unnoticed"
    assert conn.close_reason and conn.close_reason != "Closed on command.", conn.close_reason
    assert a.connection_count == 0


async def _raw_session(cls: type[Connection], address: str, chunks: list[bytes]) -> bytes:
    """Open a raw byte stream to ``address`` with the transport's own connect code,
    send each chunk (reading the reply line after a handshake line) and return
    everything read until the other end closes."""
    from ._address import split_scheme

    probe = cls(Context())  # a throwaway instance: only its connect code is used
    assert isinstance(probe, StreamConnection)
    target = probe.parse_address(split_scheme(address)[1])
    stream = await probe.connect_once(target)
    received = b""
    async with stream:
        with trio.move_on_after(5.0):
            for chunk in chunks:
                await stream.send_all(chunk)
                if chunk.startswith(b"YOTON!"):
                    while not received.endswith(b"\r\n"):
                        data = await stream.receive_some(4096)
                        if not data:
                            return received
                        received += data
            while True:
                try:
                    data = await stream.receive_some(65536)
                except LINK_ERRORS:
                    break
                if not data:
                    break
                received += data
    return received


def check_bad_input(t: TransportUnderTest) -> None:
    """Garbage closes only the connection it arrives on, with a reason; the rest goes on."""
    if not t.carries_bytes:
        raise ConformanceSkip(f"{t.scheme!r} moves packages, not bytes: no bytes to garble")
    from ._engine import get_engine

    engine = get_engine()
    a, b = t.context(), t.context()
    real_a, real_b = t.pair(a, b)
    sub = SubChannel(b, "kit-bad")
    pub = PubChannel(a, "kit-bad")
    line = format_line(random.getrandbits(63) | 1, 4242)
    bad_header = b"NOTYOTON" + bytes(48)
    huge = HEADER.pack(CONTROL, 12345, 1, 1, 0, 0, a.max_message_size + 1)
    # 1. Not a handshake at all: refused, and the bind keeps waiting.
    waiting, address = t.bind(a)
    reply = engine.run(_raw_session, t.cls, address, [b"GET / HTTP/1.0\r\n\r\n"])
    assert not reply.startswith(b"YOTON!"), reply
    assert waiting.is_waiting, "a failed handshake used up the bind"
    # 2./3. A valid handshake, then bad control bytes / an oversized length.
    for chunk, words in ((bad_header, "Lost track of the stream"), (huge, "maximum")):
        reply = engine.run(_raw_session, t.cls, address, [line, chunk])
        assert reply.startswith(b"YOTON!%016x." % a.id), reply
        assert waiting.wait_closed(t.timeout), f"{chunk[:8]!r}... did not close the connection"
        assert words in (waiting.close_reason or ""), waiting.close_reason
        waiting, address = t.bind(a)
    # The real connection never noticed.
    assert real_a.is_connected and real_b.is_connected
    pub.send("still serving")
    assert sub.recv(t.timeout) == "still serving"
    back_pub, back_sub = PubChannel(b, "kit-bad-back"), SubChannel(a, "kit-bad-back")
    back_pub.send("both ways")
    assert back_sub.recv(t.timeout) == "both ways"


CHECKS: dict[str, Callable[[TransportUnderTest], None]] = {
    "bind_connect": check_bind_connect,
    "connect_refused": check_connect_refused,
    "self_connect": check_self_connect,
    "pubsub": check_pubsub,
    "multi_hop": check_multi_hop,
    "flush_and_stats": check_flush_and_stats,
    "reqrep": check_reqrep,
    "close_from_binder": check_close_from_binder,
    "close_from_connector": check_close_from_connector,
    "context_close": check_context_close,
    "peer_death": check_peer_death,
    "bad_input": check_bad_input,
}
