"""Yoton's loggers: one hierarchy under ``"yoton"``, silent until the application asks.

A library must not decide what a program prints. Everything yoton reports goes
to a logger below ``"yoton"``, and the ``"yoton"`` logger carries a
:class:`logging.NullHandler`: with no logging configured, nothing reaches
stderr (Python's last-resort handler would otherwise print every WARNING).
An application that configures logging (``logging.basicConfig()``, a handler
on ``"yoton"``...) sees yoton's records like any other.

The hierarchy (each level inherits the level and handlers of its parent):

========================= ================================================
``yoton``                 the IO engine and whatever fits nowhere below
``yoton.<scheme>``        a transport: ``yoton.tcp``, ``yoton.tls``,
                          ``yoton.unix``, ``yoton.inproc``, a plugin's own
                          (``yoton.nats``); the life of its connections
``yoton.context``         routing: context messages, per-package detail
``yoton.events``          the event loop, signals, timers, handler errors
``yoton.pubsub``          sync mode
``yoton.reqrep``          request/reply: repliers, futures
``yoton.state``           state channels
``yoton.plugins``         plugin discovery
``yoton.clientserver``    RequestServer / do_request
``yoton.cli``             the ``yoton`` command
========================= ================================================

Levels:

* INFO: the life of a connection: bound and waiting, connected (either
  side), closed on purpose (by us or the peer), data flowing again after a
  time-out.
* WARNING: faults: a connection lost or closed because of a problem, a peer
  silent past its timeout, a failed handshake, garbage from the network.
* ERROR: yoton's own or a handler's exception (with traceback).
* DEBUG: per-package detail (every package received, every batch written).
  Guarded: the hot paths ask :meth:`logging.Logger.isEnabledFor` once per
  batch and format nothing unless DEBUG is on for that logger.

``Context(verbose=...)`` (also ``SimpleSocket`` and ``RequestServer``) is a
shortcut for the logging configuration yoton 2.x's printing gave: see
:func:`apply_verbose`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "CLOSED_FROM_OTHER_END",
    "apply_verbose",
    "describe_link",
    "endpoint",
    "get_logger",
    "transport_logger",
]

ROOT = "yoton"

_root = logging.getLogger(ROOT)
_root.addHandler(logging.NullHandler())

#: The handler :func:`apply_verbose` adds when logging is not configured.
_verbose_handler: logging.Handler | None = None


def get_logger(name: str = "") -> logging.Logger:
    """The logger ``yoton.<name>`` (``yoton`` itself for an empty name)."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


def transport_logger(scheme: str) -> logging.Logger:
    """The logger of a transport's connections: ``yoton.<scheme>``."""
    return get_logger(scheme or "connection")


def _has_handler(logger: logging.Logger) -> bool:
    """True when a record of ``logger`` reaches a handler that is not a NullHandler."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def apply_verbose(verbose: object) -> None:
    """Make yoton's records visible at the level ``verbose`` asks for.

    * ``0``/False (the default): nothing changes; the application's logging
      configuration decides (unconfigured: nothing is shown).
    * ``1``/True: the ``"yoton"`` logger passes INFO and above (connection
      life and faults).
    * ``2`` or more: DEBUG as well (per-package detail).

    A level already lower (more verbose) than asked is kept. When no handler
    would receive the records (logging not configured), one handler writing
    ``yoton.tcp: message`` lines to stderr is added to ``"yoton"`` (once per
    process): the output 2.x's ``verbose`` printed. The setting is
    process-wide, like any logging configuration.
    """
    global _verbose_handler
    if not verbose:
        return
    debug = isinstance(verbose, int) and not isinstance(verbose, bool) and verbose >= 2
    level = logging.DEBUG if debug else logging.INFO
    if _root.level == logging.NOTSET or _root.level > level:
        _root.setLevel(level)
    if _verbose_handler is None and not _has_handler(_root):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        _verbose_handler = handler
        _root.addHandler(handler)


# -- the words of connection messages ----------------------------------------------------

#: The reason a peer's own close is reported with; like a close by us, it is
#: the life of a connection (logged at INFO), not a fault (WARNING).
CLOSED_FROM_OTHER_END = "Closed from other end."


def endpoint(host: str, port: int) -> str:
    """``host:port`` for messages; just ``host`` when there is no port (a socket path)."""
    return f"{host}:{port}" if port else host


def describe_link(conn: Connection) -> str:
    """``here -> there (peer context id, pid)`` for log messages."""
    return (
        f"{endpoint(conn.hostname1, conn.port1)} -> {endpoint(conn.hostname2, conn.port2)} "
        f"(peer context {conn.id2:016x}, pid {conn.pid2})"
    )
