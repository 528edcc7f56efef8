"""Yoton's error hierarchy, all of it in one place.

Every transport maps its native exceptions onto these classes, so user code can
tell *who* ended a conversation without knowing which transport carried it::

    YotonError
    ├── InvalidArgumentError      a wrong argument (also TypeError and ValueError)
    ├── ConnectionClosedError     we closed it (also OSError)
    ├── BrokenConnectionError     the peer went away or the link broke (also OSError)
    ├── ConnectError              connecting failed (also ConnectionRefusedError)
    │   └── NoServerError         do_request found no server (also RuntimeError)
    ├── ProtocolError             the bytes are not yoton's protocol (also ValueError)
    │   ├── HandshakeError        the handshake with a peer failed
    │   ├── FrameError            the package stream is invalid
    │   └── MessageDecodeError    a payload cannot be decoded by its message type
    ├── TimeoutError              not finished in time (also the builtin TimeoutError)
    ├── CancelledError            a Future was cancelled
    ├── RemoteError               the remote handler of a request raised
    ├── TransportNotFoundError    no plugin has that scheme (also ValueError)
    └── PluginLoadError           a plugin failed to load (also ImportError)

Each class also derives from the builtin a user would catch without knowing
yoton: the 2.x API raised ``IOError`` (``OSError`` in Python 3) for connection
problems and ``ValueError``/``TypeError``/``RuntimeError`` elsewhere, so code
written for 2.x, or for Python's conventions, keeps catching them.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import sys
from typing import Any

__all__ = [
    "YotonError",
    "InvalidArgumentError",
    "ConnectionClosedError",
    "BrokenConnectionError",
    "ConnectError",
    "NoServerError",
    "ProtocolError",
    "HandshakeError",
    "FrameError",
    "MessageDecodeError",
    "TimeoutError",
    "CancelledError",
    "RemoteError",
    "TransportNotFoundError",
    "PluginLoadError",
]


#: What a connect that finds nobody listening tells the user: also the case of a
#: second peer at a bind that already serves one (its listener is gone).
ONE_PEER_HINT = (
    "Is a context bound there and running? One bind() serves one peer: if another "
    "peer is already connected there, bind again (another port or name) for this one."
)
#: What a bind at an address in use tells the user.
IN_USE_HINT = (
    "Another context or program holds it: choose another port or name, or pass "
    "max_tries=N to bind() to try N ports from there."
)


class YotonError(Exception):
    """Base class of all errors raised by yoton itself.

    ``except yoton.YotonError`` catches everything yoton raises on purpose.
    Each subclass is also the builtin exception a program would catch without
    knowing yoton (an ``OSError`` for a lost connection, a ``ValueError`` for
    a bad argument), so existing ``except`` clauses keep working.
    """


class InvalidArgumentError(YotonError, TypeError, ValueError):
    """A call got an argument it cannot use; the message says what was expected.

    Why both a ``TypeError`` and a ``ValueError``: which of the two a wrong
    argument "is" depends on the argument (a str where a number belongs, or a
    negative number), 2.x raised ``ValueError`` for most of them, and code out
    there catches either. Being both, every such ``except`` keeps working while
    ``except yoton.InvalidArgumentError`` catches exactly the user's mistakes.
    """


class ConnectionClosedError(YotonError, OSError):
    """The connection or channel was closed on our side.

    Raised, for example, by ``send`` on a closed channel. An ``OSError``, as
    2.x raised ``IOError`` here. Compare :class:`BrokenConnectionError`: the
    peer (or the link) ended it.
    """


class BrokenConnectionError(YotonError, OSError):
    """The peer closed the connection or the link broke.

    Raised, for example, by ``Future.result()`` when the replier's connection
    closed while it ran the request (the message names the replier), or by
    :func:`do_request` when the server closed without replying. An
    ``OSError``, as 2.x raised ``IOError``.
    """


class ConnectError(YotonError, ConnectionRefusedError):
    """Connecting to a peer failed: nobody accepted, or the handshake failed.

    A ``ConnectionRefusedError`` (so an ``OSError``), as 2.x raised. The
    message names the address as the user wrote it and what to check; what
    went wrong underneath (the ``OSError`` of the socket, the
    :class:`HandshakeError`) is kept as ``__cause__``.
    """


class NoServerError(ConnectError, RuntimeError):
    """Nobody accepted the connection of :func:`do_request`.

    A :class:`ConnectError` (so a ``ConnectionRefusedError``); also a
    ``RuntimeError``, which is what yoton 2.x raised, so code written for 2.x
    keeps catching it.
    """


class ProtocolError(YotonError, ValueError):
    """Received bytes that violate the wire protocol.

    Garbage from the network never escapes to the user as this exception: it
    closes the one connection it came on, with :attr:`reason` as the close
    reason. Code that decodes bytes itself (a transport plugin, a fuzzer) sees
    it raised. A ``ValueError``.
    """

    @property
    def reason(self) -> str:
        """What the connection reports (``closed`` signal, ``close_reason``) when it closes."""
        return str(self.args[0]) if self.args else "Protocol error."


class HandshakeError(ProtocolError):
    """The handshake with a peer failed (not yoton, wrong key, self-connect...).

    ``connect()`` reports it as the ``__cause__`` of a :class:`ConnectError`;
    a bind side logs it and keeps waiting for a real peer.
    """


class FrameError(ProtocolError):
    """The package stream is invalid: bad control bytes, or a package over the limit.

    A stream has no frame markers to resync on, so the connection must close;
    what the same chunk held before the bad bytes is valid and may still be
    delivered.

    Attributes:
        raw: The packages decoded before the bad bytes, in
            ``FrameDecoder.feed_raw``'s flat form ``[header, payload, ...]``.
        items: The same as items (``Package``, ``Heartbeat``, ...), as
            ``FrameDecoder.feed`` returns them; empty from ``feed_raw``.
    """

    def __init__(
        self, message: str, raw: list[Any] | None = None, items: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.raw: list[Any] = raw if raw is not None else []
        self.items: list[Any] = items if items is not None else []


class MessageDecodeError(ProtocolError):
    """A message payload could not be decoded by its message type.

    For example ``OBJECT`` bytes that are truncated, nested too deep or
    tagged with an unknown type, or ``TEXT`` that is not UTF-8. Nothing
    received is ever evaluated or unpickled; bad bytes end here.
    """


class TimeoutError(YotonError, builtins.TimeoutError):  # noqa: A001 - deliberately yoton.TimeoutError
    """An operation did not complete within its timeout.

    Also the builtin ``TimeoutError``, so ``except TimeoutError`` keeps working
    after ``from yoton import *``.
    """


class CancelledError(YotonError, concurrent.futures.CancelledError):
    """The Future was cancelled: by ``cancel()``, or because no replier took it in time.

    ``Future.result()`` raises it for a cancelled request. Also
    ``concurrent.futures.CancelledError``, so ``concurrent.futures`` and
    ``asyncio.wrap_future`` treat yoton's Futures like their own.
    """


class RemoteError(YotonError):
    """An exception raised by the remote handler of a request.

    For a builtin exception type (or one of these) the raised object is also an
    instance of that class (``except ZeroDivisionError`` works); see
    ``yoton_core._errors.make_remote_error``.

    Attributes:
        type_name: The class name of the remote exception (e.g.
            ``"ZeroDivisionError"``); empty when the replier (a yoton 2.x peer)
            did not say.
        message: ``str()`` of the remote exception.
        remote_module: The module of the remote exception class ("" if unknown).
        remote_traceback: The remote traceback as text ("" if unknown).
        replier_id: The context id of the replier (0 if unknown).
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        remote_traceback: str = "",
        replier_id: int = 0,
        remote_module: str = "",
    ) -> None:
        BaseException.__init__(self, message)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.replier_id = replier_id
        self.remote_module = remote_module

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.type_name else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type_name!r}, {self.message!r})"

    def __reduce__(self) -> Any:
        return (
            make_remote_error,
            (
                self.type_name,
                self.message,
                self.remote_traceback,
                self.replier_id,
                self.remote_module,
            ),
        )


class TransportNotFoundError(YotonError, ValueError):
    """No transport plugin provides the requested scheme.

    The message lists the installed schemes and suggests the closest one
    (``Unknown transport scheme 'tpc'; ... Did you mean 'tcp'?``). A
    ``ValueError``: the address (or ``transport=``, ``YOTON_TRANSPORT``) is
    wrong.
    """


class PluginLoadError(YotonError, ImportError):
    """A transport plugin was found but failed to import or register.

    Only that plugin's scheme is affected: using it raises this error, whose
    message names the plugin and its import error; every other transport
    keeps working. An ``ImportError``.
    """


# -- the exception a failed remote call raises -------------------------------------------

#: The RemoteError subclasses made so far, by "module.TypeName" (made at most
#: once each in effect: setdefault keeps the first of two racing threads').
_remote_classes: dict[str, type[RemoteError]] = {}


def _remote_class(type_name: str, module: str) -> type[RemoteError]:
    """RemoteError, or a subclass that is also the named builtin (or yoton) exception type.

    Only two fixed namespaces are consulted, by plain attribute lookup: the
    builtins and yoton's own errors. Nothing received is evaluated or imported.
    """
    if module in ("", "builtins"):
        namespace: Any = builtins
    elif module == __name__ and type_name in __all__:
        namespace = sys.modules[__name__]
    else:
        return RemoteError
    builtin = getattr(namespace, type_name, None)
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)):
        return RemoteError
    if issubclass(builtin, RemoteError):
        return builtin
    key = f"{module}.{type_name}"
    cls = _remote_classes.get(key)
    if cls is None:
        try:
            cls = type(f"Remote{type_name}", (RemoteError, builtin), {"__module__": __name__})
        except TypeError:  # an incompatible instance layout
            cls = RemoteError
        cls = _remote_classes.setdefault(key, cls)
    return cls


def make_remote_error(
    type_name: str,
    message: str,
    remote_traceback: str = "",
    replier_id: int = 0,
    remote_module: str = "",
) -> RemoteError:
    """Build the exception a requester raises for a remote failure.

    The builtin base class (if any) is only used for ``isinstance`` checks: its
    own ``__init__`` is not run, so exception types with special constructors
    (``UnicodeDecodeError`` needs five arguments) work too.
    """
    cls = _remote_class(type_name, remote_module)
    if cls is not RemoteError:
        try:
            exc = cls.__new__(cls, message)
            RemoteError.__init__(
                exc, type_name, message, remote_traceback, replier_id, remote_module
            )
            return exc
        except Exception:  # pragma: no cover - exotic builtin constructors
            pass
    return RemoteError(type_name, message, remote_traceback, replier_id, remote_module)
