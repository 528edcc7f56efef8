"""Yoton's small error hierarchy.

Every transport maps its native exceptions onto these classes, so user code can
tell *who* ended a conversation without knowing which transport carried it:

* :class:`ConnectionClosedError` -- we closed it (``close()``, context closed).
* :class:`BrokenConnectionError` -- the peer went away or the link broke.
* :class:`ProtocolError` -- the bytes on the wire are not yoton's protocol.
* :class:`TimeoutError` -- something did not finish in time (also a builtin
  ``TimeoutError``, so ``except TimeoutError`` keeps working after
  ``from yoton import *``).

They derive from :class:`OSError` where the documented 2.x API raised ``IOError``
(an alias of ``OSError`` in Python 3), so code written for 2.x keeps catching them.
"""

from __future__ import annotations

import concurrent.futures

__all__ = [
    "YotonError",
    "ConnectionClosedError",
    "BrokenConnectionError",
    "ProtocolError",
    "HandshakeError",
    "MessageDecodeError",
    "TimeoutError",
    "CancelledError",
    "TransportNotFoundError",
    "PluginLoadError",
]


class YotonError(Exception):
    """Base class of all errors raised by yoton itself."""


class ConnectionClosedError(YotonError, OSError):
    """The connection or channel was closed on our side."""


class BrokenConnectionError(YotonError, OSError):
    """The peer closed the connection or the link broke."""


class ProtocolError(YotonError, ValueError):
    """Received bytes that violate the wire protocol.

    The ``reason`` is what the connection reports when it closes because of it.
    """

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else "Protocol error."


class HandshakeError(ProtocolError):
    """The handshake with a peer failed (not yoton, wrong key, self-connect...)."""


class MessageDecodeError(ProtocolError):
    """A message payload could not be decoded by its message type."""


class TimeoutError(YotonError, TimeoutError):  # noqa: A001 - deliberately yoton.TimeoutError
    """An operation did not complete within its timeout."""


class CancelledError(YotonError, concurrent.futures.CancelledError):
    """The Future was cancelled."""


class TransportNotFoundError(YotonError, ValueError):
    """No transport plugin provides the requested scheme."""


class PluginLoadError(YotonError, ImportError):
    """A transport plugin was found but failed to import or register."""
