"""Sync mode, the publisher's half: locks by full subscribers and windows.

The protocol, and why there are windows, is in ``_sync.py``. A PubChannel keeps
(all under its ``_sync_cond``): ``_sync_blocked``, subscriber id -> lock
expiry while that subscriber is full; ``_sync_windows``, subscriber id ->
what it acknowledged and the credit it gave; ``_sync_seqs``, the seqs of our
messages sent since we first held a window, pruned as they are acknowledged.
``send`` takes :func:`pub_send` only while one of the first two is not empty
(``_sync_watch``), so a publisher without sync-mode subscribers pays one
attribute test per message.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING

from . import _sync
from ._engine import get_engine
from ._log import get_logger
from ._sync import FULL, credit_of

if TYPE_CHECKING:
    from ._pubsub import PubChannel
    from ._wire import Package

__all__ = ["pub_forget", "pub_held", "pub_on_sync_message", "pub_send", "pub_wake"]

logger = get_logger("pubsub")


class Window:
    """What a publisher knows of one windowed subscriber."""

    __slots__ = ("acked", "credit", "heard")

    def __init__(self, acked: int, credit: int, heard: float) -> None:
        self.acked = acked  # the newest seq of ours it holds
        self.credit = credit  # how many newer ones may be on their way
        self.heard = heard  # when it last said something


def _watch(pub: PubChannel) -> None:
    """Whether ``send`` takes the sync path, and the smallest credit (under
    ``pub._sync_cond``)."""
    windows = pub._sync_windows
    pub._sync_watch = bool(pub._sync_blocked or windows)
    if windows:
        pub._sync_min_credit = min(w.credit for w in windows.values())
    else:
        pub._sync_min_credit = 1 << 62
        pub._sync_seqs.clear()


def pub_on_sync_message(pub: PubChannel, pkg: Package) -> None:
    """A subscriber said "full", "ok C" (a window) or anything else (a plain "ok")."""
    data = pkg.data
    sid = pkg.source_id
    with pub._sync_cond:
        now = time.monotonic()
        if data == FULL:
            pub._sync_blocked[sid] = now + _sync.LOCK_EXPIRY
        else:
            pub._sync_blocked.pop(sid, None)
            credit = credit_of(data)
            windows = pub._sync_windows
            if credit is None:
                windows.pop(sid, None)  # a 2.x subscriber, or one that left sync mode
            else:
                acked = pkg.dest_seq
                if not pkg.dest_id and acked:  # FORGIVE: all we sent so far
                    acked = pub._sync_seqs[-1] if pub._sync_seqs else 0
                w = windows.get(sid)
                if w is None:
                    windows[sid] = Window(acked, credit, now)
                else:
                    w.acked = max(w.acked, acked)
                    w.credit = credit
                    w.heard = now
            _wake(pub)
        _watch(pub)


def pub_forget(pub: PubChannel, peer: int) -> None:
    """A connection of our context (to ``peer``) closed: forget the remote locks
    and windows.

    Not only ``peer``'s: a subscriber behind that link (through relays) may have
    said "ok" while it was down, and that "ok" is lost for good, which blocked
    us until :data:`_sync.LOCK_EXPIRY` (found by tests/test_soak.py with publishers
    that reconnect). We cannot tell which link a lock came through, so every
    lock and window but those of subscribers in our own context goes. A
    subscriber that is still full says "full" again when it sees our
    NEW_CONNECTION, else within :data:`_sync.REFRESH_INTERVAL`, and announces its
    window again; its sync-mode inbox holds _sync.SAFETY_FACTOR x N meanwhile.
    """
    del peer  # see above: every remote lock goes
    own = pub._context.id
    with pub._sync_cond:
        for table in (pub._sync_blocked, pub._sync_windows):
            for sid in [sid for sid in table if sid != own]:
                del table[sid]
        _wake(pub)
        _watch(pub)


def pub_wake(pub: PubChannel) -> None:
    """Wake blocked senders (the channel closed)."""
    with pub._sync_cond:
        _wake(pub)


def _wake(pub: PubChannel) -> None:
    """Wake the threads, and (once) the event-loop senders, waiting on ``pub``
    (``pub._sync_cond`` held)."""
    if pub._sync_waiting:
        pub._sync_cond.notify_all()
    waiters = pub._sync_async_waiters
    if waiters:
        pub._sync_async_waiters = []
        for wake in waiters:
            wake()


def pub_send(pub: PubChannel, data: bytes) -> None:
    """``PubChannel.send`` while a subscriber is full or holds a window of us.

    The common case is a window with room: ``_sync_seqs`` (which still holds
    seqs acknowledged since the last look) is shorter than the smallest credit,
    and the message goes without a lock. Else ``_wait`` looks properly. The IO
    loop never waits (it is what delivers the "ok").
    """
    if pub._sync_blocked or len(pub._sync_seqs) >= pub._sync_min_credit:
        if not get_engine().in_io_thread():
            _wait(pub)
            if pub._closed:
                pub._send(data)  # raises, as documented there
    seq = pub._context._send(data, pub._slot_out, pub)  # type: ignore[arg-type]
    if pub._sync_windows:
        pub._sync_seqs.append(seq)


def _wait(pub: PubChannel) -> None:
    """Block while some subscriber is full or some window is used up."""
    cond = pub._sync_cond
    started = time.monotonic()
    waited = False
    with cond:
        while not pub._closed:
            left = _held(pub, started)
            if left is None:
                break
            if not waited:
                waited = True
                pub._sync_waits += 1
            pub._sync_waiting += 1
            try:
                cond.wait(left)
            finally:
                pub._sync_waiting -= 1
        _watch(pub)


def pub_held(pub: PubChannel, started: float) -> float | None:
    """Seconds to wait at most (until a lock or window of a silent subscriber
    expires), or None if ``pub`` may send now; for waiters that began at
    ``started``. ``PubChannel.send_async`` waits with this in an event loop
    (``_async.pub_send_async``)."""
    with pub._sync_cond:
        left = _held(pub, started)
        _watch(pub)
        return left


def _held(pub: PubChannel, started: float) -> float | None:
    """:func:`pub_held` with ``pub._sync_cond`` held; drops what expired."""
    blocked = pub._sync_blocked
    now = time.monotonic()
    for sid, expiry in list(blocked.items()):
        if expiry <= now:
            del blocked[sid]
            logger.info(
                "sync-mode subscriber %#x said nothing for %s s; no longer waiting for it",
                sid,
                _sync.LOCK_EXPIRY,
            )
    until = min(blocked.values()) if blocked else _window_used_up(pub, now, started)
    return None if until is None else until - now


def _window_used_up(pub: PubChannel, now: float, started: float) -> float | None:
    """None if every window has room, else when to give up waiting for the
    subscriber of the first full one (_sync.LOCK_EXPIRY without a word from it)."""
    windows = pub._sync_windows
    if not windows:
        return None
    seqs = pub._sync_seqs
    lowest = min(w.acked for w in windows.values())
    while seqs and seqs[0] <= lowest:
        seqs.popleft()
    n = len(seqs)
    until = None
    for sid, w in list(windows.items()):
        out = n if w.acked == lowest else n - bisect.bisect_right(seqs, w.acked)
        if out < w.credit:
            continue
        expiry = max(w.heard, started) + _sync.LOCK_EXPIRY
        if expiry <= now:
            del windows[sid]
            logger.info(
                "sync-mode subscriber %#x acknowledged nothing for %s s; no longer waiting for it",
                sid,
                _sync.LOCK_EXPIRY,
            )
        elif until is None or expiry < until:
            until = expiry
    return until
