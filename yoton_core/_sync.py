"""Sync mode: a SubChannel that cannot keep up slows its publishers down.

Wire protocol (2.x, PROTOCOL.md section 6.2): a subscriber in sync mode sends
the raw words ``b"full"`` / ``b"ok"`` on its outgoing slot (``base.type.sub-pub``,
dest 0), so every PubChannel on that slot in the network hears them. A
publisher blocks its senders while some subscriber is full. Both directions
interoperate with 2.x peers.

What is different from 2.x (section 10, items 6, 9, 24):

* **No crawl.** 2.x let each ``send`` wait up to 1 s and then send anyway, so a
  full subscriber turned a publisher into 1 message per second. Our publisher
  blocks until the *last* full subscriber says ``ok`` and wakes the moment it
  does; nothing waits on a fixed timer.
* **Nothing lost.** While in sync mode the subscriber's inbox does not discard
  at ``queue_params`` N (what was already in flight when ``full`` went out must
  fit); the full/ok exchange keeps it near :data:`HIGH_WATER`. A hard cap of
  :data:`SAFETY_FACTOR` x N still protects memory from a publisher that does not
  take part.
* **Driven by the IO side.** The subscriber's engine notices a filling inbox as
  packages arrive and says ``full`` at once; reads say ``ok`` as soon as the
  inbox drains. All transitions run in the engine thread, so ``full`` and ``ok``
  can never overtake each other. An engine ticker re-sends ``full`` every
  :data:`REFRESH_INTERVAL` s while full (2.x publishers expire a lock after
  10 s) and catches a transition a racing read missed. Without a loop nothing
  is posted to the event queue.
* **Expiry.** A lock expires :data:`LOCK_EXPIRY` s after the subscriber's last
  ``full`` (a subscriber that died cannot block forever), and at once when the
  connection to that subscriber closes. Closing a SubChannel that is full sends
  ``ok`` (2.x's close left publishers locked and broke the next ``recv``).
* **Links that come and go.** A word that falls due while the subscriber has no
  connection is said once it has one again (the state flips only when said).
  That includes the "ok" owed when a full subscriber leaves sync mode or is
  closed: its ticker stays until the "ok" is out (or until no publisher can
  still hold the lock, :data:`LOCK_EXPIRY` after our last "full"), and a sync
  mode switched on again on the same slot of the same context takes the debt
  over. Any closed connection of the publisher's context drops every remote
  lock (an "ok" sent while that link was down is lost for good), and a full
  subscriber repeats ``full`` when it sees a new context join (NEW_CONNECTION).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._engine import get_engine
from ._log import get_logger
from ._wire import Package

if TYPE_CHECKING:
    from ._pubsub import PubChannel, SubChannel

__all__ = [
    "SubSync",
    "pub_expire",
    "pub_forget",
    "pub_on_sync_message",
    "pub_wait",
    "pub_wake",
    "set_sync_mode",
]

logger = get_logger("pubsub")

FULL = b"full"
OK = b"ok"
#: A subscriber holding more than this many messages says "full"...
HIGH_WATER = 256
#: ...and "ok" again once it holds fewer than this.
LOW_WATER = 64
#: Re-send "full" this often while full (2.x: 4 s).
REFRESH_INTERVAL = 4.0
#: A publisher's lock by one subscriber expires this long after its last "full" (2.x: 10 s).
LOCK_EXPIRY = 10.0
#: In sync mode a subscriber's inbox discards only beyond this many times N.
SAFETY_FACTOR = 100


class SubSync:
    """The sync-mode state of one SubChannel (transitions in the engine thread)."""

    def __init__(self, sub: SubChannel) -> None:
        self._sub = sub
        self._queue = sub._queue
        self.full = False
        self._scheduled = False
        self._active = True
        self._last_sent = 0.0
        self._last_full = 0.0
        self._engine = get_engine()
        self._cap = sub._context._queue_n * SAFETY_FACTOR
        self._key = (id(sub._context), sub._slot_out)  # see _unsaid_ok

    # -- hot paths ------------------------------------------------------------------

    def deposit(self, pkg: Package) -> None:
        """Replaces ``sub._deposit`` in sync mode (under the context lock)."""
        q = self._queue
        if len(q) >= self._cap:
            sub = self._sub
            sub._n_dropped += 1
            if not sub._context._queue_discard_old:
                return
            q.popleft()
        q.append((pkg.recv_seq, pkg.data))
        if not self.full and not self._scheduled and len(q) > HIGH_WATER:
            self._schedule()

    def after_read(self) -> None:
        """Called after every read (user thread); cheap unless "ok" is due."""
        if self.full and not self._scheduled and len(self._queue) < LOW_WATER:
            self._schedule()

    # -- engine side ------------------------------------------------------------------

    def _schedule(self) -> None:
        self._scheduled = True
        self._engine.run_sync_soon(self._update)

    def _update(self) -> None:
        self._scheduled = False
        if not self._active:
            return
        n = len(self._queue)
        # The state flips only once the word is out: one that falls due while we
        # have no connection is said by the ticker after we reconnect (a lost "ok"
        # left publishers behind a relay blocked until LOCK_EXPIRY).
        if not self.full and n > HIGH_WATER:
            self.full = self._say(FULL)
        elif self.full and n < LOW_WATER:
            self.full = not self._say(OK)

    def _tick(self, _now: float) -> None:
        if not self._active:
            self._release()  # left sync mode owing an "ok" (see _release)
            return
        self._update()
        if self.full and time.monotonic() - self._last_sent >= REFRESH_INTERVAL:
            self._say(FULL)

    def _say(self, word: bytes) -> bool:
        """Send ``word`` to the publishers; False if there is nobody to tell yet."""
        sub = self._sub
        ctx = sub._context
        if not ctx._connected and sub._slot_out not in ctx._recv_channels:
            return False  # nobody to tell (2.x: only when connected); the ticker retries
        self._last_sent = now = time.monotonic()
        if word == FULL:
            self._last_full = now
        try:
            ctx._send(word, sub._slot_out, sub)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - defensive
            logger.exception("could not send sync-mode %r from %r", word, sub)
        return True

    def on_new_peer(self) -> None:
        """A context joined the network (engine thread): a publisher that just
        (re)connected has no lock of ours, so repeat "full" at once."""
        if self._active and self.full:
            self._say(FULL)

    def start(self) -> None:
        self._engine.add_ticker(self)
        self._engine.run_sync_soon(self._begin)

    def _begin(self) -> None:
        # A previous sync mode on this slot of this context (this channel, or
        # one closed before it) may still owe the publishers an "ok": from
        # their side we are the same subscriber (they know the context id
        # only), so take the debt over. Saying it is then up to us (at once
        # if our inbox is short), and the old one can no longer say a late
        # "ok" over a "full" of ours.
        old = _unsaid_ok.pop(self._key, None)
        if old is not None:
            old._forget()
            self.full = True  # (also if we were stopped already: then _release says it)
            self._last_sent = old._last_sent
            self._last_full = old._last_full
        self._update()

    def stop(self) -> None:
        """Leave sync mode; a full subscriber releases its publishers."""
        self._active = False
        # The ticker stays until the "ok" is out: see _release.
        self._engine.run_sync_soon(self._release)

    def _release(self) -> None:
        """Out of sync mode (engine thread): say "ok" if we are full, once we can.

        Without a connection the "ok" cannot be said now; it used to be
        dropped for good (the state was cleared whether or not the word went
        out), which left a publisher behind a relay, whose own link stayed up,
        blocked until :data:`LOCK_EXPIRY`. So the ticker stays and calls this
        again until there is a link. It stops trying once no publisher can
        still hold our lock: they drop it :data:`LOCK_EXPIRY` after the last
        "full" they got (doubled here, for a "full" that was late on its way).
        """
        if self.full:
            if self._say(OK):
                self.full = False
            elif time.monotonic() - self._last_full < 2 * LOCK_EXPIRY:
                _unsaid_ok[self._key] = self
                self._engine.add_ticker(self)  # (idempotent) retry on the next tick
                return
        self._forget()

    def _forget(self) -> None:
        """Stop: nothing (more) to say (engine thread)."""
        self.full = False
        self._engine.remove_ticker(self)
        if _unsaid_ok.get(self._key) is self:
            del _unsaid_ok[self._key]


#: ``(id(context), outgoing slot)`` -> the SubSync that left sync mode still
#: owing the publishers an "ok" (engine thread only). The entry keeps the
#: SubSync, and so its context, alive, so the id cannot be reused meanwhile.
_unsaid_ok: dict[tuple[int, int | None], SubSync] = {}


def set_sync_mode(sub: SubChannel, value: Any) -> None:
    """``SubChannel.set_sync_mode``: switch sync mode on or off."""
    on = bool(value)
    current = sub._sync
    if on == (current is not None):
        return
    if on:
        if sub._closed:
            return
        sync = SubSync(sub)
        sub._sync = sync
        sub._deposit = sync.deposit  # type: ignore[method-assign]  # instance override
        sync.start()
    else:
        assert current is not None
        sub._sync = None
        sub.__dict__.pop("_deposit", None)  # back to the class's bounded inbox
        current.stop()
    # A sync-mode subscriber acts on joins: ask for announcements (_joins.py).
    sub._context._joins_changed()


# -- the publisher side ------------------------------------------------------------


def pub_on_sync_message(pub: PubChannel, pkg: Package) -> None:
    """A subscriber said "full" or something else ("ok"); under the context lock."""
    cond = pub._sync_cond
    blocked = pub._sync_blocked
    with cond:
        if pkg.data == FULL:
            blocked[pkg.source_id] = time.monotonic() + LOCK_EXPIRY
        elif blocked.pop(pkg.source_id, None) is not None and not blocked:
            cond.notify_all()
            _wake_async(pub)


def pub_forget(pub: PubChannel, peer: int) -> None:
    """A connection of our context (to ``peer``) closed: forget the remote locks.

    Not only ``peer``'s: a subscriber behind that link (through relays) may have
    said "ok" while it was down, and that "ok" is lost for good, which blocked
    us until :data:`LOCK_EXPIRY` (found by tests/test_soak.py with publishers
    that reconnect). We cannot tell which link a lock came through, so every
    lock but those of subscribers in our own context goes. A subscriber that is
    still full says "full" again when it sees our NEW_CONNECTION, else within
    :data:`REFRESH_INTERVAL`; its sync-mode inbox holds SAFETY_FACTOR x N meanwhile.
    """
    del peer  # see above: every remote lock goes
    own = pub._context._id
    cond = pub._sync_cond
    with cond:
        blocked = pub._sync_blocked
        for sid in [sid for sid in blocked if sid != own]:
            del blocked[sid]
        if not blocked:
            cond.notify_all()
            _wake_async(pub)


def pub_wake(pub: PubChannel) -> None:
    """Wake blocked senders (the channel closed)."""
    with pub._sync_cond:
        pub._sync_cond.notify_all()
        _wake_async(pub)


def _wake_async(pub: PubChannel) -> None:
    """Wake (and forget) the event-loop senders waiting on ``pub`` (cond held)."""
    waiters = pub._sync_async_waiters
    if waiters:
        pub._sync_async_waiters = []
        for wake in waiters:
            wake()


def pub_expire(pub: PubChannel) -> float | None:
    """Drop the locks that expired; seconds until the next one expires, None if none is left."""
    with pub._sync_cond:
        return _expire_locked(pub)


def _expire_locked(pub: PubChannel) -> float | None:
    """:func:`pub_expire` with ``pub._sync_cond`` held."""
    blocked = pub._sync_blocked
    now = time.monotonic()
    for sid, expiry in list(blocked.items()):
        if expiry <= now:
            del blocked[sid]
            logger.info(
                "sync-mode subscriber %#x said nothing for %s s; no longer waiting for it",
                sid,
                LOCK_EXPIRY,
            )
    if not blocked:
        return None
    return min(blocked.values()) - now


def pub_wait(pub: PubChannel) -> None:
    """Block the sending thread while some sync-mode subscriber is full.

    (``PubChannel.send_async`` waits for the same thing in an event loop:
    see ``_async.pub_send_async``.)
    """
    if get_engine().in_io_thread():
        return  # never block the IO loop: it is what delivers the "ok"
    cond = pub._sync_cond
    pub._sync_waits = getattr(pub, "_sync_waits", 0) + 1  # statistics (tests, benchmarks)
    with cond:
        while pub._sync_blocked and not pub._closed:
            left = _expire_locked(pub)
            if left is None:
                break
            cond.wait(left)
