"""The order of a channel's inbox among its context's channels, kept as runs.

A channel's inbox (``BaseChannel._queue``) holds payloads, oldest first: no
object per message beside the payload the user gets. The order across the
channels of a context -- which message came first, for
:func:`~yoton_core.select_sub_channel` -- is the context's recv_seq, one number
per routed package; an inbox receives long stretches of consecutive ones (a
publisher's stream), so they are kept as runs: an index and a recv_seq,
the payload with that index (counting every payload ever put in the inbox)
having that recv_seq and the payloads after it counting up from there, up to
the next run. Which payload is at the head follows from the count of
payloads put in and the inbox's length, since payloads leave only from the
head (read, or discarded by the "old" policy): reading needs no bookkeeping.

A ``(recv_seq, payload)`` tuple per message cost ~300 instructions to make,
read and free, and 88 bytes of memory (tuple and int): 8.4 MiB for 100,000
unread messages.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from typing import Any

__all__ = ["Inbox"]

#: From this many runs on, each note drops the runs already read (their
#: payloads left the inbox): a stretch costs a bisect then, not a package.
_TRIM_AT = 32


class Inbox:
    """Mixin of :class:`~._channels.BaseChannel`: the inbox and its recv_seq runs.

    The runs are two arrays of 64-bit ints (``_run_index[i]``: the index of a
    run's first payload, ``_run_seq[i]``: its recv_seq): 16 bytes a run, no
    object, so even channels that alternate message by message keep less than
    the tuple per message did. Both grow: a bisect finds a run by index or by
    recv_seq.

    Writers hold the context lock (:meth:`_note_seqs` and the payloads they
    append go together); readers of the order (:meth:`_seq_at`,
    :meth:`_count_upto`) hold it too. Readers of payloads just pop the head.
    The order is exact for one reader at a time; payloads taken by another
    thread while :meth:`_count_upto`'s caller pops are not accounted for.
    """

    _queue: deque[Any]
    _in_total: int
    _run_index: array[int]
    _run_seq: array[int]

    def _init_inbox(self) -> None:
        self._queue = deque()
        self._in_total = 0  # payloads ever put in the inbox
        self._run_index = array("q")
        self._run_seq = array("q")

    def _note_seqs(self, rseq: int, n: int) -> None:
        """``n`` payloads with recv_seqs ``rseq``, ``rseq + 1``... were just appended."""
        index = self._run_index
        seqs = self._run_seq
        total = self._in_total
        self._in_total = total + n
        if not index or seqs[-1] + total - index[-1] != rseq:  # (else the last run goes on)
            index.append(total)
            seqs.append(rseq)
        if len(index) >= _TRIM_AT:  # drop the runs before the one holding the head
            head = total + n - len(self._queue)  # (the n payloads are in already)
            keep = bisect_right(index, head) - 1
            if keep > 0:
                del index[:keep]
                del seqs[:keep]

    def _seq_at(self, pos: int) -> int:
        """The recv_seq of the payload at ``pos`` in the inbox (0: the head)."""
        at = self._in_total - len(self._queue) + pos
        index = self._run_index
        i = bisect_right(index, at) - 1
        return self._run_seq[i] + at - index[i]

    def _count_upto(self, ref: int) -> int:
        """How many payloads from the head have a recv_seq of at most ``ref``."""
        total = self._in_total
        head = total - len(self._queue)
        seqs = self._run_seq
        i = bisect_right(seqs, ref) - 1  # the last run starting at or before ref
        if i < 0:
            return 0
        index = self._run_index
        end = index[i + 1] if i + 1 < len(index) else total  # (the run's end, exclusive)
        last = min(index[i] + ref - seqs[i], end - 1)  # the last index with seq <= ref
        return max(0, last - head + 1)
