"""Publish/subscribe: PubChannel, SubChannel and select_sub_channel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._channels import BaseChannel
from ._message_types import TEXT
from ._wire import Package

__all__ = ["PubChannel", "SubChannel", "select_sub_channel"]


class PubChannel(BaseChannel):
    """Publishes messages to every SubChannel on the same slot in the network.

    Args:
        context: The context to publish from.
        slot_base: The slot name (case-insensitive).
        message_type: TEXT (default), BINARY, OBJECT or a custom MessageType.
    """

    _pattern_out = "pub-sub"
    _pattern_in = "sub-pub"

    def __init__(self, context: Any, slot_base: str, message_type: Any = TEXT) -> None:
        super().__init__(context, slot_base, message_type)
        self._encode = self._message_type.message_to_bytes

    def send(self, message: Any) -> None:
        """Publish ``message``; raises OSError on a closed channel.

        Empty messages ("" or b"") are not sent: on the wire an empty payload
        is a connection-level control package.
        """
        self._send(self._encode(message))

    def _deposit(self, pkg: Package) -> None:
        # The incoming slot carries sync-mode control words ("full"/"ok") from
        # subscribers; they are handled here, never queued for the user.
        self._on_sync_message(pkg)

    def _on_sync_message(self, pkg: Package) -> None:
        """Hook for congestion control (sync mode)."""


class SubChannel(BaseChannel):
    """Receives the messages of every PubChannel on the same slot.

    Iterating a SubChannel yields the pending messages (without blocking) until
    there are none; :meth:`recv` blocks as asked.
    """

    _pattern_out = "sub-pub"
    _pattern_in = "pub-sub"

    def __init__(self, context: Any, slot_base: str, message_type: Any = TEXT) -> None:
        super().__init__(context, slot_base, message_type)
        self._decode = self._message_type.message_from_bytes
        self._ref_seq: int | None = None

    def recv(self, block: Any = True) -> Any:
        """Return the next message.

        Args:
            block: True waits until a message arrives (or the channel closes);
                False/0 returns at once; a number waits that many seconds.

        Returns:
            The message, or the message type's empty message ("", b"", None)
            when none arrived in time or the channel is closed.
        """
        pkg = self._recv(block)
        self._check_sync()
        if pkg is None:
            return self._message_type.empty_message()
        return self._decode(pkg.data)

    def next(self) -> Any:
        """Return the next pending message; raise StopIteration when there is none."""
        pkg = self._recv(False)
        self._check_sync()
        if pkg is None:
            raise StopIteration
        return self._decode(pkg.data)

    __next__ = next

    def __iter__(self) -> Iterator[Any]:
        return self

    def recv_all(self) -> list[Any]:
        """Return a list of every pending message (possibly empty)."""
        q = self._queue
        decode = self._decode
        out = []
        while q:
            try:
                pkg = q.popleft()
            except IndexError:
                break
            out.append(decode(pkg.data))
        self._check_sync()
        return out

    def recv_selected(self) -> list[Any]:
        """Return the messages selected by the last :func:`select_sub_channel`."""
        if self._ref_seq is None:
            raise RuntimeError(
                "recv_selected() needs a prior select_sub_channel() that chose this channel"
            )
        ref = self._ref_seq
        self._ref_seq = None
        q = self._queue
        out = []
        while q:
            try:
                pkg = q.popleft()
            except IndexError:
                break
            if pkg.recv_seq > ref:
                q.appendleft(pkg)
                break
            out.append(self._decode(pkg.data))
        self._check_sync()
        return out

    def _check_sync(self) -> None:
        """Hook for congestion control (sync mode)."""


def select_sub_channel(*channels: SubChannel) -> SubChannel | None:
    """Of several SubChannels, return the one whose oldest message came first.

    Use it to read several channels in the order their messages arrived:
    ``ch = select_sub_channel(a, b); if ch: msgs = ch.recv_selected()``.
    Ordering is exact for messages that arrived through the same context.
    """
    for ch in channels:
        if not isinstance(ch, SubChannel):
            raise TypeError(f"select_sub_channel only accepts SubChannels, got {ch!r}")
    firsts: list[tuple[int, int, SubChannel]] = []
    for ch in channels:
        q = ch._queue
        try:
            first = q[0].recv_seq
            last = q[-1].recv_seq
        except IndexError:
            continue
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
