"""yoton_nats: yoton networks on a NATS server or cluster (scheme ``nats``).

``ctx.connect("nats://host:4222/BUS")`` (or ``bind``) joins the bus ``BUS``:
every context on that bus, through any server of a NATS cluster, is one yoton
network, and the server filters by slot, so a context receives only what its
channels listen to. With ``YOTON_TRANSPORT=nats`` and
``YOTON_NATS_URL=nats://host:4222`` a program that uses plain ``host:port``
addresses runs on NATS unchanged (the address names the bus). docs/nats.md
explains the choices and their limits.

Modules: ``_protocol`` (the NATS client protocol, sans-IO), ``_busframe``
(yoton packages in NATS messages, sans-IO), ``_address``, ``_client`` (opening
a server session), ``_link`` (the IO of one context on one bus),
``_connection`` (:class:`NatsConnection`); ``testing`` and ``pytest_plugin``
run a real ``nats-server`` for tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._connection import NatsConnection

__all__ = ["NatsConnection"]

hookimpl = pluggy.HookimplMarker("yoton")


@hookimpl
def yoton_connection_types() -> Iterable[type[Any]]:
    from ._connection import NatsConnection

    return [NatsConnection]


def __getattr__(name: str) -> Any:
    if name == "NatsConnection":
        from ._connection import NatsConnection

        return NatsConnection
    raise AttributeError(f"module 'yoton_nats' has no attribute {name!r}")
