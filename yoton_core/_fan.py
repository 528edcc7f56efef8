"""The context's fan-out path: which links it covers, how their pushes are counted.

A relay uses it too: :func:`push_frames` queues a run it passes on, on one
link of the fan, in one step (``Router._route_run``).

When every link of a context is a stream queue of ours
(:func:`fan_links`), ``Context._send`` packs a small package's frame once and
appends it itself to each queue that is streaming (a queue holding 1 to
:data:`DIRECT_BATCH` - 1 frames, not at a multiple of 64, with a wake-up of the
sender pending): exactly what ``send_package``'s streaming branch does there,
without a call and a header tuple per link (measured with callgrind, per
message: 1 link 10,787 -> 9,506 instructions, 4 links 20,697 -> 14,728). Every
other case, on any link, goes through ``send_package``, which reuses that frame.

Counting (see also "Counters" in ``_stream_queue.py``): the path does not
count its appends one by one, which cost an addition per link and message
(~340 instructions with the int it allocates). While a link is in the
context's fan, every package the context numbered since the link's
``_fan_base`` was appended to it, so what it was handed is its ``_pushed``
plus ``_send_seq - _fan_base`` (``StreamQueue._pushed_now``). Whenever one of
the context's packages reaches a link of the fan another way
(``send_package``, which counts it) or not at all (it has one destination),
or the fan changes, the context first settles the counts, under its lock:
:func:`settle_fan`, :func:`refan`, and the slow branch of ``Context._send``'s
loop.
"""

from __future__ import annotations

from typing import Any

from ._stream_queue import HIGH_WATER_PACKAGES, StreamQueue, send_package

__all__ = ["fan_links", "push_frames", "refan", "settle_fan"]


def fan_links(conns: tuple[Any, ...]) -> tuple[StreamQueue, ...] | None:
    """The stream queues behind ``conns``, if the context may append frames itself.

    That is when every connection is a :class:`StreamConnection` (its
    ``send_package`` is ``_stream_queue.send_package``, which subclasses may
    not redefine); otherwise None, and the context calls each one's
    ``send_package``.
    """
    links = []
    for conn in conns:
        if getattr(type(conn), "send_package", None) is not send_package:
            return None
        links.append(conn._StreamConnection__link)
    return tuple(links) if links else None


def refan(
    old: tuple[StreamQueue, ...] | None, conns: tuple[Any, ...], seq: int
) -> tuple[StreamQueue, ...] | None:
    """The context's new fan, :func:`fan_links` of ``conns``; the context lock held.

    The links of the old fan get their appends counted (``_send_seq`` is
    ``seq``) and leave it; those of the new one count from ``seq`` on.
    """
    if old is not None:
        for link in old:
            link._pushed += seq - link._fan_base
            link._fan_base = -1
    new = fan_links(conns)
    if new is not None:
        for link in new:
            link._fan_base = seq
    return new


def settle_fan(fan: tuple[StreamQueue, ...], seq: int) -> None:
    """Count the fan's appends up to ``seq - 1``: package ``seq`` goes another way.

    ``Context._send`` calls this, under its lock, before it hands package
    ``seq`` to some links only (a destination) or as a large package, through
    ``send_package``, which counts it where it goes.
    """
    for link in fan:
        link._pushed += seq - 1 - link._fan_base
        link._fan_base = seq


def push_frames(link: StreamQueue, frames: list[bytes]) -> bool:
    """Queue a relayed run's small frames on ``link`` at once; the context lock held.

    What ``send_package`` does for each package of a stream, once for the
    lot: counted, queued, and sent by this thread in one ``send`` when the
    sender task is not writing (the thread that read them, often the
    poller), else left to the sender task, woken. False, with nothing done,
    when they would pass the context's queue limit: then each package goes
    through ``send_package``, whose discard policy applies.
    """
    q = link._outq
    k = len(frames)
    if len(q) + k > link._context._queue_n:
        return False
    link._pushed += k
    q.extend(frames)
    if not link._writing and link._direct_sock is not None and not link._batch_blocked:
        link._write_batch()
    if len(q) >= HIGH_WATER_PACKAGES:
        link._congest()
    if q:
        link._request_wake()
    return True
