"""TEMPORARY: the public transport API of issue 15, mapped onto today's core.

Issue 15 (wip/15) makes ``yoton.transport`` the one public module a plugin
uses; until it is on main, this module is the only place in ``yoton_nats``
that touches core internals, under the names that API proposes
(TRANSPORT_API.md). It is deleted when ``yoton.transport`` lands; nothing
else in the package changes but its imports.
"""

from __future__ import annotations

from typing import Any

from yoton_core import (  # noqa: F401
    BrokenConnectionError,
    ConnectError,
    ConnectionClosedError,
    InvalidArgumentError,
    TimeoutError,  # noqa: A004, F401
    hookimpl,
)
from yoton_core import Connection as _CoreConnection
from yoton_core._address import parse_host_port  # noqa: F401
from yoton_core._connection import STATUS_CONNECTED
from yoton_core._context import Context as _Context
from yoton_core._engine import get_engine as engine  # noqa: F401
from yoton_core._hashing import port_hash  # noqa: F401


class Connection(_CoreConnection):
    """The proposed public subclass contract over today's private one."""

    # -- what the core calls today, forwarded to the public names --------------------
    def _bind(self, address: str, max_tries: int) -> None:
        self.open_bind(address, max_tries)

    def _connect(self, address: str, timeout: float) -> None:
        self.open_connect(address, timeout)

    def _push_raw(self, header: Any, data: bytes) -> None:
        self.send_package(header, data)

    def _request_close(self, reason: str, notify_peer: bool) -> None:
        self.shutdown(reason, notify_peer)

    def _queued_count(self) -> int:
        return self.queued_count()

    def _configure(self, **options: Any) -> None:
        self.configure(**options)

    def _wait_writable(self) -> None:
        self.wait_writable()

    def wait_writable(self) -> None:
        pass

    def set_congested(self, congested: bool) -> None:
        if congested:
            self._note_congestion()
        else:
            self._congestion_check = False

    # -- what a transport implements (public names) ----------------------------------
    def open_bind(self, address: str, max_tries: int) -> None:
        raise NotImplementedError

    def open_connect(self, address: str, timeout: float) -> None:
        raise NotImplementedError

    def send_package(self, header: Any, data: bytes) -> None:
        raise NotImplementedError

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        raise NotImplementedError

    def queued_count(self) -> int:
        return 0

    def configure(self, **options: Any) -> None:
        pass

    # -- what a transport calls (public names) ----------------------------------------
    def set_established(
        self,
        peer_id: int,
        peer_pid: int,
        *,
        hosting: bool,
        hostname1: str,
        port1: int,
        hostname2: str,
        port2: int,
        announce: bool = False,
    ) -> bool:
        del peer_id, peer_pid, hosting
        self._hostname1, self._port1 = hostname1, port1
        self._hostname2, self._port2 = hostname2, port2
        self._status = STATUS_CONNECTED
        self._context._connection_established(self)
        if announce:
            self.announce()
        return True

    def announce(self) -> None:
        """Tell the network a context joined (NEW_CONNECTION), e.g. after a reconnect."""
        self._context._send_context_message("NEW_CONNECTION")

    def deliver(self, flat: list[Any]) -> None:
        self._context._route(self, flat)

    def set_closed(self, reason: str) -> None:
        self._set_closed(reason)

    def set_timed_out(self, flag: bool) -> None:
        self.timedout.emit(self, flag)

    def count_sent(self, n: int, nbytes: int) -> None:
        self._n_sent += n
        self._b_sent += nbytes

    def count_received(self, n: int, nbytes: int) -> None:
        self._n_recv += n
        self._b_recv += nbytes

    def count_dropped(self, n: int) -> None:
        self._n_dropped += n

    @property
    def closing(self) -> bool:
        return self._status <= 1

    def slots_changed(self, added: frozenset[int], removed: frozenset[int]) -> None:
        """Slot interest changed (optional)."""

    def links_changed(self) -> None:
        """The context's other connections changed (optional)."""


def listened_slots(context: Any) -> frozenset[int]:
    """Slots that local channels receive on (``context.listened_slots()``)."""
    return frozenset(context._recv_channels)


def sent_slots(context: Any) -> frozenset[int]:
    """Slots that local channels send on (``context.sent_slots()``; to be proposed)."""
    return frozenset(context._send_channels)


def max_message_size(context: Any) -> int:
    return int(context._max_message_size)


def auth_key(context: Any) -> Any:
    return context._auth_key


# -- slot interest and link notifications: patched in until the core has them ------------

_orig_register = _Context._register_channel
_orig_unregister = _Context._unregister_channel
_orig_established = _Context._connection_established
_orig_closed = _Context._connection_closed


def _notify_slots(ctx: Any, before: frozenset[int]) -> None:
    after = frozenset(ctx._recv_channels)
    if after == before:
        return
    added, removed = after - before, before - after
    for conn in list(ctx._connected):
        if isinstance(conn, Connection):
            conn.slots_changed(added, removed)


def _register(self: Any, channel: Any, slot_out: Any, slot_in: Any) -> None:
    before = frozenset(self._recv_channels)
    _orig_register(self, channel, slot_out, slot_in)
    _notify_slots(self, before)


def _unregister(self: Any, channel: Any) -> None:
    before = frozenset(self._recv_channels)
    _orig_unregister(self, channel)
    _notify_slots(self, before)


def _established(self: Any, conn: Any) -> None:
    _orig_established(self, conn)
    for other in list(self._connected):
        if other is not conn and isinstance(other, Connection):
            other.links_changed()


def _closed(self: Any, conn: Any) -> None:
    _orig_closed(self, conn)
    for other in list(self._connected):
        if other is not conn and isinstance(other, Connection):
            other.links_changed()


_Context._register_channel = _register  # type: ignore[method-assign]
_Context._unregister_channel = _unregister  # type: ignore[method-assign]
_Context._connection_established = _established  # type: ignore[method-assign]
_Context._connection_closed = _closed  # type: ignore[method-assign]
