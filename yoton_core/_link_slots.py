"""Every attribute of a stream link, declared once, as slots.

Why slots: a :class:`~._stream_link.StreamLink` carries ~46 attributes (its
queue and counters, the direct-write state, the receive side, the tasks'
scopes). CPython 3.11 keeps an instance's attributes in a compact
shared-key array only up to 30 names; past that every link had a real
``__dict__``, and each attribute read or write on the hot paths -- the
context's fan-out loop, ``send_package``, the sender task -- was a dict
lookup. As slots they are fixed offsets (callgrind, one TCP link,
``Context._send`` of a 100-byte message: 7,333 -> 7,132 instructions).

The two mixins (:class:`~._stream_queue.StreamQueue`, the send side, and
:class:`~._stream_receive.StreamReceiver`, the receive side) derive from
:class:`LinkSlots` and add no slots of their own, nor does ``StreamLink``:
two bases with slots of their own cannot be combined, and one list is also
the one place that names what a link holds. A name missing here is an
``AttributeError`` at its first assignment, which every test of a link meets.
"""

from __future__ import annotations

__all__ = ["LinkSlots"]


class LinkSlots:
    """The common base of a stream link's parts: its attributes as slots."""

    __slots__ = (
        # -- the link itself (_stream_link.py)
        "_conn",
        "_context",
        "_engine",
        "_log",
        "_route",
        "_route_run",
        "_scope",
        "_serve_scope",
        "_graceful",
        "_close_sent",
        "_end_reason",
        "_ended",
        "_hb_due",
        "_listening",
        "_sock",
        # -- the send side (_stream_queue.py)
        "_outq",
        "_pushed",
        "_fan_base",
        "_bytes_pushed",
        "_discarded",
        "_bytes_discarded",
        "_written",
        "_bytes_written",
        "_direct_written",
        "_direct_bytes",
        "_wake_pending",
        "_wake_pushed",
        "_send_event",
        "_flush_cond",
        "_flush_waiters",
        "_drain_waiters",
        "_congestion_check",
        "_gave_up",
        "_wlock",
        "_writing",
        "_partial",
        "_partial_bytes",
        "_partial_count",
        "_batch_blocked",
        "_direct_sock",
        "_direct_tx",
        "_last_idle_push",
        "_last_tx",
        # -- the receive side (_stream_receive.py)
        "_decoder",
        "_reader",
        "_last_rx",
        "_timed_out",
    )
