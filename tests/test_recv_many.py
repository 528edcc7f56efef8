"""SubChannel.recv_many(n, block): a batch of up to n messages, waiting for the first only.

It is an addition beside ``recv`` (which stays the per-message call): the
same waiting rules, the same order, the same sync-mode bookkeeping, the same
errors for a bad ``block``, and one for a bad ``n``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import yoton
from yoton_core.testing import wait_for

GENEROUS = 30.0


def pair(contexts: Any, message_type: Any = yoton.TEXT) -> tuple[Any, Any]:
    ctx = contexts()
    return yoton.PubChannel(ctx, "many", message_type), yoton.SubChannel(ctx, "many", message_type)


def test_up_to_n_oldest_first_and_recv_in_between(contexts: Any) -> None:
    pub, sub = pair(contexts)
    for i in range(5):
        pub.send(str(i))
    assert sub.recv_many(3) == ["0", "1", "2"]  # decoded: TEXT gives str
    assert sub.recv() == "3"
    assert sub.recv_many(10) == ["4"]  # fewer than n: what was waiting, no wait for more
    assert sub.recv_many(10, False) == []
    assert sub.recv_many(10, 0.01) == []  # nothing came in time
    assert sub.pending == 0


def test_it_waits_for_the_first_message(contexts: Any) -> None:
    pub, sub = pair(contexts, yoton.BINARY)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(sub.recv_many(100)))
    reader.start()
    wait_for(lambda: sub._waiters or sub._wakers, GENEROUS, "the reader to wait")
    pub.send(b"late")
    reader.join(GENEROUS)
    assert got == [[b"late"]]


def test_a_stream_over_tcp_comes_whole_and_in_order(contexts: Any) -> None:
    a, b = contexts(2)
    pub = yoton.PubChannel(a, "stream", yoton.BINARY)
    sub = yoton.SubChannel(b, "stream", yoton.BINARY)
    conn = b.bind("tcp://localhost:0")
    a.connect(f"tcp://localhost:{conn.port1}", timeout=GENEROUS)
    wait_for(lambda: a.connection_count and b.connection_count, GENEROUS, "the connection")
    n = 5000
    for i in range(n):
        pub.send(i.to_bytes(4, "little") + b"x" * 96)
    got: list[bytes] = []
    while len(got) < n:
        batch = sub.recv_many(64, GENEROUS)
        assert 1 <= len(batch) <= 64, f"{len(got)} of {n} arrived"
        got += batch
    assert [int.from_bytes(m[:4], "little") for m in got] == list(range(n))
    assert sub.dropped == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_a_bad_n_is_refused_and_takes_nothing(contexts: Any, bad: Any) -> None:
    pub, sub = pair(contexts)
    pub.send("waiting")
    with pytest.raises(yoton.InvalidArgumentError, match=r"recv_many\(n\): n must be an int >= 1"):
        sub.recv_many(bad)
    with pytest.raises((TypeError, ValueError), match="block must be"):
        sub.recv_many(2, -1)
    assert sub.recv_many(2) == ["waiting"]


def test_a_closed_channel_gives_what_it_holds_then_nothing(contexts: Any) -> None:
    pub, sub = pair(contexts, yoton.OBJECT)
    pub.send(None)  # (an OBJECT message may be None: only a list tells it from "nothing")
    pub.send([1, 2])
    sub.close()
    assert sub.recv_many(5) == [None, [1, 2]]
    assert sub.recv_many(5) == []  # closed: does not wait
