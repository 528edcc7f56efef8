"""SimpleSocket: a Context that sends and receives text, like a socket.

Some programs only want to exchange lines of text with one peer and do not
care about slots, channels or message types. ``SimpleSocket`` is a Context
with one PubChannel and one SubChannel on the slot base ``"text"`` (TEXT
messages, slot ``text.txt.pub-sub``, the same as yoton 2.x, so it talks to a
2.x SimpleSocket too), plus :meth:`~SimpleSocket.send` and
:meth:`~SimpleSocket.recv`.

Two things differ from a hand-made Pub/Sub pair on purpose:

* ``recv`` does not wait by default (``block=None``), as in 2.x: a socket-like
  poll is the common use.
* A SimpleSocket does not receive its own messages. In this implementation a
  Pub and a Sub in one context talk to each other (2.x's contexts never
  delivered locally), which would make every ``send`` come back out of the
  same object's ``recv``; that is never what a socket user wants.
"""

from __future__ import annotations

from typing import Any

from ._block import check_block
from ._context import Context
from ._pubsub import PubChannel, SubChannel
from ._wire import Package

__all__ = ["SimpleSocket"]

#: The slot base both ends meet on (fixed, as in 2.x).
SLOT_BASE = "text"


class _PeerSubChannel(SubChannel):
    """A SubChannel that ignores packages published by its own context.

    Local delivery happens in ``Context._send_package`` (under the context
    lock) through ``_deposit``; packages from the network that carry our own
    context id are already dropped by the routing layer, so filtering here
    only removes the echo of our own ``send``.
    """

    def _deposit(self, pkg: Package) -> None:
        if pkg.source_id == self._context.id:
            return
        super()._deposit(pkg)


class SimpleSocket(Context):
    """A Context that exchanges text messages with its peers, socket-style.

    Connect two of them like any contexts (``bind`` on one, ``connect`` on
    the other); then ``send`` on one end arrives at ``recv`` on the other.
    Messages are ``str``; the empty string is never sent (on the wire an
    empty payload is a control package), and ``recv`` returns ``""`` when
    nothing arrived.

    Args:
        verbose: As for :class:`Context` (docs/logging.md).
        **options: Any other :class:`Context` argument (``transport``,
            ``queue_params``, ``auth_key``, ...).

    Example::

        a = yoton.SimpleSocket()
        port = a.bind("localhost:0").port1
        b = yoton.SimpleSocket()
        b.connect(f"localhost:{port}")
        b.send("hello")
        a.recv(True)    # -> 'hello'
    """

    def __init__(self, verbose: int = False, **options: Any) -> None:
        super().__init__(verbose, **options)
        self._pub = PubChannel(self, SLOT_BASE)
        self._sub = _PeerSubChannel(self, SLOT_BASE)

    def send(self, s: str) -> None:
        """Send the text ``s`` to every SimpleSocket in the network but this one.

        Raises:
            ValueError: ``s`` is not a str (TEXT messages only).
            OSError: the socket was closed (:meth:`Context.close`).
        """
        self._pub.send(s)

    def recv(self, block: Any = None) -> str:
        """Return the next message from a peer, or ``""`` if there is none.

        Args:
            block: None (default) or False returns at once; True waits until
                a message arrives or the socket is closed; a number waits at
                most that many seconds (ints work too).

        Raises:
            TypeError, ValueError: ``block`` is none of the above.
        """
        wait = check_block(block, "SimpleSocket.recv()")
        msg: str = self._sub.recv(True if wait is None else wait)
        return msg

    @property
    def pending(self) -> int:
        """How many received messages wait to be read."""
        return self._sub.pending

    def __repr__(self) -> str:
        return (
            f"<SimpleSocket {self.id:016x} with {self.connection_count} connections, "
            f"{self._sub.pending} pending>"
        )
