"""StateChannel between our contexts over TCP.

The protocol: docs/protocol.md#state; 2.x's defects fixed here:
docs/protocol.md#differences-from-2x, items 9 and 16.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

import yoton
from yoton_core import _state
from yoton_core._engine import get_engine
from yoton_core._eventloop import app
from yoton_core.testing import wait_for as wait_until

pytestmark = pytest.mark.timeout(60)

GENEROUS = 10.0


class JoinWatch:
    """Tells when everything a join set off at the StateChannels is over.

    A join makes StateChannels re-send their state: at once (the two ends of
    the new connection) or after a random delay (``_state.RESEND_DELAY``),
    unless an equal state arrived in the meantime. To count those re-sends
    without waiting out the delay, :meth:`settle` waits until

    1. every StateChannel concerned has handled the join's NEW_CONNECTION
       (the ``watch`` fixture wraps ``_on_new_peer`` to tell :meth:`note_handled`);
    2. every delayed re-send that was started is done, sent or suppressed
       (this object stands in for the engine that ``_state`` spawns them on);
    3. a marker that each possible sender published after that has reached
       every receiver. Packages from one source arrive in the order they were
       sent, so every re-send has arrived (and been deposited) before it.

    Tests that count the re-sends of a join call :meth:`hold` first and
    :meth:`release` after the join: the delayed re-sends then run one at a
    time, in the order of their random delays, each once the previous one is
    over and has arrived everywhere. The count then shows what the protocol
    decides (who answers at once, who stays quiet because a re-send arrived),
    not how the machine's load spreads the timers: all these contexts share
    one engine thread, and a loaded machine that deschedules it for longer
    than ``_state.RESEND_DELAY`` spans fires every timer in one batch, before
    any re-send is read (8 of 8 holders answered a join at a relay).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handled: set[tuple[int, int]] = set()
        self._started = 0
        self._done = 0
        self._round = 0
        self._pubs: dict[int, yoton.PubChannel] = {}
        self._subs: dict[int, yoton.SubChannel] = {}
        # Delayed re-sends kept back by hold() until release(): (fn, args).
        self._held: list[tuple[Callable[..., Awaitable[object]], tuple[Any, ...]]] | None = None

    def note_handled(self, ctx_id: int, joiner_id: int) -> None:
        with self._lock:
            self._handled.add((ctx_id, joiner_id))

    def forget_handled(self) -> None:
        """Forget what was handled (a late channel's request is handled like a join)."""
        with self._lock:
            self._handled.clear()

    def _all_handled(self, want: set[tuple[int, int]]) -> bool:
        with self._lock:
            return want <= self._handled

    def spawn(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """``get_engine().spawn`` as ``_state`` calls it, counting the task."""
        with self._lock:
            if self._held is not None:
                self._held.append((async_fn, args))
                return
            self._started += 1

        async def counted() -> None:
            try:
                await async_fn(*args)
            finally:
                with self._lock:
                    self._done += 1

        get_engine().spawn(counted)

    def _idle(self) -> bool:
        with self._lock:
            return self._done == self._started

    def wait_handled(self, handled: Iterable[tuple[yoton.Context, yoton.Context]]) -> None:
        """Wait until the StateChannel of each ``context`` handled ``joiner``'s NEW_CONNECTION.

        ``handled``: (context, joiner) pairs. The channel must exist before the
        NEW_CONNECTION arrives, i.e. before ``joiner`` connects.
        """
        want = {(ctx.id, joiner.id) for ctx, joiner in handled}
        wait_until(lambda: self._all_handled(want), GENEROUS, "NEW_CONNECTION to be handled")

    def settle(
        self,
        handled: Iterable[tuple[yoton.Context, yoton.Context]],
        senders: Iterable[yoton.Context],
        receivers: Iterable[yoton.Context],
    ) -> None:
        """Wait until the joins are over and their re-sends arrived at ``receivers``.

        Args:
            handled: (context, joiner) pairs: the StateChannel of ``context``
                must have handled the NEW_CONNECTION of ``joiner``.
            senders: every context whose StateChannel may re-send.
            receivers: where the re-sends must have arrived.
        """
        self.wait_handled(handled)
        wait_until(self._idle, GENEROUS, "the delayed re-sends to be done")
        self._passed(senders, receivers)

    def hold(self) -> None:
        """Keep the delayed re-sends from now on until :meth:`release`."""
        with self._lock:
            self._held = []

    def release(
        self,
        handled: Iterable[tuple[yoton.Context, yoton.Context]],
        senders: Iterable[yoton.Context],
        receivers: Iterable[yoton.Context],
    ) -> int:
        """Run the held re-sends one at a time, shortest delay first, without the delay.

        First waits as :meth:`settle` does for ``handled`` and for what
        ``senders`` sent at once to reach ``receivers``. Then each held re-send
        runs (it sends, or stays quiet as the protocol decides) and a marker
        from its context must reach ``receivers`` before the next one runs.
        Returns how many were held.
        """
        senders, receivers = list(senders), list(receivers)
        self.wait_handled(handled)
        self._passed(senders, receivers)
        with self._lock:
            held, self._held = self._held or [], None
        for async_fn, args in sorted(held, key=lambda task: task[1][-1]):  # (..., delay)
            self.spawn(async_fn, *args[:-1], 0.0)
            wait_until(self._idle, GENEROUS, "a released re-send to be done")
            self._passed([async_fn.__self__.context], receivers)  # type: ignore[attr-defined]
        return len(held)

    def _passed(self, senders: Iterable[yoton.Context], receivers: Iterable[yoton.Context]) -> None:
        """Wait until what ``senders`` sent so far reached every one of ``receivers``."""
        senders, receivers = list(senders), list(receivers)
        subs = [self._marker_sub(ctx) for ctx in receivers]
        self._round += 1
        for ctx in senders:
            self._marker_pub(ctx).send([self._round, ctx.id])
        for ctx, sub in zip(receivers, subs, strict=True):
            missing = {s.id for s in senders}
            while missing:
                marker = sub.recv(GENEROUS)
                assert marker is not None, f"markers from {missing} did not reach {ctx}"
                if marker[0] == self._round:  # (an earlier round's can still be queued)
                    missing.discard(marker[1])

    def _marker_pub(self, ctx: yoton.Context) -> yoton.PubChannel:
        if ctx.id not in self._pubs:
            self._pubs[ctx.id] = yoton.PubChannel(ctx, "marker", yoton.OBJECT)
        return self._pubs[ctx.id]

    def _marker_sub(self, ctx: yoton.Context) -> yoton.SubChannel:
        if ctx.id not in self._subs:
            self._subs[ctx.id] = yoton.SubChannel(ctx, "marker", yoton.OBJECT)
        return self._subs[ctx.id]


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> JoinWatch:
    """A :class:`JoinWatch` on every StateChannel of the test."""
    w = JoinWatch()
    on_new_peer = _state.StateChannel._on_new_peer

    def watched(self: Any, source_id: int, recv_seq: int) -> None:
        on_new_peer(self, source_id, recv_seq)
        w.note_handled(self.context.id, source_id)

    monkeypatch.setattr(_state.StateChannel, "_on_new_peer", watched)
    monkeypatch.setattr(_state, "get_engine", lambda: w)
    return w


def new(made_contexts: list[yoton.Context], n: int = 1) -> list[yoton.Context]:
    made = [yoton.Context() for _ in range(n)]
    made_contexts += made
    return made


def join(a: yoton.Context, b: yoton.Context) -> None:
    """b connects to a (a binds port 0)."""
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=GENEROUS)


def reads(ch: yoton.StateChannel, value: object) -> Callable[[], bool]:
    """A predicate for wait_until: ``ch`` holds ``value`` (one per channel of a loop)."""
    return lambda: ch.recv() == value


def count_arrivals(ch: yoton.StateChannel) -> list[object]:
    """Record every state package deposited into ``ch`` (wraps its deposit)."""
    seen: list[object] = []
    original = ch._deposit

    def deposit(pkg):
        seen.append(pkg.data)
        original(pkg)

    ch._deposit = deposit  # type: ignore[method-assign]
    return seen


# -- the basics ----------------------------------------------------------------------------


def test_recv_returns_the_current_state_without_blocking(made_contexts):
    (ctx,) = new(made_contexts)
    text = yoton.StateChannel(ctx, "t")
    binary = yoton.StateChannel(ctx, "b", yoton.BINARY)
    obj = yoton.StateChannel(ctx, "o", yoton.OBJECT)
    assert (text.recv(), binary.recv(), obj.recv()) == ("", b"", None)
    assert text.recv(True) == ""  # block is accepted and ignored: nothing to wait for
    text.send("on")
    obj.send({"k": [1, 2]})
    assert text.recv() == "on" and obj.recv() == {"k": [1, 2]}
    assert text.pending == 0
    with pytest.raises(TypeError):
        text.recv("yes")


def test_state_goes_both_ways_and_emits_received(made_contexts):
    a, b = new(made_contexts, 2)
    join(a, b)
    sa = yoton.StateChannel(a, "light")
    sb = yoton.StateChannel(b, "light")
    got = []
    sb.received.bind(lambda ch: got.append(ch.recv()))
    sa.send("green")
    wait_until(lambda: sb.recv() == "green")
    app.process_events()
    assert got == ["green"]
    sb.send("red")
    wait_until(lambda: sa.recv() == "red")
    app.process_events()
    assert got == ["green"]  # b's own send does not emit received at b


def _joined_pair(made_contexts, watch):
    """Two contexts with a StateChannel "s" each, b connected to a, the join over.

    The binding end answers NEW_CONNECTION with its state (send_last): when
    that comes after the test's first send, it is one more package. The
    channels exist before the join, and the join is over before we return.
    """
    a, b = new(made_contexts, 2)
    sa = yoton.StateChannel(a, "s")
    sb = yoton.StateChannel(b, "s")
    join(a, b)
    watch.wait_handled([(a, b)])
    return a, b, sa, sb


def test_empty_message_is_ignored(made_contexts, watch):
    """2.x raised AttributeError for send("") after a non-empty state (item 9)."""
    a, _b, sa, sb = _joined_pair(made_contexts, watch)
    sa.send("value")
    wait_until(lambda: sb.recv() == "value")
    binary = yoton.StateChannel(a, "s2", yoton.BINARY)  # (made late: it asks for the state)
    sent = a.statistics()["sent"]
    sa.send("")
    binary.send(b"")
    assert sa.recv() == "value" and binary.recv() == b""
    assert a.statistics()["sent"] == sent  # nothing went out


def test_an_unchanged_state_is_not_sent_again(made_contexts, watch):
    _a, _b, sa, sb = _joined_pair(made_contexts, watch)
    arrivals = count_arrivals(sb)
    sa.send("x")
    wait_until(lambda: sb.recv() == "x")
    sa.send("x")  # unchanged: nothing goes out
    sa.send("y")  # a marker: packages of one source arrive in the order sent
    wait_until(lambda: sb.recv() == "y")
    assert arrivals == [b"x", b"y"]  # a re-sent "x" would be before the "y"


def pump_until(predicate: Callable[[], bool], what: str) -> None:
    """Run the event loop (where ``received`` is emitted) until ``predicate``."""

    def pumped() -> bool:
        app.process_events()
        return predicate()

    wait_until(pumped, GENEROUS, what)


def test_send_last_is_an_arrival_everywhere_a_joins_resend_is_not(made_contexts, watch):
    """2.x re-sent on send_last() and programs use it to re-announce their state:
    ``received`` must fire at every peer, also those that hold the state. The
    re-sends a join sets off stay quiet where the state is known."""
    a, b, sa, sb = _joined_pair(made_contexts, watch)
    got: list[str] = []
    sb.received.bind(lambda ch: got.append(ch.recv()))
    sa.send("x")
    pump_until(lambda: got == ["x"], "the state to arrive")
    sa.send_last()
    pump_until(lambda: len(got) == 2, "send_last() to arrive as news")
    assert got == ["x", "x"] and sb.recv() == "x"
    # A context joins: a (the binding end) re-sends at once, b after a delay
    # unless a's came first. b already holds the state: no arrival there.
    (c,) = new(made_contexts)
    sc = yoton.StateChannel(c, "s")
    join(a, c)
    watch.settle([(a, c), (b, c)], senders=[a, b], receivers=[b, c])
    assert sc.recv() == "x"
    app.process_events()
    assert got == ["x", "x"]
    # And send_last() from the newcomer is news at both others.
    got_a: list[str] = []
    sa.received.bind(lambda ch: got_a.append(ch.recv()))
    sc.send_last()
    pump_until(lambda: got_a == ["x"] and len(got) == 3, "the newcomer's send_last()")


def test_send_on_a_closed_channel_raises(made_contexts):
    (ctx,) = new(made_contexts)
    ch = yoton.StateChannel(ctx, "s")
    ch.close()
    with pytest.raises(OSError):
        ch.send("x")


# -- joining later ----------------------------------------------------------------------------


def test_state_set_before_connecting_reaches_contexts_that_join_later(made_contexts):
    """Across several hops, through contexts with and without a StateChannel."""
    a, b, relay, c, d = new(made_contexts, 5)
    sa = yoton.StateChannel(a, "cfg", yoton.OBJECT)
    sa.send({"mode": "fast"})  # set before any connection exists
    join(a, b)
    sb = yoton.StateChannel(b, "cfg", yoton.OBJECT)  # created after its context joined
    join(b, relay)  # relay: no StateChannel on this slot
    sc = yoton.StateChannel(c, "cfg", yoton.OBJECT)
    join(relay, c)
    sd = yoton.StateChannel(d, "cfg", yoton.OBJECT)
    join(c, d)
    for ch in (sb, sc, sd):
        wait_until(reads(ch, {"mode": "fast"}), what=f"state at {ch.context}")


def test_a_new_channel_on_a_connected_context_gets_the_state_on_the_next_join(made_contexts):
    a, b, c = new(made_contexts, 3)
    join(a, b)
    sa = yoton.StateChannel(a, "s")
    sa.send("hello")
    sc = yoton.StateChannel(c, "s")
    join(b, c)  # b has no channel: a answers c's NEW_CONNECTION
    wait_until(lambda: sc.recv() == "hello")


def _state_passed(sender: yoton.Context, receivers: list[yoton.Context]) -> None:
    """Wait until what ``sender`` sent so far has reached ``receivers`` (a marker
    after it has: one source's packages arrive in the order sent)."""
    subs = [yoton.SubChannel(ctx, "passed", yoton.OBJECT) for ctx in receivers]
    yoton.PubChannel(sender, "passed", yoton.OBJECT).send("marker")
    for sub in subs:
        assert sub.recv(GENEROUS) == "marker"


@pytest.mark.parametrize("hops", [1, 2])
def test_a_channel_made_after_its_context_joined_gets_the_state(made_contexts, watch, hops):
    """A late channel is a late joiner: it asks, and our peers answer at once (it
    read the empty message until some peer sent again, or a context joined)."""
    a, relay, c = new(made_contexts, 3)
    sa = yoton.StateChannel(a, "s", yoton.OBJECT)
    if hops == 1:
        join(a, c)
    else:
        join(a, relay)  # no StateChannel at the relay
        join(relay, c)
    # The join is over (a answered c's NEW_CONNECTION, with nothing yet).
    watch.settle([(a, c)], senders=[a], receivers=[c])
    sa.send({"set": "before c had a channel"})
    _state_passed(a, [c])  # it went by c's context, which had no channel to keep it
    sc = yoton.StateChannel(c, "s", yoton.OBJECT)
    got: list[object] = []
    sc.received.bind(lambda ch: got.append(ch.recv()))
    wait_until(lambda: sc.recv() == {"set": "before c had a channel"}, GENEROUS, "the answer")
    pump_until(lambda: got == [{"set": "before c had a channel"}], "received at c")


def test_a_late_channel_costs_about_one_answer(made_contexts, watch):
    (relay,) = new(made_contexts)  # no StateChannel here: the holders answer
    holding = _holders(made_contexts, watch, relay, 6, [])
    (late,) = new(made_contexts)
    join(relay, late)
    watch.settle([(h, late) for h in holding], senders=holding, receivers=[late])
    _state_passed(holding[0], [late])
    watch.forget_handled()
    watch.hold()
    ch = yoton.StateChannel(late, "s")  # made after its context joined
    arrivals = count_arrivals(ch)
    # The holders are all far from ``late``: each waits, the first answers.
    everyone = [*holding, late]
    held = watch.release([(h, late) for h in holding], senders=holding, receivers=everyone)
    assert held == 6
    assert ch.recv() == "shared"
    assert len(arrivals) == 1, arrivals  # each holder answering: 6


def _holders(made_contexts, watch, hub, n, holding):
    """n contexts around ``hub`` that all hold the same state, their joins over.

    ``holding``: the contexts that already have a StateChannel on the slot.
    Returns those and the n new ones.
    """
    holding = list(holding)
    handled = []
    chans: list[yoton.StateChannel] = []
    for ctx in new(made_contexts, n):
        join(hub, ctx)
        handled += [(h, ctx) for h in holding]
        ch = yoton.StateChannel(ctx, "s")
        if not chans:
            ch.send("shared")
        chans.append(ch)
        holding.append(ctx)
    for ch in chans:
        wait_until(reads(ch, "shared"))
    # No re-send of the set-up may be on its way (through the hub) when the
    # joiner of the test comes.
    watch.settle(handled, senders=holding, receivers=[hub])
    return holding


def test_a_join_at_a_holder_does_not_flood(made_contexts, watch):
    """2.x made every holder rebroadcast on NEW_CONNECTION: N messages per join."""
    (hub,) = new(made_contexts)
    hub_ch = yoton.StateChannel(hub, "s")
    holding = _holders(made_contexts, watch, hub, 6, [hub])
    assert hub_ch.recv() == "shared"
    (joiner,) = new(made_contexts)
    ch = yoton.StateChannel(joiner, "s")
    arrivals = count_arrivals(ch)
    watch.hold()
    join(hub, joiner)
    # The hub (the binding end) answers at once; the six others wait and then
    # stay quiet, as the hub's answer reached them.
    everyone = [*holding, joiner]
    held = watch.release([(h, joiner) for h in holding], senders=holding, receivers=everyone)
    assert held == 6
    assert ch.recv() == "shared"
    assert len(arrivals) == 1, arrivals  # 2.x: 7


def test_a_join_at_a_relay_does_not_flood(made_contexts, watch):
    (relay,) = new(made_contexts)  # no StateChannel here: the holders answer, once
    holding = _holders(made_contexts, watch, relay, 8, [])
    (joiner,) = new(made_contexts)
    ch = yoton.StateChannel(joiner, "s")
    arrivals = count_arrivals(ch)
    watch.hold()
    join(relay, joiner)
    # Every holder waits; the first to answer reaches the others, which stay quiet.
    everyone = [*holding, joiner]
    held = watch.release([(h, joiner) for h in holding], senders=holding, receivers=everyone)
    assert held == 8
    assert ch.recv() == "shared"
    assert len(arrivals) == 1, arrivals  # 2.x: 8


# -- agreement ------------------------------------------------------------------------------


@pytest.mark.parametrize("newer_side", ["binding", "connecting"])
def test_two_networks_with_different_states_agree_after_joining(made_contexts, watch, newer_side):
    """The most recently set state wins everywhere, whatever the arrival order."""
    x1, x2, y1, y2 = new(made_contexts, 4)
    join(x1, x2)
    join(y1, y2)
    xs = [yoton.StateChannel(c, "s") for c in (x1, x2)]
    ys = [yoton.StateChannel(c, "s") for c in (y1, y2)]
    older, newer = (ys, xs) if newer_side == "binding" else (xs, ys)
    older[1].send("old")
    wait_until(lambda: older[0].recv() == "old")
    # The newer state must get a later version: its network has its own clock.
    wait_until(lambda: _state._wall_version() > older[1]._version, what="the wall clock")
    newer[1].send("new")
    wait_until(lambda: newer[0].recv() == "new")
    join(x1, y1)
    for ch in xs + ys:
        wait_until(reads(ch, "new"), what=f"agreement at {ch.context}")
    everyone = [x1, x2, y1, y2]
    watch.settle([(c, y1) for c in (x1, x2, y2)], senders=everyone, receivers=everyone)
    assert [ch.recv() for ch in xs + ys] == ["new"] * 4  # and it stays that way


def test_a_stale_resend_does_not_undo_a_newer_state(made_contexts, watch):
    a, _b, sa, sb = _joined_pair(made_contexts, watch)
    sa.send("one")
    wait_until(lambda: sb.recv() == "one")
    stale_version, stale_data = sa._version, sa._data
    sa.send("two")
    wait_until(lambda: sb.recv() == "two")
    # Replay the old package (as a re-send crossing a newer set would arrive).
    from yoton_core._wire import Package

    arrivals = count_arrivals(sb)
    a._send_package(Package(stale_data, sa._slot_out, a.id, 0, 0, stale_version))
    sa.send_last()  # a marker sent after the stale package
    wait_until(lambda: len(arrivals) == 2)
    assert arrivals == [b"one", b"two"]
    assert sb.recv() == "two" and sa.recv() == "two"
