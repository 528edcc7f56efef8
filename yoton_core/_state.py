"""StateChannel: one value per slot, shared by every context of the network.

2.x semantics (docs/protocol.md#state): ``send`` sets the state, ``recv``
returns the current state at once, the last arrival wins, and a context that
joins gets the current state. 2.x implemented the latter by making *every*
holder of a state rebroadcast it on every NEW_CONNECTION, so one join cost N
messages (docs/protocol.md#differences-from-2x, item 16). Here:

* **Versions.** Our state packages carry a version in ``dest_seq`` (a field
  broadcasts do not use; 2.x receivers and relays ignore it): a hybrid logical
  clock, ``max(highest version seen + 1, microseconds of wall time)``. A
  receiver keeps the highest ``(version, payload)``, so all contexts agree on
  the state whatever order packages arrive in, and a re-send of an old state
  can never undo a newer one. A package from a 2.x peer (``dest_seq`` 0) is
  taken as the newest, which is 2.x's own "last arrival wins".
* **Who re-sends on a join.** The two contexts at the ends of a new
  connection re-send their state at once: the connecting end when the
  connection is established, the binding end when the connecting end's
  NEW_CONNECTION arrives (so everywhere downstream NEW_CONNECTION arrives
  first). Other holders answer NEW_CONNECTION only after a short random delay
  (needed when an end of the new connection has no StateChannel on this slot,
  e.g. a pure relay), and stay silent if an equal or newer state arrives in
  the meantime. A join costs about two messages instead of one per holder.
* **A late channel is a late joiner.** A StateChannel made on a context that
  is already connected asks for the state: one package on the slot's request
  slot (``<slot>.<type>.state-request``), which holders answer as they answer
  NEW_CONNECTION (a direct peer at once, the others after the random delay
  unless someone answered first). 2.x peers have no channel on that slot: they
  pass the request on but cannot answer (they re-send their state only when a
  context joins).
* **send_last is news.** ``send_last()`` called by the user stamps the state
  with a new version, so every peer takes it as an arrival (``received`` fires),
  as 2.x's re-send did; programs use it to re-announce their state. The
  automatic re-sends on a join keep the version, and a peer that holds it stays
  quiet.
* An empty message (``""``, ``b""``) is ignored by ``send``: on the wire an
  empty payload is a connection control package.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from ._block import normalize_block
from ._channels import BaseChannel
from ._engine import get_engine
from ._errors import InvalidArgumentError
from ._hashing import normalize_slot, slot_hash
from ._log import get_logger
from ._message_types import TEXT
from ._wire import Package

__all__ = ["StateChannel"]

logger = get_logger("state")

#: Random delay before a holder answers NEW_CONNECTION (seconds, min and max).
RESEND_DELAY = (0.02, 0.25)
#: The pattern of the slot on which a late StateChannel asks for the state.
REQUEST_PATTERN = "state-request"
#: The payload of such a request (any non-empty payload would do).
REQUEST = b"state?"


def _wall_version() -> int:
    return time.time_ns() // 1000


class StateChannel(BaseChannel):
    """A state (one message) kept in sync between all contexts on the slot.

    ``send(m)`` sets the state everywhere; ``recv()`` returns the current state
    without blocking. A context that joins the network later, or a channel
    made on a context that is connected already, gets the current state. If two
    contexts set the state at about the same time, all contexts still agree on
    one of the two values.

    Args:
        context: The context of this channel.
        slot_base: The slot name (case-insensitive).
        message_type: TEXT (default), BINARY, OBJECT or a custom MessageType.
    """

    _pattern_out = "state"
    _pattern_in = "state"
    _wants_joins = True  # holders re-send the state to a context that joins

    def __init__(self, context: Any, slot_base: str, message_type: Any = TEXT) -> None:
        super().__init__(context, slot_base, message_type)
        mt = self._message_type
        self._encode = mt.message_to_bytes
        self._decode = mt.message_from_bytes
        self._data = b""
        self._message: Any = mt.empty_message()
        self._version = 0  # version of the current state (0: none)
        self._clock = 0  # highest version seen or made
        self._changed = False
        self._startup_pending = False  # our last send waits in the start-up queue
        self._resend_token = 0  # increments to cancel a scheduled re-send
        self._suppress_seq = 0  # recv_seq of the last arrival that makes a re-send moot
        # Requests of late channels: (source id, recv_seq), answered after the
        # batch that brought them (not under the context lock).
        self._requests: list[tuple[int, int]] = []
        # The request slot: holders listen on it; a late channel asks on it.
        self._slot_req = slot_hash(
            normalize_slot(f"{slot_base}.{mt.message_type_name()}.{REQUEST_PATTERN}")
        )
        context._register_channel(self, None, self._slot_req)
        if context._connected:  # a late channel: ask our peers (see the module docstring)
            context._send(REQUEST, self._slot_req, self)

    # -- user API -----------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Set the state to ``message`` (sent only if it differs from the current one).

        An empty message ("" or b"") is ignored.

        Raises:
            OSError: the channel is closed.
        """
        data = self._encode(message)
        if not data:
            return
        ctx = self._context
        with ctx._lock:
            if self._closed:
                raise self._closed_error("Cannot send")
            if data == self._data:
                return
            limit = self._max_message_size
            if len(data) > limit:
                raise InvalidArgumentError(
                    f"message of {len(data)} bytes exceeds the maximum message size of "
                    f"{limit} bytes (Context(max_message_size=...))"
                )
            version = max(self._clock + 1, _wall_version())
            self._set_locked(data, version)
            self._sending_locked()
        ctx._send(data, self._slot_out, self, 0, version)  # type: ignore[arg-type]

    def recv(self, block: Any = False) -> Any:
        """Return the current state at once (``block`` is accepted and ignored)."""
        normalize_block(block)
        return self._message

    def send_last(self) -> None:
        """Send the current state again (if there is one), to re-announce it.

        Every peer takes it as an arrival: ``received`` fires there (as in 2.x),
        although the state did not change. (A context that joins gets the state
        without it.)
        """
        ctx = self._context
        with ctx._lock:
            if self._closed or not self._version:
                return
            data = self._data
            # A new version of the same state: news for the peers that hold it.
            self._version = self._clock = version = max(self._clock + 1, _wall_version())
            self._sending_locked()
        ctx._send(data, self._slot_out, self, 0, version)  # type: ignore[arg-type]

    @property
    def pending(self) -> int:
        """Always 0: a StateChannel has no queue, only the current state."""
        return 0

    # -- internals ------------------------------------------------------------------

    def _sending_locked(self) -> None:
        """A new version goes out (context lock held)."""
        self._startup_pending = not self._context.connection_count
        self._resend_token += 1  # a scheduled re-send of the old one is moot

    def _resend(self) -> None:
        """Send the current state again with its version, for a joiner (peers
        that hold it stay quiet)."""
        ctx = self._context
        with ctx._lock:
            if self._closed or not self._version:
                return
            data, version = self._data, self._version
            self._resend_token += 1
        ctx._send(data, self._slot_out, self, 0, version)  # type: ignore[arg-type]

    def _set_locked(self, data: bytes, version: int) -> bool:
        try:
            message = self._decode(data)
        except Exception as exc:
            logger.warning("ignored an undecodable state on %r: %s", self, exc)
            return False
        self._data = data
        self._message = message
        self._version = version
        if version > self._clock:
            self._clock = version
        return True

    def _deposit(self, pkg: Package) -> None:
        # Engine thread (or a local sender), under the context lock.
        if pkg.slot == self._slot_req:  # a late channel asks (answered in _notify)
            self._requests.append((pkg.source_id, pkg.recv_seq))
            return
        data = pkg.data
        version = pkg.dest_seq
        if not data:
            return
        if version > self._clock:
            self._clock = version
        if version == 0:  # from a 2.x peer: the last arrival wins
            if data == self._data:
                self._suppress_seq = pkg.recv_seq  # someone re-sent it: ours is not needed
                return
            version = max(self._clock + 1, _wall_version())
        elif (version, data) <= (self._version, self._data):
            if version == self._version and data == self._data:
                self._suppress_seq = pkg.recv_seq  # someone re-sent it: ours is not needed
            return
        if self._set_locked(data, version):
            self._changed = True
            self._suppress_seq = pkg.recv_seq

    def _notify(self) -> None:
        requests = self._requests
        while requests:
            source_id, recv_seq = requests.pop(0)
            self._on_new_peer(source_id, recv_seq)  # a late channel is a late joiner
        if self._changed:
            self._changed = False
            super()._notify()

    def _on_new_connection(self, conn: Any) -> None:
        """We are an end of a new connection (engine thread)."""
        if conn.status != "connected":
            return  # the binding end answers the NEW_CONNECTION that follows
        if self._startup_pending:
            # It was in the start-up queue, which went to this connection.
            self._startup_pending = False
            return
        self._resend()

    def _on_new_peer(self, source_id: int, recv_seq: int) -> None:
        """NEW_CONNECTION from ``source_id``, or its late channel's request (the
        routing thread, not under the context lock)."""
        if not self._version or self._closed:
            return
        if self._linked_to(source_id):
            self._resend()  # we are the binding end of that connection (or its neighbour)
            return
        self._resend_token += 1
        token = self._resend_token
        # Arrivals after the NEW_CONNECTION (even those routed earlier in the same
        # batch: context messages are handled last) make our re-send moot.
        after = recv_seq
        delay = random.uniform(*RESEND_DELAY)
        get_engine().spawn(self._resend_later, token, after, delay)

    async def _resend_later(self, token: int, after: int, delay: float) -> None:
        await trio.sleep(delay)
        if token == self._resend_token and self._suppress_seq <= after:
            self._resend()
