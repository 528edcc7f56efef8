"""BaseChannel: what every channel shares (slots, inbox, closing, signals).

A channel has an outgoing and an incoming slot, both derived from the user's
``slot_base``, the message type's name and the channel pattern, then hashed
case-insensitively (docs/protocol.md#slots). The inbox is a plain deque: the IO
engine appends without taking a lock, and wakes a reader only when one is
actually waiting, so delivering a batch of messages costs one notification.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ._block import normalize_block
from ._borrow import borrow_wait
from ._errors import ConnectionClosedError, InvalidArgumentError
from ._events import Signal, post_event
from ._hashing import normalize_slot, slot_hash
from ._inbox import Inbox
from ._log import get_logger
from ._message_types import TEXT, MessageType
from ._poller import Waker
from ._wire import Package

if TYPE_CHECKING:
    from ._connection import Connection
    from ._context import Context

__all__ = ["BaseChannel"]

logger = get_logger("channels")


class BaseChannel(Inbox):
    """Base class of all channels: a slot, an inbox and a ``received`` signal.

    You do not make a BaseChannel yourself: make the channel of the pattern
    you want (:class:`PubChannel`, :class:`SubChannel`, :class:`ReqChannel`,
    :class:`RepChannel`, :class:`StateChannel`). Channels on the same slot
    talk to each other; the message type is part of the slot, so a TEXT
    channel and an OBJECT channel of the same name never meet. A context has
    at most one channel per slot and direction.

    Args:
        context: The :class:`Context` this channel lives in.
        slot_base: The name that channels meet on (case-insensitive).
        message_type: :data:`TEXT` (default), :data:`BINARY`, :data:`OBJECT`,
            or a :class:`MessageType` instance or subclass.

    Attributes:
        received: Signal emitted as ``received(channel)`` (through the event
            loop) when messages arrive; coalesced, so one emit may stand for
            many messages.

    Raises:
        InvalidArgumentError: ``context`` is not a Context, ``slot_base`` not a
            str, or ``message_type`` not a message type; or the context
            already has a channel on this slot in the same direction (the
            message names the slot).
    """

    #: Pattern of the outgoing / incoming slot, e.g. "pub-sub" / "sub-pub".
    _pattern_out: ClassVar[str | None] = None
    _pattern_in: ClassVar[str | None] = None
    #: Whether the user chose the message type (not so for req/rep): errors name it.
    _user_typed: ClassVar[bool] = True
    #: Whether this channel acts on NEW_CONNECTION (``_on_new_peer``): the
    #: context then asks its peers for join announcements (_joins.py).
    _wants_joins: bool = False
    #: Whether the router may append payloads to ``_queue`` (and note their
    #: recv_seqs) itself, as :meth:`_deposit` does here, while the inbox has room (the
    #: hottest loop of a subscriber, _routing.py). False for a class that
    #: defines its own ``_deposit`` unless it says otherwise, and for a
    #: SubChannel in sync mode (per channel, _sync.py).
    _inbox_inline: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "_deposit" in own and "_inbox_inline" not in own and cls._inbox_inline:
            cls._inbox_inline = False

    def __init__(self, context: Context, slot_base: str, message_type: Any = TEXT) -> None:
        from ._context import Context

        if not isinstance(context, Context):
            raise InvalidArgumentError(
                f"Context not valid: expected a yoton.Context, got {context!r}"
            )
        if not isinstance(slot_base, str):
            raise InvalidArgumentError(
                f"slot_base must be a string, got {type(slot_base).__name__}"
            )
        if isinstance(message_type, type) and issubclass(message_type, MessageType):
            message_type = message_type()
        if not isinstance(message_type, MessageType):
            raise InvalidArgumentError(
                "message_type must be TEXT, BINARY, OBJECT or a MessageType instance/subclass, "
                f"got {message_type!r}"
            )
        self._context = context
        self._max_message_size = context.max_message_size  # (fixed for a context's life)
        self._message_type = message_type
        self._slot_base = slot_base
        type_name = message_type.message_type_name()
        self._slot_out_name = (
            f"{slot_base}.{type_name}.{self._pattern_out}" if self._pattern_out else ""
        )
        self._slot_in_name = (
            f"{slot_base}.{type_name}.{self._pattern_in}" if self._pattern_in else ""
        )
        self._slot_out = (
            slot_hash(normalize_slot(self._slot_out_name)) if self._pattern_out else None
        )
        self._slot_in = slot_hash(normalize_slot(self._slot_in_name)) if self._pattern_in else None
        # The inbox: payloads, oldest first; their order among the context's
        # channels (recv_seq, for select_sub_channel) is kept as runs (_inbox.py).
        self._init_inbox()
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0  # threads sleeping in _wait_until
        self._woken = False  # notified since they last looked (see _notify)
        self._closed = False
        self._n_dropped = 0
        self._received_posted = False
        # One-shot wake-ups of async (trio) readers; see _async.py. Called, and
        # cleared, after deposits and on close. Guarded by _cond.
        self._async_waiters: list[Callable[[], object]] = []
        # Threads waiting in recv() while reading the network themselves
        # (_poller.borrow_wait); woken by deposits and close().
        self._wakers: list[Waker] = []
        self.received: Signal = Signal()
        context._register_channel(self, self._slot_out, self._slot_in)

    # -- properties -----------------------------------------------------------

    @property
    def context(self) -> Context:
        """The :class:`Context` this channel lives in."""
        return self._context

    @property
    def message_type(self) -> MessageType:
        """The message type instance (:data:`TEXT`, :data:`BINARY`, :data:`OBJECT`, or yours)."""
        return self._message_type

    @property
    def slot_outgoing(self) -> str:
        """The slot string this channel sends on, e.g. ``"news.txt.pub-sub"``.

        As built from the channel's name, type and pattern, before it is
        stripped, lower-cased and hashed for the wire ("" if it sends nothing).
        """
        return self._slot_out_name

    @property
    def slot_incoming(self) -> str:
        """The slot string this channel receives on, e.g. ``"news.txt.sub-pub"`` ("" if none)."""
        return self._slot_in_name

    @property
    def closed(self) -> bool:
        """Whether the channel is closed (by :meth:`close` or its context's ``close``)."""
        return self._closed

    @property
    def pending(self) -> int:
        """How many received messages wait to be read."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """How many received messages were discarded because the inbox was full.

        The inbox holds ``queue_params`` N messages of its context (10,000 by
        default) and discards by its policy beyond that; sync mode makes
        publishers wait instead.
        """
        return self._n_dropped

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._queue)} pending"
        return f"<{type(self).__name__} {self._slot_base!r} {state}>"

    def _describe(self) -> str:
        """The channel as its user made it, e.g. ``SubChannel 'news' (OBJECT)``, for errors."""
        if not self._user_typed:
            return f"{type(self).__name__} {self._slot_base!r}"
        mt = self._message_type
        name = {"txt": "TEXT", "bin": "BINARY", "obj": "OBJECT"}.get(
            mt.message_type_name(), type(mt).__name__
        )
        return f"{type(self).__name__} {self._slot_base!r} ({name})"

    def _closed_error(self, doing: str) -> ConnectionClosedError:
        return ConnectionClosedError(
            f"{doing}: {self._describe()} is closed (by its close(), or its context's "
            f"close() or close_channels()). Make a new {type(self).__name__} to go on."
        )

    # -- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Close the channel: queued messages stay readable, nothing new arrives."""
        if self._closed:
            return
        self._closed = True
        self._context._unregister_channel(self)
        with self._cond:
            self._cond.notify_all()
        self._wake_borrowers()
        if self._async_waiters:
            self._fire_async_waiters()
        self._on_close()

    def _on_close(self) -> None:
        """Hook for subclasses (e.g. to wake async readers)."""

    # -- sending ------------------------------------------------------------------

    def _send(self, data: bytes, dest_id: int = 0, dest_seq: int = 0) -> None:
        if self._closed:
            raise self._closed_error("Cannot send")
        if not data:
            return None  # an empty payload is a control package on the wire
        ctx = self._context
        max_size = self._max_message_size
        if len(data) > max_size:
            raise InvalidArgumentError(
                f"message of {len(data)} bytes exceeds the maximum message size of "
                f"{max_size} bytes (Context(max_message_size=...))"
            )
        ctx._send(data, self._slot_out, self, dest_id, dest_seq)  # type: ignore[arg-type]

    def _linked_to(self, peer_id: int, excluding: Connection | None = None) -> bool:
        """Whether a connection of our context (other than ``excluding``) goes
        straight to context ``peer_id``: it is still there, for what we keep of it."""
        return any(c.id2 == peer_id for c in self._context._connected if c is not excluding)

    def _send_raw(self, data: bytes, dest_id: int, dest_seq: int) -> None:
        """Send one protocol package of a request/reply channel.

        Its own packages (offers, acknowledgements, replies, pings): no checks,
        also while the channel closes (when :meth:`_send` refuses), and a
        failure is logged, not raised, because the caller is often the IO side.
        """
        try:
            self._context._send(data, self._slot_out, self, dest_id, dest_seq)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - e.g. a transport failing hard
            logger.exception("could not send a protocol package on %r", self)

    # -- receiving (engine side) ------------------------------------------------

    def _deposit(self, pkg: Package) -> None:
        """Put a package's message in the inbox (called under the context lock)."""
        self._deposit_payload(pkg.data, pkg.recv_seq)

    def _deposit_payload(self, data: bytes, recv_seq: int) -> None:
        """:meth:`_deposit` without the Package: for a plain inbox (:attr:`_inbox_inline`).

        A Pub and a Sub of one context (``Context._send``) deposit this way:
        no object per message, the same limit and discard policy.
        """
        q = self._queue
        if len(q) >= self._context._queue_n:
            self._n_dropped += 1
            if not self._context._queue_discard_old:
                return
            q.popleft()
        q.append(data)
        self._note_seqs(recv_seq, 1)

    def _notify(self) -> None:
        """Wake readers and emit ``received`` after a batch of deposits."""
        if self._waiters and not self._woken:
            # Once per sleep, not once per deposit: a sleeper that was
            # notified needs the GIL to run, and until it gets it (up to the
            # 5 ms switch interval while the depositing thread keeps it) every
            # deposit would take the condition and notify again (~0.6 us of a
            # local send to a waiting reader thread). _wait_until clears the
            # flag under the condition *before* it looks at the inbox, so a
            # True read here, stale or not, is older than that look, and the
            # look sees this deposit: no wake-up is lost.
            with self._cond:
                self._woken = True
                self._cond.notify_all()
        if self._wakers:
            self._wake_borrowers()
        if not self._received_posted and self.received.has_handlers:
            self._notify_received()
        if self._async_waiters:
            self._fire_async_waiters()
        self._on_deposit()

    def _notify_received(self) -> None:
        """Post one ``received`` emit (coalesced until it ran)."""
        if not self._received_posted:
            self._received_posted = True
            post_event(self._emit_received)

    def _wake_borrowers(self) -> None:
        for waker in tuple(self._wakers):
            waker.wake()

    def _fire_async_waiters(self) -> None:
        """Call (and forget) the registered async wake-ups; any thread."""
        with self._cond:
            waiters, self._async_waiters = self._async_waiters, []
        for wake in waiters:
            wake()

    def _on_deposit(self) -> None:
        """Hook for subclasses, called in the IO thread after deposits."""

    def _emit_received(self) -> None:
        self._received_posted = False
        self.received.emit_now(self)

    def _on_new_connection(self, conn: Connection) -> None:
        """Hook: a connection of our context just got a peer."""

    def _on_new_peer(self, source_id: int, recv_seq: int) -> None:
        """Hook: a context somewhere announced NEW_CONNECTION."""

    def _on_connection_closed(self, conn: Connection) -> None:
        """Hook: a connection of our context closed (any thread; must not block)."""

    # -- receiving (user side) ------------------------------------------------------

    def _input_ready(self) -> bool:
        return bool(self._queue) or self._closed

    def _recv(self, block: Any) -> Any:
        """Pop the next payload of the inbox, waiting as ``block`` says; None
        when there is none."""
        wait = None if block is True else normalize_block(block)  # (a bad one raises)
        q = self._queue
        if q:
            try:
                return q.popleft()
            except IndexError:
                pass
        if wait == 0.0:
            return None
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            if self._closed and not q:
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # Read the network ourselves if we can (no hand-off between
            # threads); else sleep until a deposit wakes us.
            got = borrow_wait(self._context, self._wakers, self._input_ready, left)
            if got is None:
                self._wait_cond(deadline)
            try:
                return q.popleft()
            except IndexError:  # timed out, closed, or another reader took it
                pass
        try:
            return q.popleft()
        except IndexError:
            return None

    def _wait_cond(self, deadline: float | None) -> None:
        """Sleep until the inbox has something, the channel closes, or ``deadline``."""
        q = self._queue
        self._wait_until(lambda: bool(q) or self._closed, deadline)

    def _wait_until(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Sleep until ``ready()`` (looked at under ``_cond``) or ``deadline``; its last value.

        What deposits and close change is what ``ready`` may look at: they
        notify sleepers here (:meth:`_notify`, :meth:`close`).
        """
        cond = self._cond
        with cond:
            self._waiters += 1
            try:
                while True:
                    self._woken = False  # (before the look: see _notify)
                    if ready():
                        return True
                    if deadline is None:
                        cond.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        cond.wait(remaining)
            finally:
                self._waiters -= 1
