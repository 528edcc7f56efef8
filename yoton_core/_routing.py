"""The receiving half of a Context: routing the packages that arrive.

Routing is transport-agnostic: connections hand batches of received packages to
:meth:`Router._route` (through :meth:`Connection.deliver`, in the form
:meth:`FrameDecoder.feed_raw` returns them). A batch is routed under the context lock in one
pass: duplicates are dropped (per-source sequence numbers), broadcasts are
forwarded to the other connections, a package for one context goes the way
its packages came from (learned routes), and what is for us is deposited into
the channel registered on its slot. It is the hottest loop of a subscriber, so
it keeps per-run state in locals (the source of the previous package, its
channel and inbox) instead of looking them up per package.

:class:`Router` is a mixin of :class:`~._context.Context`, which owns the
state it reads; it is its own module only to keep each module one concept.
"""

from __future__ import annotations

from logging import DEBUG
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._channels import BaseChannel
from ._decoder import Run, expand_run
from ._fan import push_frames
from ._frames import frame, prefix
from ._log import get_logger
from ._stream_queue import FRAME_MAX
from ._wire import CONTROL, SLOT_CONTEXT, Package, raw_package

if TYPE_CHECKING:
    import collections

    from ._connection import Connection
    from ._ctxlock import ContextLock
    from ._stream_queue import StreamQueue

__all__ = ["Router"]

logger = get_logger("context")

#: A batch a transport delivers (``Connection.deliver``) of this many packages
#: or more is looked at as a possible run (``Router._deliver``; below it the
#: look costs more than it saves: callgrind, 20 and 50 packages a batch).
DELIVER_RUN_MIN = 32
_SLOT_OF = itemgetter(1)
_SOURCE_OF = itemgetter(2)
_SEQ_OF = itemgetter(3)
_DEST_OF = itemgetter(4)


class Router:
    """Routes received packages; mixed into :class:`~._context.Context`."""

    # Owned and initialised by Context (see Context.__init__).
    _id: int
    _lock: ContextLock
    _lock_free: collections.deque[bool]
    _recv_seq: int
    _source_map: dict[int, int]
    _routes: dict[int, Connection]
    _connected: tuple[Connection, ...]
    _send_channels: dict[int, BaseChannel]
    _recv_channels: dict[int, BaseChannel]
    _fan_out: tuple[StreamQueue, ...] | None
    _n_duplicates: int
    _n_unroutable: int
    _queue_n: int

    def _route(self, conn: Connection, flat: list[Any]) -> None:
        """Route a batch of packages that arrived on ``conn``.

        ``flat`` alternates header tuples and payloads, as
        :meth:`FrameDecoder.feed_raw` returns them. A :class:`Package` is made
        only for channels that take packages themselves (request/reply, state,
        sync mode) and for context messages; a plain inbox gets the payload,
        its recv_seq noted once per stretch (``_inbox.py``).
        """
        if conn.log.isEnabledFor(DEBUG):  # once per batch; formats nothing when off
            _debug_batch(conn, flat)
        touched: list[BaseChannel] = []
        context_msgs: list[Package] | None = None
        my_id = self._id
        smap = self._source_map
        run_sid = -1
        # The inbox of the stretch being appended to, whose recv_seqs (from
        # seq_first up to rseq) are not noted yet (_inbox.py): whatever takes
        # a recv_seq other than by appending there notes it first.
        seq_ch: BaseChannel | None = None
        seq_first = 0
        free = self._lock_free  # the context lock, taken inline (see Context._send)
        try:
            free.pop()
        except IndexError:
            self._lock.wait()
        rseq = self._recv_seq
        try:
            channels = self._recv_channels
            routes = self._routes
            learn = False
            conns = self._connected
            if len(conns) == 1 and conns[0] is conn:
                others: Any = ()  # the common leaf node: nowhere to forward
            else:
                others = [c for c in conns if c is not conn]
            queue_n = self._queue_n
            # The channel of the previous package, and its inbox when that can
            # be appended to here (the channel does not intercept deposits).
            last: BaseChannel | None = None
            last_q: Any = None
            last_slot = -1
            # The newest seq of the source of the previous package: a run of
            # packages from one source (the usual case) skips the dict.
            run_seq = 0
            it = iter(flat)
            for header, data in zip(it, it, strict=True):
                sid = header[2]
                seq = header[3]
                if sid != run_sid:
                    if run_sid != -1:
                        smap[run_sid] = run_seq
                    run_sid = sid
                    run_seq = smap.get(sid, 0)
                    learn = bool(others)  # a relay: note the way back to sid
                if seq <= run_seq:
                    self._n_duplicates += 1
                    continue
                run_seq = seq
                if learn:
                    routes[sid] = conn
                    learn = False
                if sid == my_id:  # our own broadcast came back through a cycle
                    continue
                dest = header[4]
                if dest:
                    if dest != my_id:  # for someone else: pass it on
                        via = routes.get(dest)
                        if via is not None and via is not conn:
                            via.send_package(header, data)
                        else:  # no (usable) route: flood, as 2.x does
                            for c in others:
                                c.send_package(header, data)
                        continue
                elif others:
                    if header[1] == SLOT_CONTEXT and data == b"NEW_CONNECTION":
                        # Only to peers that want join announcements (_joins.py).
                        declined = self._joins_declined  # type: ignore[attr-defined]
                        skipped = False
                        for c in others:
                            if c in declined:
                                skipped = True
                            else:
                                c.send_package(header, data)
                        if skipped:
                            self._joins_skipped(conn, header, data)  # type: ignore[attr-defined]
                    else:
                        for c in others:
                            c.send_package(header, data)
                rseq += 1
                slot = header[1]
                if slot != last_slot:
                    if seq_ch is not None:  # (this package took rseq)
                        seq_ch._note_seqs(seq_first, rseq - seq_first)
                        seq_ch = None
                    if slot == SLOT_CONTEXT:
                        pkg = raw_package(header, data)
                        pkg.recv_seq = rseq
                        if context_msgs is None:
                            context_msgs = []
                        context_msgs.append(pkg)
                        continue
                    ch = channels.get(slot)
                    if ch is None:
                        self._n_unroutable += 1
                        continue
                    last_slot = slot
                    last = ch
                    if ch not in touched:
                        touched.append(ch)
                    # BaseChannel._deposit is inlined below, unless the
                    # channel takes deposits its own way (BaseChannel._inbox_inline).
                    last_q = ch._queue if ch._inbox_inline else None
                if last_q is not None and len(last_q) < queue_n:
                    last_q.append(data)
                    if seq_ch is None:  # its recv_seq starts a stretch
                        seq_ch = last
                        seq_first = rseq
                else:  # a channel of its own kind, or a full inbox (discard policy)
                    if seq_ch is not None:  # (noted first: the deposit notes its own)
                        seq_ch._note_seqs(seq_first, rseq - seq_first)
                        seq_ch = None
                    pkg = raw_package(header, data)
                    pkg.recv_seq = rseq
                    last._deposit(pkg)  # type: ignore[union-attr]
        finally:
            if seq_ch is not None:  # (its stretch took the last rseq)
                seq_ch._note_seqs(seq_first, rseq - seq_first + 1)
            if run_sid != -1:
                smap[run_sid] = run_seq
            self._recv_seq = rseq
            free.append(True)
            if self._lock.waiters:
                self._lock.wake()
        for ch in touched:
            ch._notify()
        if context_msgs is not None:
            for pkg in context_msgs:
                self._on_context_message(pkg)

    def _deliver(self, conn: Connection, flat: list[Any]) -> None:
        """``Connection.deliver``: a batch a transport received, routed.

        A transport that moves packages, not bytes (inproc, a bus), hands
        over a publisher's stream as it came: one source, slot and
        destination, the seqs counting up by one. Such a batch is routed as
        a :class:`~._decoder.Run` (:meth:`_route_run`), which the stream
        decoder finds in the bytes itself; telling takes a few passes in C
        over the headers (and one comparison of the last header with the
        first before them), instead of the per-package loop of :meth:`_route`.
        """
        k = len(flat) >> 1
        if k >= DELIVER_RUN_MIN and not len(flat) & 1:
            first = flat[0]
            last = flat[-2]
            seq = first[3]
            if (
                last[3] == seq + k - 1
                and last[2] == first[2]
                and last[1] == first[1]
                and last[4] == first[4]
            ):
                heads = flat[0::2]
                if (
                    list(map(_SEQ_OF, heads)) == list(range(seq, seq + k))
                    and list(map(_SOURCE_OF, heads)).count(first[2]) == k
                    and list(map(_SLOT_OF, heads)).count(first[1]) == k
                    and list(map(_DEST_OF, heads)).count(first[4]) == k
                ):
                    self._route_run(conn, Run((*first, k)), flat[1::2], flat)
                    return
        self._route(conn, flat)

    def _route_run(
        self, conn: Connection, run: Run, payloads: list[bytes], flat: list[Any] | None = None
    ) -> None:
        """Route a :class:`~._decoder.Run` that arrived on ``conn``, in one step if it can.

        A run is one source's packages to one slot and destination, seqs
        counting up by one (a publisher's stream, as the stream decoder found
        it). Where :meth:`_route` would append each payload to one inbox (or
        count it, where nobody listens) and, on a relay, pass each on to every
        other link -- the packages all newer than what came from that source,
        for us, a channel with a plain inbox that has room; on a relay, a
        broadcast of small frames and every link one of our stream queues --
        that happens at once: the payloads go in together, the frames are
        packed once and queued on each other link in one step
        (:meth:`_pass_on`). Anything else is routed package by package
        (``flat``, if given, is the run in :meth:`_route`'s form: the headers
        as they came, their lengths too).

        Why relays: a hub relaying a stream spent two thirds of its routing in
        one ``send_package`` call per package and link (py-spy; pub -> hub ->
        sub, the hub's CPU 0.9 -> 0.29 us a message).
        """
        c, slot, sid, first, dest, _dseq, size, k = run
        conns = self._connected
        relay = len(conns) != 1 or conns[0] is not conn
        if (
            slot == SLOT_CONTEXT
            or sid == self._id
            or (dest and dest != self._id)
            or conn.log.isEnabledFor(DEBUG)
            or (relay and (dest or self._fan_out is None or c != CONTROL or size > FRAME_MAX))
        ):
            self._route(conn, expand_run(run, payloads) if flat is None else flat)
            return
        ch = None
        done = False
        free = self._lock_free  # the context lock, taken inline (see Context._send)
        try:
            free.pop()
        except IndexError:
            self._lock.wait()
        try:
            smap = self._source_map
            if first > smap.get(sid, 0):
                ch = self._recv_channels.get(slot)
                if ch is None or (ch._inbox_inline and len(ch._queue) + k <= self._queue_n):
                    if relay:
                        self._pass_on(conn, run, payloads)
                    rseq = self._recv_seq
                    self._recv_seq = rseq + k
                    smap[sid] = first + k - 1
                    if ch is not None:
                        ch._queue.extend(payloads)
                        ch._note_seqs(rseq + 1, k)
                    else:  # (as _route counts what nobody here listens to)
                        self._n_unroutable += k
                    done = True
        finally:
            free.append(True)
            if self._lock.waiters:
                self._lock.wake()
        if not done:  # duplicates, a channel of its own kind, a full inbox: the general way
            self._route(conn, expand_run(run, payloads) if flat is None else flat)
        elif ch is not None:
            ch._notify()

    def _pass_on(self, conn: Connection, run: Run, payloads: list[bytes]) -> None:
        """Queue a broadcast run on every link but ``conn``; the context lock held.

        Every link is a stream queue of ours (the context's fan): the frames
        are packed once and queued on each link at once
        (:func:`~._fan.push_frames`); a link past the queue limit takes them
        package by package through ``send_package`` (its discard policy). The
        way back to the source is learned, as :meth:`_route` learns it.
        """
        _c, slot, sid, first, _dest, dseq, _size, _k = run
        head = prefix(slot, sid)
        frames = [frame(head, first + i, dseq, p) for i, p in enumerate(payloads)]
        for peer, link in zip(self._connected, self._fan_out or (), strict=True):
            if peer is not conn and not push_frames(link, frames):
                it = iter(expand_run(run, payloads))
                for header, p in zip(it, it, strict=True):
                    peer.send_package(header, p)
        self._routes[sid] = conn

    def _on_context_message(self, pkg: Package) -> None:
        try:
            text = pkg.data.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("ignored a context message that is not UTF-8: %r", pkg.data[:40])
            return
        if text == "NEW_CONNECTION":
            # StateChannel (_state.py) needs to know which packages of the same
            # batch came after this one (context messages are handled last).
            for ch in list(self._send_channels.values()):
                ch._on_new_peer(pkg.source_id, pkg.recv_seq)
        elif text == "CLOSE_CONNECTION":
            for conn in self._connected:
                if conn.id2 == pkg.source_id:
                    conn.close("Closed from other end.")
        else:
            logger.warning("received unknown context message: %r", text[:80])


def _debug_batch(conn: Connection, flat: list[Any]) -> None:
    """Log every package of a received batch at DEBUG (only called when enabled)."""
    log = conn.log
    it = iter(flat)
    for header, data in zip(it, it, strict=True):
        log.debug(
            "received from %016x seq %d: slot %016x, dest %016x, %d bytes",
            header[2],
            header[3],
            header[1],
            header[4],
            len(data),
        )
