"""Join announcements only where someone needs them: a capability of our own ends.

A context that connects broadcasts the context message ``NEW_CONNECTION``
(docs/protocol.md#context-messages), and every relay passes it on to all its other links.
Only two things act on it: a :class:`StateChannel` (its holders re-send the
state to the newcomer) and a subscriber in sync mode (it repeats ``full``). A
hub with N peers and neither relays N - 1 packages per join, N^2 / 2 for N
joins: 1,000 peers took 16.6 s to connect, 2,000 over 35 s.

Between two ends of this project each side tells the other whether it wants
join announcements on that link: its own channels need them, or the peer of
one of its *other* links wants them (2.x and older peers always count as
wanting them, so wherever they are, everything is as before). A relay passes
``NEW_CONNECTION`` on only along links whose peer wants it.

* **In the handshake**: the capability and the first answer travel as
  trailing whitespace of the 2.x ``YOTON!`` line, which 2.x's parser strips
  (docs/protocol.md#capabilities): ``" \\t"`` means "I speak this, and want no
  announcements now", ``"\\t "`` "I speak this, and want them". A peer whose line
  has neither (2.x, an older yoton) is sent everything, as before.
* **Afterwards**: when the answer for a link changes (a StateChannel is made
  or closed, sync mode switches, a wanting peer comes or goes), a
  :class:`~._wire.ConnectionMessage` ``JOINS 1`` / ``JOINS 0`` says so. 2.x
  never sees one (it is only sent to peers that announced the capability).

Races. An answer is news for the peer only when it arrives; meanwhile a join
may pass. Two rules keep that from losing one: a context that connects always
announces its own join to its direct peers (one package per link, the flood
was the relaying), and a relay keeps the joins it did not pass on for
:data:`REPLAY_SECONDS`, and passes them on to a link whose peer starts to want
them (duplicates are dropped by sequence number, as always).

The answer for link L is ``local or (wanters - L wants) > 0``: it depends only
on whether local channels want joins and on how many links' peers do. A join
that changes neither (the common case: a hub whose peers have no such
channels) therefore costs one check of the new link, not a pass over all of
them, and joining stays linear in the number of peers.

"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from ._wire import CONTROL, SLOT_DUMMY

if TYPE_CHECKING:
    from ._channels import BaseChannel
    from ._connection import Connection
    from ._ctxlock import ContextLock

__all__ = [
    "JOINS_OFF",
    "JOINS_ON",
    "LINE_JOINS_OFF",
    "LINE_JOINS_ON",
    "NEW_CONNECTION",
    "JoinAnnouncer",
]

#: Trailing whitespace of a handshake line (see the module docstring).
LINE_JOINS_OFF = b" \t"
LINE_JOINS_ON = b"\t "
#: The connection messages that change the answer afterwards.
JOINS_ON = b"JOINS 1"
JOINS_OFF = b"JOINS 0"
NEW_CONNECTION = b"NEW_CONNECTION"
#: How long a relay keeps a join it did not pass on, and how many at most.
REPLAY_SECONDS = 2.0
REPLAY_MAX = 256


class JoinAnnouncer:
    """Who gets ``NEW_CONNECTION``; mixed into :class:`~._context.Context`.

    Every method that reads or changes the per-link state runs under the
    context lock, so answers leave in the order they were decided.
    """

    # Owned and initialised by Context (see Context.__init__). The per-link
    # state lives here, not on the connections: a transport's attributes are
    # its own (see _connection.py). Until a peer's handshake says otherwise it
    # speaks 2.x: it gets every NEW_CONNECTION and counts as wanting them.
    _lock: ContextLock
    _connected: tuple[Connection, ...]
    _send_channels: dict[int, BaseChannel]
    #: Links whose peer wants announcements (2.x and older peers always do).
    _joins_wanting: set[Connection]
    #: Links whose peer speaks the capability, and what we last told each.
    _joins_told: dict[Connection, bool | None]
    #: Links whose peer said it wants no announcements now.
    _joins_declined: set[Connection]
    #: (local, wanters capped at 2, the only wanter when there is one) of the
    #: last full pass: the answers of every link depend on nothing else.
    _join_level: tuple[bool, int, Any]
    #: Joins not passed on to every link: (time, header, payload, came in on).
    _joins_unsent: collections.deque[tuple[float, Any, bytes, Connection]]

    def _joins_local(self) -> bool:
        """Whether a channel of this context acts on joins (state, sync mode)."""
        return any(ch._wants_joins for ch in list(self._send_channels.values()))

    def _joins_level(self) -> tuple[bool, int, Any]:
        wanting = self._joins_wanting
        only = next(iter(wanting)) if len(wanting) == 1 else None
        return (self._joins_local(), min(len(wanting), 2), only)

    def _joins_answer(self, conn: Connection) -> bool:
        """Whether ``conn``'s peer should send us announcements."""
        level = self._join_level
        if level[0] or level[1] >= 2:
            return True
        return level[1] == 1 and level[2] is not conn

    def _joins_from_handshake(self, conn: Connection, joins: tuple[bool, bool] | None) -> None:
        """Keep what ``conn``'s handshake said: (the peer wants joins, what we told it).

        Called before the link is established; None: the peer speaks 2.x.
        """
        if joins is not None:
            with self._lock:
                peer_wants, told = joins
                self._joins_told[conn] = told
                if not peer_wants:
                    self._joins_declined.add(conn)

    def _joins_for_handshake(self) -> bool:
        """The answer to put in the handshake line of a new link (any thread, no lock).

        Corrected under the lock when the link is established, should anything
        change meanwhile (:meth:`_joins_link_up`).
        """
        return self._joins_local() or bool(self._joins_wanting)

    def _joins_refresh(self, only: Connection | None = None) -> None:
        """Tell every link whose answer changed (caller holds the context lock).

        ``only``: the state changed for this link alone; a full pass is made
        only if the level changed too.
        """
        level = self._joins_level()
        if level != self._join_level:
            self._join_level = level
            links: Any = self._connected
        elif only is not None:
            links = (only,)
        else:
            return
        told = self._joins_told
        for conn in links:
            if conn in told:  # the peer speaks the capability
                want = self._joins_answer(conn)
                if want != told[conn]:
                    told[conn] = want
                    payload = JOINS_ON if want else JOINS_OFF
                    conn.send_package((CONTROL, SLOT_DUMMY, 0, 0, 0, 0, len(payload)), payload)

    def _joins_changed(self) -> None:
        """Local channels' need may have changed (a channel came, went, or switched)."""
        with self._lock:
            self._joins_refresh()

    def _joins_link_up(self, conn: Connection) -> None:
        """``conn`` just joined ``_connected`` (caller holds the context lock)."""
        if conn not in self._joins_declined:
            self._joins_wanting.add(conn)
        self._joins_refresh(conn)

    def _joins_link_down(self, conn: Connection) -> None:
        """``conn`` left ``_connected`` (caller holds the context lock)."""
        self._joins_wanting.discard(conn)
        self._joins_declined.discard(conn)
        self._joins_told.pop(conn, None)
        self._joins_refresh()

    def _peer_joins_changed(self, conn: Connection, want: bool) -> None:
        """``conn``'s peer said ``JOINS 1`` or ``JOINS 0`` (the reading thread)."""
        with self._lock:
            declined = self._joins_declined
            if (conn not in declined) == want:
                return
            if want:
                declined.discard(conn)
                self._joins_replay(conn)
            else:
                declined.add(conn)
            if conn in self._connected:
                if want:
                    self._joins_wanting.add(conn)
                else:
                    self._joins_wanting.discard(conn)
                self._joins_refresh(conn)

    def _joins_skipped(self, came_in: Connection, header: Any, data: bytes) -> None:
        """A relayed join was not passed on to every link (caller holds the lock)."""
        unsent = self._joins_unsent
        if len(unsent) >= REPLAY_MAX:
            unsent.popleft()
        unsent.append((time.monotonic(), header, data, came_in))

    def _joins_replay(self, conn: Connection) -> None:
        """``conn``'s peer now wants joins: pass on the recent ones it missed (lock held)."""
        unsent = self._joins_unsent
        oldest = time.monotonic() - REPLAY_SECONDS
        while unsent and unsent[0][0] < oldest:
            unsent.popleft()
        for _t, header, data, came_in in unsent:
            if came_in is not conn:
                conn.send_package(header, data)
