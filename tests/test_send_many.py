"""PubChannel.send_many: a batch of sends, checked before any of it goes out."""

from __future__ import annotations

import pytest

import yoton
from yoton_core.testing import recv_n, wait_for


def _linked(contexts, message_type, **kw):
    """A PubChannel in one context and its SubChannel in another, over TCP."""
    a, b = contexts(2, **kw)
    pub = yoton.PubChannel(a, "batch", message_type)
    sub = yoton.SubChannel(b, "batch", message_type)
    bound = b.bind("localhost:0")
    a.connect(f"localhost:{bound.port1}", timeout=5)
    wait_for(lambda: a.connection_count and b.connection_count, what="the link")
    return pub, sub


def test_send_many_delivers_a_batch_in_order_and_skips_empty_messages(contexts) -> None:
    pub, sub = _linked(contexts, yoton.BINARY)
    msgs = [b"%06d" % i if i % 100 else b"" for i in range(5000)]
    sent = [m for m in msgs if m]
    assert pub.send_many(iter(msgs)) == len(sent)  # any iterable
    assert recv_n(sub, len(sent)) == sent
    assert sub.recv(False) == b""  # nothing more: the empty ones were not sent


def test_send_many_encodes_like_send(contexts) -> None:
    pub, sub = _linked(contexts, yoton.OBJECT)
    batch = [{"i": 1}, [2, 3], "four", None, 5.0]
    assert pub.send_many(batch) == len(batch)
    assert recv_n(sub, len(batch)) == batch


def test_a_message_that_does_not_suit_the_channel_stops_the_whole_batch(contexts) -> None:
    pub, sub = _linked(contexts, yoton.TEXT)
    with pytest.raises(yoton.InvalidArgumentError):
        pub.send_many(["one", b"bytes on a TEXT channel", "three"])
    pub.send("marker")
    assert sub.recv(5.0) == "marker"  # the first message that came: none of the batch


def test_a_message_over_the_size_limit_stops_the_whole_batch(contexts) -> None:
    pub, sub = _linked(contexts, yoton.BINARY, max_message_size=100)
    with pytest.raises(yoton.InvalidArgumentError, match="exceeds the maximum message size of 100"):
        pub.send_many([b"fits", b"x" * 101])
    pub.send(b"marker")
    assert sub.recv(5.0) == b"marker"


def test_send_many_on_a_closed_channel_raises(contexts) -> None:
    pub = yoton.PubChannel(contexts(), "batch", yoton.BINARY)
    pub.close()
    with pytest.raises(yoton.ConnectionClosedError, match="Cannot send"):
        pub.send_many([b"x"])
