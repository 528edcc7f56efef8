"""A run routed in one step (``Router._route_run``) ends as routed package by package.

The stream decoder hands the context a publisher's stream as runs: one
source, slot and destination, seqs counting up by one (``_decoder.Run``).
Where a leaf context only appends payloads to one plain inbox, the router does
that at once; everywhere else it routes the run's packages one by one. Each
test routes the same run into two identical set-ups, once in one step and once
expanded by hand through ``Router._route``, and compares everything a defect
would change: what the inboxes hold, in what order, the routing counters,
what was dropped, and what was passed on to other contexts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import yoton
from yoton_core import _fan, _routing
from yoton_core._decoder import Run, expand_run
from yoton_core._routing import DELIVER_RUN_MIN
from yoton_core._stream import StreamConnection, link_of
from yoton_core._wire import CONTROL, SLOT_CONTEXT
from yoton_core.testing import recv_n, wait_for

SOURCE = 0xAAAA0001


def join(server: yoton.Context, client: yoton.Context) -> tuple[Any, Any]:
    s = server.bind("localhost:0")
    c = client.connect(f"localhost:{s.port1}", timeout=5)
    wait_for(lambda: s.is_connected, what="the bound side to get its peer")
    return s, c


def run_of(
    slot: int | None, first: int, k: int, dest: int = 0, source: int = SOURCE
) -> tuple[Run, list]:
    assert slot is not None  # (a subscriber's _slot_in)
    payloads = [f"{source:x}-{first + i:06d}".encode() for i in range(k)]
    return Run((CONTROL, slot, source, first, dest, 0, len(payloads[0]), k)), payloads


def route(ctx: yoton.Context, conn: Any, run: Run, payloads: list, at_once: bool) -> None:
    if at_once:
        ctx._route_run(conn, run, payloads)
    else:
        ctx._route(conn, expand_run(run, payloads))


def outcome(ctx: yoton.Context, sub: yoton.SubChannel) -> dict[str, Any]:
    # (other counters move with the joins' context messages, which come when they come)
    dups = ctx.statistics()["duplicates_dropped"]
    return {"inbox": sub.recv_all(), "dropped": sub.dropped, "duplicates_dropped": dups}


def both_ways(scenario: Callable[[bool], dict[str, Any]]) -> dict[str, Any]:
    at_once = scenario(True)
    assert at_once == scenario(False)
    return at_once


def test_a_leaf_gets_a_fresh_run_whole(contexts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    routed: list[Any] = []

    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        if at_once:  # in one step: not a package through the general loop
            monkeypatch.setattr(b, "_route", lambda conn, flat: routed.append(flat))
        route(b, conn, *run_of(sub._slot_in, 1, 40), at_once)
        route(b, conn, *run_of(sub._slot_in, 41, 10), at_once)
        monkeypatch.undo()
        return outcome(b, sub)

    got = both_ways(scenario)
    assert routed == []
    assert got["inbox"] == [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 51)]
    assert got["duplicates_dropped"] == 0


def test_a_run_with_seqs_already_seen_drops_the_duplicates(contexts: Any) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        route(b, conn, *run_of(sub._slot_in, 1, 20), at_once)
        route(b, conn, *run_of(sub._slot_in, 11, 20), at_once)  # 11..20 came already
        return outcome(b, sub)

    got = both_ways(scenario)
    assert got["inbox"] == [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 31)]
    assert got["duplicates_dropped"] == 10


@pytest.mark.parametrize("mode", ["old", "new"])
def test_a_run_larger_than_the_room_in_the_inbox_follows_the_discard_policy(
    contexts: Any, mode: str
) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a = contexts()
        b = contexts(queue_params=(25, mode))
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        route(b, conn, *run_of(sub._slot_in, 1, 20), at_once)
        route(b, conn, *run_of(sub._slot_in, 21, 20), at_once)
        return outcome(b, sub)

    got = both_ways(scenario)
    assert got["dropped"] == 15 and len(got["inbox"]) == 25


def test_a_run_for_a_slot_nobody_listens_on_is_counted(contexts: Any) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        assert sub._slot_in is not None
        route(b, conn, *run_of(sub._slot_in + 1, 1, 12), at_once)
        return {**outcome(b, sub), "unroutable": b._n_unroutable}

    assert both_ways(scenario)["unroutable"] == 12


def test_a_run_of_our_own_packages_or_for_another_context_is_not_delivered(
    contexts: Any,
) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        route(b, conn, *run_of(sub._slot_in, 1, 12, source=b.id), at_once)  # came back
        route(b, conn, *run_of(sub._slot_in, 1, 12, dest=0xDEAD), at_once)  # not ours
        return outcome(b, sub)

    assert both_ways(scenario)["inbox"] == []


def relay_line(contexts: Any) -> tuple[yoton.Context, Any, yoton.SubChannel, yoton.SubChannel]:
    """a -> relay -> c: the relay, its connection from a, and a subscriber in each of relay, c."""
    a, relay, c = contexts(3)
    _s, from_a = join(a, relay)
    join(relay, c)
    here = yoton.SubChannel(relay, "runs", yoton.BINARY)
    there = yoton.SubChannel(c, "runs", yoton.BINARY)
    return relay, from_a, here, there


def test_a_relay_passes_a_run_on_and_delivers_it(contexts: Any) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        relay, from_a, here, there = relay_line(contexts)
        route(relay, from_a, *run_of(here._slot_in, 1, 30), at_once)
        return {**outcome(relay, here), "there": recv_n(there, 30, timeout=10)}

    got = both_ways(scenario)
    assert got["there"] == got["inbox"] == [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 31)]


def test_a_relay_passes_a_run_on_in_one_step(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every link a stream queue of ours: the run's frames are packed once and
    # queued on each other link at once (Router._relay_run, _fan.push_frames).
    relay, from_a, here, there = relay_line(contexts)
    pushed: list[int] = []
    real = _fan.push_frames

    def spy(link: Any, frames: list[bytes]) -> bool:
        pushed.append(len(frames))
        return real(link, frames)

    monkeypatch.setattr(_routing, "push_frames", spy)
    relay._route_run(from_a, *run_of(here._slot_in, 1, 30))
    assert pushed == [30]  # (one other link: to c)
    assert relay._routes[SOURCE] is from_a  # the way back to the source, learned
    expected = [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 31)]
    assert recv_n(there, 30, timeout=10) == expected == here.recv_all()
    to_c = next(conn for conn in relay._connected if conn is not from_a)
    assert isinstance(to_c, StreamConnection)
    to_c.flush(5)  # counted as pushed, as written: nothing missing, nothing twice
    assert link_of(to_c)._retired() == link_of(to_c)._pushed_now()


def test_a_link_without_room_for_a_relayed_run_takes_it_package_by_package(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # push_frames refuses a run past the queue limit (nothing queued); the
    # relay then hands the link each package through send_package, with the
    # headers the packages came with.
    relay, from_a, here, there = relay_line(contexts)
    monkeypatch.setattr(_routing, "push_frames", lambda link, frames: False)
    relay._route_run(from_a, *run_of(here._slot_in, 1, 30))
    expected = [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 31)]
    assert recv_n(there, 30, timeout=10) == expected == here.recv_all()
    assert there._context.statistics()["duplicates_dropped"] == 0


def test_a_relay_passes_on_a_run_once_and_drops_it_the_second_time(contexts: Any) -> None:
    # The second run repeats 11-20: the relay drops those (it passes nothing
    # on twice, so c drops nothing) and passes on 21-30.
    def scenario(at_once: bool) -> dict[str, Any]:
        relay, from_a, here, there = relay_line(contexts)
        route(relay, from_a, *run_of(here._slot_in, 1, 20), at_once)
        route(relay, from_a, *run_of(here._slot_in, 11, 20), at_once)
        got = recv_n(there, 30, timeout=10)
        return {
            **outcome(relay, here),
            "there": got,
            "c_dropped": there._context.statistics()["duplicates_dropped"],
        }

    got = both_ways(scenario)
    assert got["duplicates_dropped"] == 10 and got["c_dropped"] == 0
    assert got["there"] == got["inbox"] == [f"{SOURCE:x}-{i:06d}".encode() for i in range(1, 31)]


def test_a_relay_that_does_not_listen_passes_a_run_on_and_counts_it(contexts: Any) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        relay, from_a, here, there = relay_line(contexts)
        here.close()
        route(relay, from_a, *run_of(there._slot_in, 1, 25), at_once)
        return {"there": recv_n(there, 25, timeout=10), "unroutable": relay._n_unroutable}

    got = both_ways(scenario)
    assert got["unroutable"] == 25 and len(got["there"]) == 25


def test_a_sync_mode_subscriber_gets_a_run_through_its_own_deposit(contexts: Any) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        sub.set_sync_mode(True)
        route(b, conn, *run_of(sub._slot_in, 1, 12), at_once)
        return outcome(b, sub)

    assert len(both_ways(scenario)["inbox"]) == 12


# -- batches a transport delivers (Connection.deliver: inproc, a bus) ------------------


def mixed_sizes(run: Run, payloads: list[bytes]) -> list[Any]:
    """The run's packages in Router._route's form, each payload a different length."""
    flat = expand_run(run, payloads)
    for i in range(1, len(flat), 2):
        flat[i] = flat[i] + b"+" * (i % 7)
        flat[i - 1] = (*flat[i - 1][:6], len(flat[i]))
    return flat


def test_a_uniform_batch_from_a_transport_is_routed_in_one_step(
    contexts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = contexts(2)
    _s, conn = join(a, b)
    sub = yoton.SubChannel(b, "runs", yoton.BINARY)
    loop: list[Any] = []
    monkeypatch.setattr(b, "_route", lambda conn, flat: loop.append(flat))
    flat = mixed_sizes(*run_of(sub._slot_in, 1, 40))
    conn.deliver(flat)
    assert loop == []  # not through the per-package loop
    with b._lock:
        seqs = [sub._seq_at(i) for i in range(40)]
    assert seqs == list(range(b._recv_seq - 39, b._recv_seq + 1))
    assert sub.recv_all() == flat[1::2]


@pytest.mark.parametrize(
    "odd",
    ["gap", "slot", "source", "dest", "dest-seq", "context", "short", "seen", "none"],
)
def test_a_batch_from_a_transport_ends_as_routed_package_by_package(
    contexts: Any, odd: str
) -> None:
    def scenario(at_once: bool) -> dict[str, Any]:
        a, b = contexts(2)
        _s, conn = join(a, b)
        sub = yoton.SubChannel(b, "runs", yoton.BINARY)
        other = yoton.SubChannel(b, "other", yoton.BINARY)
        flat = mixed_sizes(*run_of(sub._slot_in, 101, 40))
        h = list(flat[40])  # the 21st package's header
        if odd == "gap":
            h[3] += 1
        elif odd == "slot":
            h[1] = other._slot_in
        elif odd == "source":
            h[2] += 1
        elif odd == "dest":
            h[4] = 0xDEAD  # another context's
        elif odd == "dest-seq":
            h[5] = 3
        elif odd == "context":
            h[1] = SLOT_CONTEXT
            flat[41] = b"NO SUCH MESSAGE"
            h[6] = len(flat[41])
        flat[40] = tuple(h)
        if odd == "short":
            del flat[2 * (DELIVER_RUN_MIN - 1) :]
        if odd == "seen":
            b._route(conn, flat[:20])  # the first ten came before
        if at_once:
            conn.deliver(flat)
        else:
            b._route(conn, flat)
        sources = {sid: seq for sid, seq in b._source_map.items() if sid != a.id}
        return {**outcome(b, sub), "other": other.recv_all(), "seq": b._recv_seq, **sources}

    both_ways(scenario)


def test_a_relay_passes_on_a_delivered_batch_with_its_lengths(contexts: Any) -> None:
    # Not a leaf: the batch goes package by package, with the headers it came with.
    def scenario(at_once: bool) -> dict[str, Any]:
        relay, from_a, here, there = relay_line(contexts)
        flat = mixed_sizes(*run_of(here._slot_in, 1, 40))
        if at_once:
            from_a.deliver(flat)
        else:
            relay._route(from_a, flat)
        return {**outcome(relay, here), "there": recv_n(there, 40, timeout=10)}

    got = both_ways(scenario)
    assert got["there"] == got["inbox"] and len({len(p) for p in got["there"]}) == 7
