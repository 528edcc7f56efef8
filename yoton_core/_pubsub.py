"""Publish/subscribe: PubChannel, SubChannel and select_sub_channel."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat, starmap
from typing import Any

from . import _async, _sync, _sync_pub
from ._channels import BaseChannel
from ._errors import InvalidArgumentError
from ._message_types import TEXT, BinaryMessageType, TextMessageType
from ._wire import Package

__all__ = ["PubChannel", "SubChannel", "select_sub_channel"]

#: Message types whose payload send() makes inline: type -> the message's type.
_PLAIN = {TextMessageType: str, BinaryMessageType: bytes}


class PubChannel(BaseChannel):
    """Publishes messages to every SubChannel on the same slot in the network.

    Every subscriber of the slot, in any context of the network (this one
    included), gets every message, in the order this channel sent them. A
    subscriber gets only what arrives after it exists, so make subscribers
    before publishing (the slow joiner of every pub/sub system); messages
    sent before the context has any connection wait in the context and go to
    the first one.

    Args:
        context: The context to publish from.
        slot_base: The slot name (case-insensitive).
        message_type: TEXT (default), BINARY, OBJECT or a custom MessageType.
    """

    _pattern_out = "pub-sub"
    _pattern_in = "sub-pub"

    def __init__(self, context: Any, slot_base: str, message_type: Any = TEXT) -> None:
        # Sync mode (_sync_pub.py): subscriber id -> lock expiry, while it is full;
        # subscriber id -> its window; our seqs that may still be on their way.
        self._sync_blocked: dict[int, float] = {}
        self._sync_windows: dict[int, _sync_pub.Window] = {}
        self._sync_seqs: collections.deque[int] = collections.deque()
        self._sync_watch = False  # send() takes the sync path (_sync_pub.pub_send)
        self._sync_min_credit = 1 << 62  # the smallest credit of those windows
        self._sync_cond = threading.Condition(threading.Lock())
        self._sync_waiting = 0  # senders waiting on _sync_cond
        self._sync_waits = 0  # how often a sender had to wait (tests, benchmarks)
        # Wake-ups of send_async callers held by a full subscriber or a used-up
        # window (_async.py), fired (and cleared) with the Condition's notify.
        # Guarded by _sync_cond.
        self._sync_async_waiters: list[Callable[[], object]] = []
        super().__init__(context, slot_base, message_type)
        self._encode = self._message_type.message_to_bytes
        # TEXT (the default) and BINARY are encoded inline in send(): a str is
        # just UTF-8, bytes are sent as they are.
        self._plain = _PLAIN.get(type(self._message_type))

    def send(self, message: Any) -> None:
        """Publish ``message`` to every subscriber of the slot.

        Empty messages ("" or b"") are not sent: on the wire an empty payload
        is a connection-level control package. While a subscriber in sync mode
        is full, or has not acknowledged enough of what we sent, this blocks
        until it has caught up (in an event loop, use :meth:`send_async`, which
        waits without blocking the loop).

        Raises:
            ConnectionClosedError: The channel is closed (an ``OSError``).
            InvalidArgumentError: ``message`` does not suit the message type
                (a bytes for TEXT, a set for OBJECT...), or its encoding is
                larger than the context's ``max_message_size``.
        """
        plain = self._plain
        if plain is not None and type(message) is plain:
            data = message.encode() if plain is str else message
        else:
            data = self._encode(message)
        ctx = self._context
        if self._closed or not data or len(data) > self._max_message_size:
            self._send(data)  # raises, or drops an empty message, as documented there
            return
        if self._sync_watch:  # a sync-mode subscriber is full or holds a window
            _sync_pub.pub_send(self, data)
            return
        # The rest of BaseChannel._send, inlined: this is the throughput path.
        ctx._send(data, self._slot_out, self)  # type: ignore[arg-type]

    def send_many(self, messages: Iterable[Any]) -> int:
        """Publish each of ``messages``, in order: :meth:`send` for a batch.

        Every message is encoded and checked before the first is sent, so one
        that does not suit the channel raises and none of the batch goes out.
        Empty messages are skipped, as :meth:`send` skips them. Sync mode
        applies per message, as with :meth:`send`. Cheaper per message than a
        loop of :meth:`send` calls (no per-call checks and dispatch); the
        subscribers see exactly what that loop would have sent.

        Returns:
            How many messages were sent (the empty ones not counted).

        Raises:
            ConnectionClosedError: The channel is closed (an ``OSError``).
            InvalidArgumentError: A message does not suit the message type,
                or its encoding is larger than the context's
                ``max_message_size`` (nothing of the batch was sent).
        """
        plain = self._plain
        encode = self._encode
        limit = self._max_message_size
        batch = []
        for message in messages:
            if plain is not None and type(message) is plain:
                data = message.encode() if plain is str else message
            else:
                data = encode(message)
            if data:
                if len(data) > limit:
                    self._send(data)  # raises, naming the size and the limit
                batch.append(data)
        if self._closed:
            raise self._closed_error("Cannot send")
        ctx_send = self._context._send
        slot = self._slot_out
        for data in batch:
            if self._sync_watch:  # a sync-mode subscriber is full or holds a window
                _sync_pub.pub_send(self, data)
            else:
                ctx_send(data, slot, self)  # type: ignore[arg-type]  # (a PubChannel has a slot)
        return len(batch)

    async def send_async(self, message: Any) -> None:
        """Publish ``message`` from a trio or asyncio task without blocking its loop.

        Where :meth:`send` would block the thread (a sync-mode subscriber is
        full, or a connection's outgoing queue is over its high-water mark),
        this waits in the event loop instead, then sends. Cancelling it while
        it waits sends nothing.

        Raises:
            ConnectionClosedError: The channel is closed (an ``OSError``).
            InvalidArgumentError: As :meth:`send`.
        """
        await _async.pub_send_async(self, message)

    def _deposit(self, pkg: Package) -> None:
        # The incoming slot carries sync-mode control words ("full"/"ok") from
        # subscribers; they are handled here, never queued for the user.
        self._on_sync_message(pkg)

    def _on_sync_message(self, pkg: Package) -> None:
        """A sync-mode subscriber says "full" or "ok" (see _sync.py)."""
        _sync_pub.pub_on_sync_message(self, pkg)

    def _on_connection_closed(self, conn: Any) -> None:
        if self._sync_watch:
            _sync_pub.pub_forget(self, conn.id2)

    def _on_close(self) -> None:
        _sync_pub.pub_wake(self)
        super()._on_close()


class SubChannel(BaseChannel):
    """Receives the messages of every PubChannel on the same slot.

    Messages wait in the channel's inbox until read: :meth:`recv` (blocking
    as asked), :meth:`recv_all`, iteration (``for msg in sub`` yields the
    pending messages without blocking, until there are none), or in trio and
    asyncio :meth:`recv_async` and ``async for``. The inbox holds the
    context's ``queue_params`` N messages (10,000 by default) and discards by
    its policy beyond that, counting in :attr:`dropped`; :meth:`set_sync_mode`
    makes publishers wait instead. Only messages that arrive after the
    channel exists are received.

    Args:
        context: The context to receive in.
        slot_base: The slot name (case-insensitive).
        message_type: TEXT (default), BINARY, OBJECT or a custom MessageType;
            publishers must use the same.
    """

    _pattern_out = "sub-pub"
    _pattern_in = "pub-sub"

    def __init__(self, context: Any, slot_base: str, message_type: Any = TEXT) -> None:
        self._sync: _sync.SubSync | None = None  # sync mode state (_sync.py)
        super().__init__(context, slot_base, message_type)
        self._decode = self._message_type.message_from_bytes
        # BINARY payloads are the messages: recv() returns them without a call.
        self._binary = type(self._message_type) is BinaryMessageType
        self._ref_seq: int | None = None
        # The last number ``recv`` was given as ``block`` and found valid: the
        # same object again (a loop's timeout) needs no look at its type and value.
        self._block_seen: Any = True

    def recv(self, block: Any = True) -> Any:
        """Return the next message.

        Args:
            block: True waits until a message arrives (or the channel closes);
                False/0 returns at once; a number waits that many seconds.

        Returns:
            The message, or the message type's empty message ("", b"", None)
            when none arrived in time or the channel is closed.
        """
        # The fast path: not in sync mode, a message waiting, and ``block``
        # surely valid (anything else, NaN included, is checked by _recv).
        # Per message this is the cost of a subscriber's loop: identity tests
        # only, and an empty inbox found by popleft's IndexError (once per
        # batch that arrived) instead of a test of the inbox per message.
        if (block is self._block_seen or block is True or block is False) and self._sync is None:
            try:
                item = self._queue.popleft()
            except IndexError:  # empty (or another reader took it): wait as asked
                pass
            else:
                return item if self._binary else self._decode(item)
        got = self._recv(block)  # (raises for a ``block`` that is not valid)
        if block.__class__ is float or block.__class__ is int:
            self._block_seen = block
        self._check_sync()
        if got is None:
            return self._message_type.empty_message()
        return self._decode(got)

    def recv_many(self, n: int, block: Any = True) -> list[Any]:
        """Return up to ``n`` messages, oldest first: a batch instead of a call each.

        Waits for the first message as :meth:`recv` does, then takes those
        already waiting, up to ``n`` in all, without waiting for more. Per
        message this costs a fraction of a ``recv`` call: a loop that reads a
        stream may read it in batches and iterate over the list.

        Args:
            n: The most messages to return (an int >= 1).
            block: As for :meth:`recv`: True waits until a message arrives
                (or the channel closes); False/0 returns at once; a number
                waits that many seconds.

        Returns:
            Between 1 and ``n`` messages, or an empty list when none arrived
            in time or the channel is closed.

        Raises:
            InvalidArgumentError: ``n`` is not an int >= 1 (TypeError /
                ValueError), or ``block`` is not valid.
        """
        if n.__class__ is not int or n < 1:
            if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                n = int(n)  # an int subclass
            else:
                raise InvalidArgumentError(
                    f"recv_many(n): n must be an int >= 1 (the most messages to return), got {n!r}"
                )
        got = self._recv(block)
        if got is None:
            self._check_sync()
            return []
        items = [got]
        q = self._queue
        more = min(n - 1, len(q))
        if more:
            # popleft called in C; IndexError: another reader took the rest
            # (nothing is lost: a popleft that raises took nothing).
            try:
                items.extend(starmap(q.popleft, repeat((), more)))
            except IndexError:
                pass
        self._check_sync()
        return items if self._binary else list(map(self._decode, items))

    def next(self) -> Any:
        """Return the next pending message; raise StopIteration when there is none."""
        item = self._recv(False)
        self._check_sync()
        if item is None:
            raise StopIteration
        return self._decode(item)

    __next__ = next

    def __iter__(self) -> Iterator[Any]:
        return self

    # -- async face (trio and asyncio); implemented in _async.py ---------------

    async def recv_async(self, timeout: float | None = None) -> Any:
        """Await the next message in a trio or asyncio task, without blocking its loop.

        Args:
            timeout: Seconds to wait; None (default) waits until a message
                arrives or the channel closes; 0 does not wait.

        Returns:
            The message, or the message type's empty message ("", b"", None)
            when none arrived in time or the channel is closed (like
            :meth:`recv`). Cancelling the awaiting task never loses a message.
        """
        return await _async.sub_recv_async(self, timeout)

    def __aiter__(self) -> SubChannel:
        """``async for msg in sub``: every message, until the channel is closed."""
        return self

    async def __anext__(self) -> Any:
        return await _async.sub_anext(self)

    # -- end of the async face ------------------------------------------------------

    def recv_all(self) -> list[Any]:
        """Return a list of every pending message (possibly empty)."""
        q = self._queue
        decode = self._decode
        out = []
        while q:
            try:
                item = q.popleft()
            except IndexError:
                break
            out.append(decode(item))
        self._check_sync()
        return out

    def recv_selected(self) -> list[Any]:
        """Return the messages selected by the last :func:`select_sub_channel`.

        These are the messages of this channel that arrived before the first
        pending message of every other channel given to it, so reading the
        selected channel again and again gives all messages in arrival order.

        Raises:
            RuntimeError: No :func:`select_sub_channel` chose this channel since
                the last call.
        """
        if self._ref_seq is None:
            raise RuntimeError(
                "recv_selected() needs a prior select_sub_channel() that chose this channel"
            )
        ref = self._ref_seq
        self._ref_seq = None
        q = self._queue
        items = []
        with self._context._lock:  # (the order is kept with the context's lock)
            for _ in range(self._count_upto(ref)):
                try:
                    items.append(q.popleft())
                except IndexError:  # another reader took them
                    break
        out = [self._decode(item) for item in items]
        self._check_sync()
        return out

    # -- sync mode (_sync.py) ----------------------------------------------------------

    #: Inlined by the router while not in sync mode (_sync.set_sync_mode).
    _inbox_inline = True

    def _deposit(self, pkg: Package) -> None:
        sync = self._sync
        if sync is not None:  # (the router hands them here in sync mode only)
            sync.deposit(pkg)
        else:
            BaseChannel._deposit(self, pkg)

    def set_sync_mode(self, value: bool) -> None:
        """Switch sync mode on (True) or off (False).

        In sync mode, publishers are slowed down (their ``send`` blocks) while
        this subscriber holds more than a few hundred unread messages, so a
        subscriber that keeps reading loses nothing, and ours never let it
        hold more than its queue size (docs/protocol.md#sync-mode). Works
        with 2.x publishers too; no event loop is needed. Leaving sync mode,
        or closing the channel, releases the publishers at once.
        """
        _sync.set_sync_mode(self, value)

    @property
    def sync_mode(self) -> bool:
        """Whether sync mode is on."""
        return self._sync is not None

    @property
    def _wants_joins(self) -> bool:  # type: ignore[override]
        # A full subscriber repeats "full" when a context joins (_sync.py).
        return self._sync is not None

    def _check_sync(self) -> None:
        sync = self._sync
        if sync is not None:
            sync.after_read()

    def _on_close(self) -> None:
        if self._sync is not None:
            _sync.set_sync_mode(self, False)
        super()._on_close()

    def _on_new_peer(self, source_id: int, recv_seq: int) -> None:
        sync = self._sync
        if sync is not None:
            sync.on_new_peer()

    def _on_new_connection(self, conn: Any) -> None:
        sync = self._sync
        if sync is not None:
            sync.on_new_peer()

    # -- end of sync mode ----------------------------------------------------------------


def select_sub_channel(*channels: SubChannel) -> SubChannel | None:
    """Of several SubChannels, return the one whose oldest message came first.

    Use it to read several channels in the order their messages arrived:
    ``ch = select_sub_channel(a, b); if ch: msgs = ch.recv_selected()``.
    Ordering is exact for messages that arrived through the same context.

    Args:
        *channels: SubChannels (of one context, for an exact order).

    Returns:
        The channel to read with :meth:`SubChannel.recv_selected`, or None
        when none of them has a pending message.

    Raises:
        InvalidArgumentError: One of ``channels`` is not a SubChannel.
    """
    for ch in channels:
        if not isinstance(ch, SubChannel):
            raise InvalidArgumentError(f"select_sub_channel only accepts SubChannels, got {ch!r}")
    firsts: list[tuple[int, int, SubChannel]] = []
    for ch in channels:
        q = ch._queue
        with ch._context._lock:  # (the order is kept with the context's lock)
            if not q:
                continue
            first = ch._seq_at(0)  # recv_seq of the oldest and newest message
            last = ch._seq_at(len(q) - 1)
        firsts.append((first, last + 1, ch))
        ch._check_sync()
    if not firsts:
        return None
    firsts.sort(key=lambda t: t[0])
    first, end, chosen = firsts[0]
    ref = end
    for other_first, _end, _ch in firsts[1:]:
        ref = min(ref, other_first)
    chosen._ref_seq = ref - 1
    return chosen
