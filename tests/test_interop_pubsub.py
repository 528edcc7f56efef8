"""Pub/sub between our contexts and yoton 2.x (pyzo's copy) in separate processes, over TCP.

The 2.x side is a small command interpreter (``DRIVER``) run by
:func:`yoton2.run_yoton2`: each stdin line is a Python literal tuple naming an
operation, each reply a stdout line. Every step that matters for slow joiners
(channel created, connection established) is acknowledged before the other
side sends, so no test relies on sleeps.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import time
from collections.abc import Iterator
from typing import Any

import pytest
from yoton2 import Yoton2Proc, run_yoton2

import yoton
from yoton_core.testing import recv_n, wait_for

pytestmark = pytest.mark.timeout(60)

TYPES = {"txt": yoton.TEXT, "bin": yoton.BINARY, "obj": yoton.OBJECT}
SIZES = [1, 100, 4096, 65535, 65536 + 17, 300_000, 1_048_576]
N_MANY = 2000


# -- payloads shared by both sides (their source is copied into the child) ------


def gen_payload(kind: str, size: int, seed: int) -> Any:
    """A deterministic message of about ``size`` units for message type ``kind``."""
    if kind == "bin":
        base = bytes((i * 7 + seed) & 0xFF for i in range(256))
        return (base * (size // 256 + 1))[:size]
    if kind == "txt":
        text = f"{seed}: yoton é€ 😀 жёлтый 漢字 "
        return (text * (size // len(text) + 1))[:size]
    # obj: nested values of every supported kind; ``size`` scales a list of ints
    return {
        "seed": seed,
        (1, "tuple key", (2.5, None)): [True, False, None],
        "ints": [(-1) ** i * (i * 0x10001 + seed) for i in range(size // 9 + 1)],
        "big": [2**63 - 1, -(2**63), 0, -1],
        "floats": [0.1, -0.0, 1e300, -2.5e-300, 3.141592653589793],
        "text": "non-ASCII: é€😀 жёлтый",
        "nested": [[[], {}], ((),), {"k": {"k2": [1, (2, [3, {4: 5}])]}}],
        7: "int key",
        None: "none key",
    }


def fingerprint(value: Any) -> Any:
    """Something short and literal that identifies ``value`` exactly."""
    text = repr(value)
    if len(text) <= 2000:
        return ("value", value)
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes):
        data = value
    else:
        data = text.encode("utf-8")
    return ("digest", type(value).__name__, len(data), hashlib.sha256(data).hexdigest())


DRIVER = (
    "Any = object  # for the annotations of the copied functions\n"
    + inspect.getsource(gen_payload)
    + "\n"
    + inspect.getsource(fingerprint)
    + """
TYPES = {"txt": yoton.TEXT, "bin": yoton.BINARY, "obj": yoton.OBJECT}
ctx = yoton.Context()
conns = []
chans = {}
reasons = []
timedouts = []

def on_closed(conn, reason):
    reasons.append(reason)

def on_timedout(conn, flag):
    timedouts.append(flag)

def watch(conn):
    conns.append(conn)
    conn.closed.bind(on_closed)
    conn.timedout.bind(on_timedout)

def recv_one(sub, timeout):
    if not wait_until(lambda: sub.pending, timeout):
        return ("timeout",)
    return ("msg", sub.recv(False))

while True:
    line = read_line()
    if not line:
        break
    cmd = ast.literal_eval(line)
    op = cmd[0]
    if op == "bind":
        c = ctx.bind(cmd[1])
        watch(c)
        say("BOUND", c.port1)
    elif op == "wait_connected":
        c = conns[cmd[1]]
        wait_until(lambda: c.is_connected)
        say("CONNECTED", c.is_connected, c.id2)
    elif op == "connect":
        c = ctx.connect(cmd[1], timeout=5.0)
        watch(c)
        say("CONNECTED", c.is_connected, c.id2)
    elif op in ("pub", "sub"):
        cls = yoton.PubChannel if op == "pub" else yoton.SubChannel
        chans[op, cmd[1], cmd[2]] = cls(ctx, cmd[2], TYPES[cmd[1]])
        say("OK")
    elif op == "send":
        pub = chans["pub", cmd[1], cmd[2]]
        for value in cmd[3]:
            pub.send(value)
        say("SENT")
    elif op == "send_gen":
        pub = chans["pub", cmd[1], cmd[2]]
        for i, size in enumerate(cmd[3]):
            pub.send(gen_payload(cmd[1], size, i))
        say("SENT")
    elif op == "send_seq":
        pub = chans["pub", cmd[1], cmd[2]]
        for i in range(cmd[3]):
            pub.send("m%d" % i)
        say("SENT")
    elif op == "recv":
        sub = chans["sub", cmd[1], cmd[2]]
        out = []
        for i in range(cmd[3]):
            r = recv_one(sub, cmd[4])
            if r[0] == "timeout":
                out.append(r)
                break
            out.append(fingerprint(r[1]))
        say("RECEIVED", repr(out))
    elif op == "recv_seq":
        sub = chans["sub", cmd[1], cmd[2]]
        out = []
        for i in range(cmd[3]):
            r = recv_one(sub, cmd[4])
            if r[0] == "timeout":
                break
            out.append(int(r[1][1:]))
        say("SEQ", repr(out))
    elif op == "pending":
        say("PENDING", chans["sub", cmd[1], cmd[2]].pending)
    elif op == "close":
        ctx.close()
        say("CLOSED")
    elif op == "wait_reason":
        deadline = time.time() + cmd[1]
        while not reasons and time.time() < deadline:
            yoton.process_events(0.05)
        say("REASON", repr(reasons))
    elif op == "timedouts":
        yoton.process_events()
        say("TIMEDOUTS", repr(timedouts))
    elif op == "exit":
        break
say("BYE")
"""
)


# -- helpers -----------------------------------------------------------------------


class Peer:
    """A yoton 2.x child process speaking the DRIVER command language."""

    def __init__(self, proc: Yoton2Proc) -> None:
        self.proc = proc
        self.n_conns = 0  # connections made by the child so far (its ``conns`` list)

    def cmd(self, *args: Any) -> None:
        self.proc.send_line(repr(args))

    def ask(self, reply: str, *args: Any, timeout: float = 15.0) -> str:
        self.cmd(*args)
        return self.proc.expect_line(reply, timeout)

    def bind(self) -> int:
        self.n_conns += 1
        return int(self.ask("BOUND", "bind", "localhost:0"))

    def connect(self, port: int) -> int:
        self.n_conns += 1
        ok, id2 = self.ask("CONNECTED", "connect", f"localhost:{port}").split()
        assert ok == "True", self.proc.describe()
        return int(id2)

    def wait_connected(self) -> int:
        """Wait until the connection bound last has its peer; return the peer's id."""
        ok, id2 = self.ask("CONNECTED", "wait_connected", self.n_conns - 1).split()
        assert ok == "True", self.proc.describe()
        return int(id2)

    def channel(self, role: str, kind: str, slot: str) -> None:
        self.ask("OK", role, kind, slot)

    def recv(self, kind: str, slot: str, n: int, timeout: float = 10.0) -> list[Any]:
        return ast.literal_eval(self.ask("RECEIVED", "recv", kind, slot, n, timeout, timeout=60))

    def reasons(self, timeout: float = 10.0) -> list[str]:
        return ast.literal_eval(self.ask("REASON", "wait_reason", timeout, timeout=timeout + 10))


@pytest.fixture
def peer() -> Iterator[Peer]:
    with run_yoton2(DRIVER, timeout=55) as proc:
        yield Peer(proc)


def link(peer: Peer, ctx: yoton.Context, we_bind: bool) -> yoton.Connection:
    """Connect ``ctx`` with the 2.x peer; return our connection once both ends are up."""
    if we_bind:
        conn = ctx.bind("localhost:0")
        assert conn.is_waiting
        assert peer.connect(conn.port1) == ctx.id
        wait_for(lambda: conn.is_connected, what="our bound connection to get its peer")
    else:
        port = peer.bind()
        conn = ctx.connect(f"localhost:{port}", timeout=5.0)
        assert peer.wait_connected() == ctx.id
    assert conn.is_connected
    return conn


# -- tests -------------------------------------------------------------------------


@pytest.mark.parametrize("we_bind", [True, False], ids=["we_bind", "2x_binds"])
def test_all_types_and_sizes_both_directions(peer: Peer, we_bind: bool) -> None:
    ctx = yoton.Context()
    try:
        subs = {k: yoton.SubChannel(ctx, f"from2x-{k}", t) for k, t in TYPES.items()}
        pubs = {k: yoton.PubChannel(ctx, f"to2x-{k}", t) for k, t in TYPES.items()}
        for kind in TYPES:
            peer.channel("sub", kind, f"to2x-{kind}")
            peer.channel("pub", kind, f"from2x-{kind}")
        conn = link(peer, ctx, we_bind)
        assert conn.id2 != 0 and conn.pid2 == peer.proc.pid

        obj_sizes = [1, 100, 9000, 100_000]
        sizes = {"txt": SIZES, "bin": SIZES, "obj": obj_sizes}
        special: dict[str, list[Any]] = {
            "txt": ["é", "😀" * 3, " ", "\x00\r\n"],
            "bin": [b"\x00", b"\xff" * 3, bytes(range(256))],
            "obj": [None, 0, False, "", [], {}, 2**63 - 1, -(2**63), 1.5, (None,)],
        }
        # ours -> 2.x
        for kind, pub in pubs.items():
            for i, size in enumerate(sizes[kind]):
                pub.send(gen_payload(kind, size, i))
            for value in special[kind]:
                pub.send(value)
        for kind in TYPES:
            n = len(sizes[kind]) + len(special[kind])
            got = peer.recv(kind, f"to2x-{kind}", n)
            expected = [fingerprint(gen_payload(kind, s, i)) for i, s in enumerate(sizes[kind])]
            expected += [fingerprint(v) for v in special[kind]]
            assert got == expected, f"{kind}: 2.x received something else"
        # 2.x -> ours
        for kind in TYPES:
            peer.ask("SENT", "send_gen", kind, f"from2x-{kind}", sizes[kind])
            peer.ask("SENT", "send", kind, f"from2x-{kind}", special[kind])
        for kind, sub in subs.items():
            got = recv_n(sub, len(sizes[kind]) + len(special[kind]))
            expected = [gen_payload(kind, s, i) for i, s in enumerate(sizes[kind])]
            assert got[: len(expected)] == expected
            assert got[len(expected) :] == special[kind]
            assert type(got[-1]) is type(special[kind][-1])
        assert conn.is_connected
    finally:
        ctx.close()


@pytest.mark.parametrize("we_bind", [True, False], ids=["we_bind", "2x_binds"])
def test_many_messages_in_order_both_directions(peer: Peer, we_bind: bool) -> None:
    ctx = yoton.Context()
    try:
        sub = yoton.SubChannel(ctx, "many-back")
        pub = yoton.PubChannel(ctx, "many")
        peer.channel("sub", "txt", "many")
        peer.channel("pub", "txt", "many-back")
        conn = link(peer, ctx, we_bind)
        for i in range(N_MANY):
            pub.send(f"m{i}")
        got = ast.literal_eval(peer.ask("SEQ", "recv_seq", "txt", "many", N_MANY, 10.0, timeout=60))
        assert got == list(range(N_MANY))
        peer.ask("SENT", "send_seq", "txt", "many-back", N_MANY, timeout=60)
        assert recv_n(sub, N_MANY, timeout=30) == [f"m{i}" for i in range(N_MANY)]
        assert sub.dropped == 0 and conn.stats.packages_dropped == 0
    finally:
        ctx.close()


@pytest.mark.parametrize("we_bind", [True, False], ids=["we_bind", "2x_binds"])
def test_our_close_is_seen_by_2x_as_close_from_other_end(peer: Peer, we_bind: bool) -> None:
    ctx = yoton.Context()
    conn = link(peer, ctx, we_bind)
    conn.close()
    assert conn.wait_closed(5)
    assert conn.close_reason == "Closed on command."
    # We now send the CLOSE package, which 2.x itself never did.
    assert peer.reasons() == ["Closed from other end."]
    ctx.close()


@pytest.mark.parametrize("we_bind", [True, False], ids=["we_bind", "2x_binds"])
def test_2x_close_is_seen_as_dropped_connection(peer: Peer, we_bind: bool) -> None:
    ctx = yoton.Context()
    seen: list[tuple[Any, str]] = []
    try:
        conn = link(peer, ctx, we_bind)
        conn.closed.bind(lambda c, reason: seen.append((c, reason)))
        peer.ask("CLOSED", "close")
        assert conn.wait_closed(10), "2.x closed, but our connection did not notice"
        # 2.x never sends CLOSE; it just closes its socket: EOF (possibly inside a
        # package, as it writes header and payload separately), or a reset when our
        # heartbeats were still unread in its receive buffer.
        reason = conn.close_reason
        assert reason is not None and reason.startswith("Other end dropped the connection")
        assert not conn.is_alive and ctx.connection_count == 0
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            yoton.process_events(0.05)
        assert seen == [(conn, reason)]
    finally:
        ctx.close()


def test_2x_heartbeats_keep_us_from_timing_out(peer: Peer) -> None:
    """An idle 2.x peer sends heartbeats (4/s); ours never reports timedout(True).

    The wait is for a number of heartbeat bytes (not a duration), and the
    timeout is set to 2 s, eight heartbeat periods, so a loaded machine does
    not make it flaky.
    """
    ctx = yoton.Context()
    flags: list[bool] = []
    try:
        conn = link(peer, ctx, we_bind=False)
        conn.timeout = 2.0
        conn.timedout.bind(lambda c, flag: flags.append(flag))
        start = conn.stats.bytes_received
        wait_for(
            lambda: conn.stats.bytes_received - start >= 12 * 56,
            timeout=20,
            what="a dozen heartbeats from the 2.x peer",
        )
        yoton.process_events()
        assert True not in flags
        assert conn.is_connected
        # Our heartbeats keep the 2.x side from timing out too (its timeout is 0.5 s).
        assert "True" not in peer.ask("TIMEDOUTS", "timedouts")
    finally:
        ctx.close()


def test_hop_2x_through_ours_to_2x() -> None:
    """2.x A <-> our B <-> 2.x C: pub/sub crosses our context in both directions."""
    ctx_b = yoton.Context()
    with run_yoton2(DRIVER, timeout=55) as pa, run_yoton2(DRIVER, timeout=55) as pc:
        a, c = Peer(pa), Peer(pc)
        try:
            a.channel("pub", "txt", "a2c")
            a.channel("sub", "obj", "c2a")
            c.channel("sub", "txt", "a2c")
            c.channel("pub", "obj", "c2a")
            link(a, ctx_b, we_bind=False)  # A binds, B connects
            link(c, ctx_b, we_bind=True)  # B binds, C connects
            texts = ["one", "twö", "x" * 70_000]
            a.ask("SENT", "send", "txt", "a2c", texts)
            assert c.recv("txt", "a2c", 3) == [fingerprint(t) for t in texts]
            value = gen_payload("obj", 50, 3)
            c.ask("SENT", "send", "obj", "c2a", [value, None, (1, 2)])
            expected = [fingerprint(value), ("value", None), ("value", (1, 2))]
            assert a.recv("obj", "c2a", 3) == expected
            # Nothing was delivered twice.
            assert a.ask("PENDING", "pending", "obj", "c2a") == "0"
            assert c.ask("PENDING", "pending", "txt", "a2c") == "0"
        finally:
            ctx_b.close()


def test_hop_ours_through_2x_to_ours() -> None:
    """Our A <-> 2.x B <-> our C: 2.x forwards our packages unchanged, both ways."""
    ctx_a, ctx_c = yoton.Context(), yoton.Context()
    with run_yoton2(DRIVER, timeout=55) as pb:
        b = Peer(pb)
        try:
            pub_a = yoton.PubChannel(ctx_a, "a2c", yoton.BINARY)
            sub_a = yoton.SubChannel(ctx_a, "c2a", yoton.OBJECT)
            sub_c = yoton.SubChannel(ctx_c, "a2c", yoton.BINARY)
            pub_c = yoton.PubChannel(ctx_c, "c2a", yoton.OBJECT)
            link(b, ctx_a, we_bind=True)  # A binds, B connects
            link(b, ctx_c, we_bind=False)  # B binds, C connects
            blobs = [gen_payload("bin", s, i) for i, s in enumerate([1, 1000, 200_000])]
            for blob in blobs:
                pub_a.send(blob)
            assert recv_n(sub_c, 3) == blobs
            value = gen_payload("obj", 500, 9)
            pub_c.send(value)
            pub_c.send(False)
            assert recv_n(sub_a, 2) == [value, False]
            assert sub_a.pending == 0 and sub_c.pending == 0
        finally:
            ctx_a.close()
            ctx_c.close()
