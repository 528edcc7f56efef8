"""An inbox keeps its payloads' recv_seqs as runs (_inbox.py), not one per message.

The order across a context's channels (``select_sub_channel``) rests on it,
so it is checked against the plain model -- a list of ``(recv_seq, payload)``
-- through any mix of what changes an inbox: the router's deposits (stretches
of consecutive recv_seqs, or with gaps where other channels got theirs), a
full inbox's discards under both policies, and reads, with the runs already
read dropped on the way.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import yoton
from yoton_core._decoder import Run
from yoton_core._wire import CONTROL, Package
from yoton_core.testing import wait_for

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 40), st.integers(0, 3)),  # n, gap before
        st.tuples(st.just("read"), st.integers(1, 30), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([(50, "old"), (50, "new"), (10_000, "old")]))
def test_the_runs_give_every_payload_its_recv_seq(
    steps: list[tuple[str, int, int]], queue: tuple[int, str]
) -> None:
    ctx = yoton.Context(queue_params=queue)
    try:
        sub = yoton.SubChannel(ctx, "inbox", yoton.BINARY)
        assert sub._slot_in is not None
        model: list[tuple[int, bytes]] = []
        rseq = 0
        for op, n, gap in steps:
            if op == "read":
                for _ in range(min(n, len(model))):
                    assert sub.recv(False) == model.pop(0)[1]
                continue
            rseq += gap  # (packages for other channels in between)
            for _ in range(n):
                rseq += 1
                pkg = Package(b"%d" % rseq, sub._slot_in, 7, rseq)
                pkg.recv_seq = rseq
                with ctx._lock:
                    sub._deposit(pkg)  # as the router does, under the context lock
                if len(model) < queue[0]:
                    model.append((rseq, pkg.data))
                elif queue[1] == "old":
                    model.pop(0)
                    model.append((rseq, pkg.data))
            with ctx._lock:
                assert list(sub._queue) == [data for _seq, data in model]
                assert [sub._seq_at(i) for i in range(len(model))] == [s for s, _ in model]
                for ref in {0, rseq, rseq // 2, *(s for s, _ in model[:3])}:
                    assert sub._count_upto(ref) == sum(s <= ref for s, _ in model)
            # The runs of what was read are dropped (from 32 runs on).
            unread = len({s - i for i, (s, _) in enumerate(model)})  # stretches unread
            assert len(sub._run_index) == len(sub._run_seq) <= max(32, unread + 1)
    finally:
        ctx.close()


def test_a_long_interleaving_is_read_back_in_arrival_order(contexts: Any) -> None:
    # More switches between channels than the runs kept before trimming, read
    # while more keeps coming.
    a, b = contexts(2)
    pubs = {k: yoton.PubChannel(a, k) for k in "xyz"}
    subs = {k: yoton.SubChannel(b, k) for k in "xyz"}
    server = a.bind("localhost:0")
    b.connect(f"localhost:{server.port1}", timeout=5)
    wait_for(lambda: server.is_connected, what="the link")
    sent: list[str] = []
    got: list[str] = []
    for rnd in range(8):
        for i, k in enumerate("xyxzyzzxyx" * 10):
            pubs[k].send(f"{k}{rnd}.{i}")
            sent.append(f"{k}{rnd}.{i}")
        wait_for(lambda: sum(s.pending for s in subs.values()) + len(got) == len(sent))
        for _ in range(40):  # read part of it, then more comes
            ch = yoton.select_sub_channel(*subs.values())
            if ch is None:
                break
            got.extend(ch.recv_selected())
    while (ch := yoton.select_sub_channel(*subs.values())) is not None:
        got.extend(ch.recv_selected())
    assert got == sent
    # The runs of what was read go with the next deposit.
    for k, pub in pubs.items():
        pub.send(f"{k}.last")
    wait_for(lambda: all(s.pending == 1 for s in subs.values()))
    assert max(len(s._run_index) for s in subs.values()) <= 32


@pytest.mark.parametrize("mode", ["old", "new"])
def test_select_after_discards_still_orders_what_is_left(contexts: Any, mode: str) -> None:
    a = contexts()
    b = contexts(queue_params=(20, mode))
    x, y = yoton.PubChannel(a, "x"), yoton.PubChannel(a, "y")
    sx, sy = yoton.SubChannel(b, "x"), yoton.SubChannel(b, "y")
    server = a.bind("localhost:0")
    b.connect(f"localhost:{server.port1}", timeout=5)
    wait_for(lambda: server.is_connected, what="the link")
    for i in range(50):
        (x if i % 5 else y).send(f"{i}")
    wait_for(lambda: sx.pending == 20 and sy.pending == 10)
    got: list[int] = []
    while (ch := yoton.select_sub_channel(sx, sy)) is not None:
        got.extend(int(m) for m in ch.recv_selected())
    assert got == sorted(got) and len(got) == 30
    assert sx.dropped == 20


# -- through the router: stretches noted per batch, discards, runs in one step ----------

#: A batch: packages for channel 0-2 or for a slot nobody listens on (-1).
batch = st.lists(st.tuples(st.integers(-1, 2), st.integers(1, 12)), min_size=1, max_size=6)
router_ops = st.lists(
    st.one_of(
        st.tuples(st.just("route"), batch),  # through Router._route, package by package
        st.tuples(st.just("run"), st.integers(-1, 2), st.integers(1, 40)),  # _route_run
        st.tuples(st.just("again"), st.integers(1, 30)),  # the last seqs once more
        st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 30)),
        st.tuples(st.just("select"), st.just(0)),
    ),
    max_size=25,
)


@pytest.mark.parametrize("queue", [(24, "old"), (24, "new"), (10_000, "old")])
def test_the_router_keeps_the_arrival_order_across_channels(
    contexts: Any, queue: tuple[int, str]
) -> None:
    # The plain model: every package the router takes (not a duplicate) gets
    # the next recv_seq, then goes to its channel's inbox under the discard
    # policy. The inboxes must hold the same payloads with the same recv_seqs,
    # and select_sub_channel must read them back in that order. Batches are
    # handed to the router as a stream link does (b has no channel that asks
    # for joins: nothing else arrives meanwhile).
    a = contexts()
    b = contexts(queue_params=queue)
    server = a.bind("localhost:0")
    conn = b.connect(f"localhost:{server.port1}", timeout=5)
    wait_for(lambda: server.is_connected, what="the link")
    n, mode = queue
    sources = iter(range(0xC0DE0000, 0xC0DE0000 + 10_000))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=router_ops)
    def check(steps: list[tuple[Any, ...]]) -> None:
        source = next(sources)  # a fresh source each example
        subs = [yoton.SubChannel(b, f"order{source}.{i}", yoton.BINARY) for i in range(3)]
        try:
            route_and_compare(b, conn, subs, steps, n, mode, source)
        finally:
            for sub in subs:
                sub.close()

    check()


def route_and_compare(
    b: yoton.Context, conn: Any, subs: list[Any], steps: list[Any], n: int, mode: str, source: int
) -> None:
    model: list[list[tuple[int, bytes]]] = [[], [], []]
    seq = 0
    rseq = b._recv_seq
    dropped = [0, 0, 0]

    def slot_of(target: int) -> int:
        return subs[target]._slot_in if target >= 0 else subs[0]._slot_in ^ 1

    def taken(target: int, payload: bytes) -> None:
        nonlocal rseq
        rseq += 1
        if target < 0:
            return
        inbox = model[target]
        if len(inbox) >= n:
            dropped[target] += 1
            if mode == "new":
                return
            inbox.pop(0)
        inbox.append((rseq, payload))

    for step in steps:
        if step[0] == "route":
            flat: list[Any] = []
            for target, count in step[1]:
                for _ in range(count):
                    seq += 1
                    flat += [(CONTROL, slot_of(target), source, seq, 0, 0, 4), b"%d" % seq]
                    taken(target, b"%d" % seq)
            b._route(conn, flat)
        elif step[0] == "run":
            _op, target, count = step
            payloads = [b"%d" % (seq + 1 + i) for i in range(count)]
            b._route_run(
                conn, Run((CONTROL, slot_of(target), source, seq + 1, 0, 0, 4, count)), payloads
            )
            for payload in payloads:
                taken(target, payload)
            seq += count
        elif step[0] == "again":  # duplicates: dropped, no recv_seq
            first = max(1, seq - step[1] + 1)
            if first <= seq:
                payloads = [b"dup"] * (seq - first + 1)
                b._route_run(
                    conn,
                    Run((CONTROL, slot_of(0), source, first, 0, 0, 3, len(payloads))),
                    payloads,
                )
        elif step[0] == "read":
            _op, target, count = step
            for _ in range(min(count, len(model[target]))):
                assert subs[target].recv(False) == model[target].pop(0)[1]
        else:  # read everything back through select_sub_channel, in arrival order
            want = sorted(item for inbox in model for item in inbox)
            got = []
            while (ch := yoton.select_sub_channel(*subs)) is not None:
                got += ch.recv_selected()
            assert got == [payload for _rseq, payload in want]
            model = [[], [], []]
        with b._lock:
            for sub, inbox in zip(subs, model, strict=True):
                assert list(sub._queue) == [payload for _rseq, payload in inbox]
                assert [sub._seq_at(i) for i in range(len(inbox))] == [r for r, _ in inbox]
    assert [sub.dropped for sub in subs] == dropped
