"""What a connection's counters said at one moment: :class:`ConnectionStatistics`.

A frozen snapshot, as trio's ``statistics()`` objects: reading it twice gives
the same numbers, and comparing two snapshots tells what happened between them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionStatistics"]


@dataclass(frozen=True)
class ConnectionStatistics:
    """A snapshot of a connection's counters (see :attr:`Connection.stats`).

    Attributes:
        packages_sent: Packages handed to the medium (the OS, the peer context).
        bytes_sent: Their bytes, headers included where the medium has them.
        packages_received: Packages received and routed.
        bytes_received: Their bytes.
        packages_dropped: Packages discarded by a full outgoing queue
            (``queue_params``), or lost by the medium where it can tell.
        queued: Packages waiting in the outgoing queue when the snapshot was taken.
    """

    packages_sent: int
    bytes_sent: int
    packages_received: int
    bytes_received: int
    packages_dropped: int
    queued: int
