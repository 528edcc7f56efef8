"""Sync mode: a SubChannel that cannot keep up slows its publishers down.

This module is the protocol and the subscriber's half; ``_sync_pub.py`` is the
publisher's. Wire protocol (2.x, docs/protocol.md#sync-mode): a subscriber in sync mode sends
the raw words ``b"full"`` / ``b"ok"`` on its outgoing slot (``base.type.sub-pub``,
dest 0), so every PubChannel on that slot in the network hears them. A
publisher blocks its senders while some subscriber is full. Both directions
interoperate with 2.x peers.

**The bound.** "full" alone cannot keep an inbox within its size: what the
publisher sends between the subscriber's "full" and its arrival still comes.
With ``queue_params=(5000, "old")``, a subscriber that read nothing for 1.5 s
and a publisher thread sending 15,000 short messages, the inbox reached 4,100 to
13,700 messages (tcp, unix and inproc, one process; it varies with how late the
engine thread gets the GIL to carry the "full"): what counts is the publisher's
outgoing queue (up to 4,096 before its own back-pressure, and 10,000 are pushed
in a few milliseconds) plus socket buffers plus the messages the subscriber
routed meanwhile, none of which any threshold can know. So our subscribers give
their publishers a *window*, counted in messages, not time:

* Every "ok" of ours carries a credit ``C``: ``b"ok 2372"`` (2.x compares the
  word with "full" and so reads any other word as "ok"). Unicast to one
  publisher (``dest_id``), its ``dest_seq`` acknowledges the newest sequence
  number of that publisher's context we have in our inbox.
* A publisher that holds a window sends only while fewer than ``C`` of its
  messages on that slot are newer than the acknowledged number; what sits in
  its outgoing queue, in socket buffers or in a relay all counts, because the
  count starts at ``send``.
* The subscriber acknowledges only while it holds at most ``high`` unread
  messages (it says "full" above that). Its inbox therefore holds at most
  ``high`` acknowledged messages plus ``C`` per publisher. ``high = min(256,
  N // 2)`` and ``C = (N - high) // (k + 1)`` for ``k`` publishers seen (one
  share kept for a publisher that joins), so the inbox stays within ``N``. In
  the scenario above it now peaks at about 2,400 of 5,000 (256 plus one window
  of 2,372) on every transport; in the million-message burst of
  tests/test_syncmode.py (N = 10,000) at 4,871 instead of 13,900 to 26,200, in
  the same time (about 6 s on a loaded machine, as before).

A publisher is held to the window from the moment it has heard of the
subscriber. The subscriber announces its window (a broadcast "ok C") when sync
mode goes on, when its context gets a connection and when a context joins the
network, and acknowledges a publisher it has not seen before at once; what a
publisher sent before the announcement reached it is bounded by "full" only,
as with 2.x. Two publishers that join at once, or a join that makes a
publisher forgive what is still on its way (below), can let one more window
in. A 2.x publisher ignores windows and is held by "full"; a 2.x subscriber
says plain "ok", which holds no window.

What is different from 2.x (docs/protocol.md#differences-from-2x, items 6, 9, 24):

* **No crawl.** 2.x let each ``send`` wait up to 1 s and then send anyway, so a
  full subscriber turned a publisher into 1 message per second. Our publisher
  blocks until the *last* full subscriber says ``ok`` (or acknowledges) and
  wakes the moment it does; nothing waits on a fixed timer.
* **Nothing lost.** The sync-mode inbox does not discard at ``queue_params`` N
  (a 2.x publisher, or one that had not heard of us yet, can overshoot it); a
  hard cap of :data:`SAFETY_FACTOR` x N still protects memory from a publisher
  that does not take part.
* **Driven by the IO side.** The subscriber's engine notices a filling inbox as
  packages arrive and says ``full`` at once; reads say ``ok`` as soon as the
  inbox drains. All transitions and acknowledgements run in the engine thread,
  so ``full`` and ``ok`` can never overtake each other. An engine ticker re-sends
  ``full`` every :data:`REFRESH_INTERVAL` s while full (2.x publishers expire a
  lock after 10 s), acknowledges what arrived since the last acknowledgement and
  catches a transition a racing read missed. Without a loop nothing is posted to
  the event queue.
* **Expiry.** A lock expires :data:`LOCK_EXPIRY` s after the subscriber's last
  ``full`` (a subscriber that died cannot block forever), and at once when the
  connection to that subscriber closes; so does a window that held a sender back
  that long without a word. Closing a SubChannel or leaving sync mode says plain
  ``ok``, which lifts the lock and the window (2.x's close left publishers
  locked and broke the next ``recv``).
* **Links that come and go.** A word that falls due while the subscriber has no
  connection is said once it has one again (the state flips only when said).
  That includes the "ok" owed when a subscriber leaves sync mode or is closed:
  its ticker stays until the "ok" is out (or until no publisher can still hold
  the lock, :data:`LOCK_EXPIRY` after our last "full"), and a sync mode switched
  on again on the same slot of the same context takes the debt over. Any closed
  connection of the publisher's context drops every remote lock and window (an
  "ok" sent while that link was down is lost for good), and a subscriber repeats
  "full", or announces its window, when it sees a new context join. Then, or
  when its own context gets a connection, its next broadcast "ok C" has a
  nonzero ``dest_seq``: "forgive", stop counting what you sent before as on its
  way (a link that came back lost what was on it, which would hold the window
  until :data:`LOCK_EXPIRY`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._engine import get_engine
from ._log import get_logger
from ._wire import Package

if TYPE_CHECKING:
    from ._pubsub import SubChannel

__all__ = ["FULL", "LOCK_EXPIRY", "SubSync", "credit_of", "set_sync_mode"]

logger = get_logger("pubsub")

FULL = b"full"
OK = b"ok"
#: A subscriber holding more than this many messages (at most N // 2) says "full"...
HIGH_WATER = 256
#: ...and "ok" again once it holds fewer than this (at most a quarter of the above).
LOW_WATER = 64
#: Re-send "full" this often while full (2.x: 4 s).
REFRESH_INTERVAL = 4.0
#: A publisher's lock by one subscriber expires this long after its last "full" (2.x: 10 s).
LOCK_EXPIRY = 10.0
#: In sync mode a subscriber's inbox discards only beyond this many times N.
SAFETY_FACTOR = 100
#: A publisher that sent nothing for this long no longer takes a share of the window.
SOURCE_IDLE = 30.0
#: The ``dest_seq`` of a broadcast "ok C" that asks publishers to forgive (see above).
FORGIVE = 1


def thresholds(n: int) -> tuple[int, int]:
    """``(high, low)`` for an inbox of size ``n``: "full" above high, "ok" below low."""
    high = min(HIGH_WATER, n // 2)
    return high, max(1, min(LOW_WATER, high // 4))


def credit_of(word: bytes) -> int | None:
    """The credit of an "ok C" word, or None for any other word (a plain "ok")."""
    if word[:3] == b"ok " and 3 < len(word) <= 12 and word[3:].isdigit():
        return int(word[3:]) or None
    return None


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
        n = sub._context._queue_n
        self._cap = n * SAFETY_FACTOR
        self._high, self._low = thresholds(n)
        self._room = n - self._high  # shared by what our publishers may have on its way
        # Source (publisher context) id -> newest seq in our inbox / acknowledged.
        self._last: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._seen: dict[int, tuple[int, float]] = {}  # (seq, when it changed): idle sources
        self._since = 0  # deposits since the last acknowledgements
        self._ack_every = max(1, self._credit() // 4)
        self._windowed = False  # publishers may hold a window of ours
        self._announce = True  # our window is due to be announced
        self._forgive = False  # ... with FORGIVE (a link came, see the module docstring)
        self._key = (id(sub._context), sub._slot_out)  # see _unsaid_ok

    def _credit(self) -> int:
        return max(1, self._room // (len(self._last) + 1))

    # -- hot paths ------------------------------------------------------------------

    def deposit(self, pkg: Package) -> None:
        """``sub._deposit`` in sync mode (under the context lock)."""
        q = self._queue
        if len(q) >= self._cap:
            sub = self._sub
            sub._n_dropped += 1
            if not sub._context._queue_discard_old:
                return
            q.popleft()
        q.append(pkg.data)
        self._sub._note_seqs(pkg.recv_seq, 1)
        last = self._last
        sid = pkg.source_id
        fresh = sid not in last
        last[sid] = pkg.source_seq
        self._since += 1
        if self.full or self._scheduled:
            return
        if fresh or self._since >= self._ack_every or len(q) > self._high:
            self._schedule()

    def after_read(self) -> None:
        """Called after every read (user thread); cheap unless "ok" is due."""
        if self.full and not self._scheduled and len(self._queue) < self._low:
            self._schedule()

    # -- engine side ------------------------------------------------------------------

    def _schedule(self) -> None:
        self._scheduled = True
        self._engine.run_sync_soon(self._update)

    def _update(self) -> None:
        self._scheduled = False
        if not self._active:
            return
        # Newest seqs first, the inbox length after: a package deposited in
        # between is counted in n, so the bound holds (module docstring).
        self._since = 0
        last = self._last.copy()
        n = len(self._queue)
        # The state flips only once the word is out: one that falls due while we
        # have no connection is said by the ticker after we reconnect (a lost "ok"
        # left publishers behind a relay blocked until LOCK_EXPIRY).
        if not self.full and n > self._high:
            self.full = self._say(FULL)
        elif self.full and n < self._low:
            self.full = not self._say(OK)
            self._announce = self.full
        if self.full or n > self._high:
            return
        if self._announce:
            self._announce = not self._say(OK)
        self._acknowledge(last)

    def _acknowledge(self, last: dict[int, int]) -> None:
        """Tell each publisher the newest of its messages we hold, with its credit."""
        acked = self._acked
        credit = self._credit()
        self._ack_every = max(1, credit // 4)
        word = b"ok %d" % credit
        for sid, seq in last.items():
            if seq > acked.get(sid, 0) and self._say(word, sid, seq):
                acked[sid] = seq

    def _tick(self, now: float) -> None:
        if not self._active:
            self._release()  # left sync mode owing an "ok" (see _release)
            return
        self._update()
        if self.full and time.monotonic() - self._last_sent >= REFRESH_INTERVAL:
            self._say(FULL)
        self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        """A publisher silent for SOURCE_IDLE s no longer takes a share of the
        window (it still holds its last credit; if it comes back it is acknowledged
        at once, as new)."""
        seen = self._seen
        for sid, seq in self._last.copy().items():
            old = seen.get(sid)
            if old is None or old[0] != seq:
                seen[sid] = (seq, now)
            elif now - old[1] >= SOURCE_IDLE:
                del seen[sid]
                self._last.pop(sid, None)
                self._acked.pop(sid, None)

    def _say(self, word: bytes, dest_id: int = 0, dest_seq: int = 0) -> bool:
        """Send ``word`` to the publishers (or one); False if there is nobody to tell yet.

        An "ok" said in sync mode carries our credit (see the module docstring).
        """
        sub = self._sub
        ctx = sub._context
        forgive = False
        if word == OK and self._active:
            word = b"ok %d" % self._credit()
            if not dest_id and self._forgive:
                dest_seq = FORGIVE
                forgive = True
        if word != FULL:
            self._windowed = self._active
        if dest_id == ctx.id:  # a publisher in our own context
            pub = ctx._recv_channels.get(sub._slot_out)  # type: ignore[arg-type]
            if pub is not None:
                pub._deposit(Package(word, sub._slot_out, dest_id, 0, dest_id, dest_seq))  # type: ignore[arg-type]
            return True
        if not ctx.connection_count and sub._slot_out not in ctx._recv_channels:
            return False  # nobody to tell (2.x: only when connected); the ticker retries
        if not dest_id:
            self._last_sent = now = time.monotonic()
            if word == FULL:
                self._last_full = now
        try:
            ctx._send(word, sub._slot_out, sub, dest_id, dest_seq)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - defensive
            logger.exception("could not send sync-mode %r from %r", word, sub)
        if forgive:
            self._forgive = False
        return True

    def on_new_peer(self) -> None:
        """A context joined the network, or ours got a connection: a publisher
        that just (re)connected has no lock or window of ours, so repeat "full",
        or announce the window, at once.

        The NEW_CONNECTION is routed by whichever thread reads the socket (the
        poller, or a reader that borrowed it): the work is handed to the engine
        thread, like every transition. Said there, it raced the engine's own
        ``_update``: an acknowledgement decided before the inbox filled went
        out after our "full", and a 2.x publisher reads any word but "full" as
        "ok".
        """
        engine = self._engine
        if not engine.in_engine_thread():
            engine.run_sync_soon(self.on_new_peer)
            return
        if not self._active:
            return
        self._forgive = True
        if self.full:
            self._say(FULL)
        else:
            self._announce = True
            self._update()

    def start(self) -> None:
        self._engine.add_ticker(self._tick)
        self._engine.run_sync_soon(self._begin)

    def _begin(self) -> None:
        # A previous sync mode on this slot of this context (this channel, or
        # one closed before it) may still owe the publishers an "ok": from
        # their side we are the same subscriber (they know the context id
        # only), so take the debt over. Saying it is then up to us (at once
        # if our inbox is short; our announced window replaces the old one),
        # and the old one can no longer say a late "ok" over a "full" of ours.
        old = _unsaid_ok.pop(self._key, None)
        if old is not None:
            full = old.full
            old._forget()
            self.full = full  # (if we were stopped already: then _release says it)
            self._windowed = True
            self._last_sent = old._last_sent
            self._last_full = old._last_full
        self._update()

    def stop(self) -> None:
        """Leave sync mode; a full subscriber releases its publishers."""
        self._active = False
        # The ticker stays until the "ok" is out: see _release.
        self._engine.run_sync_soon(self._release)

    def _release(self) -> None:
        """Out of sync mode (engine thread): say plain "ok" if a publisher may
        hold a lock or a window of ours, once we can.

        Without a connection the "ok" cannot be said now; it used to be
        dropped for good (the state was cleared whether or not the word went
        out), which left a publisher behind a relay, whose own link stayed up,
        blocked until :data:`LOCK_EXPIRY`. So the ticker stays and calls this
        again until there is a link. It stops trying once no publisher can
        still hold our lock: they drop it :data:`LOCK_EXPIRY` after the last
        "full" they got (doubled here, for a "full" that was late on its way).
        """
        if self.full or self._windowed:
            if self._say(OK):
                self.full = self._windowed = False
            elif time.monotonic() - max(self._last_full, self._last_sent) < 2 * LOCK_EXPIRY:
                _unsaid_ok[self._key] = self
                self._engine.add_ticker(self._tick)  # (idempotent) retry on the next tick
                return
        self._forget()

    def _forget(self) -> None:
        """Stop: nothing (more) to say (engine thread)."""
        self.full = self._windowed = False
        self._engine.remove_ticker(self._tick)
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
        sub._inbox_inline = False  # every deposit goes through SubChannel._deposit
        sync.start()
    else:
        assert current is not None
        sub._sync = None
        sub._inbox_inline = type(sub)._inbox_inline  # back to the class's bounded inbox
        current.stop()
    # A sync-mode subscriber acts on joins: ask for announcements (_joins.py).
    sub._context._joins_changed()
