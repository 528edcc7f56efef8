"""FileWrapper: a PubChannel or SubChannel that looks like a text file.

The point is to put a channel where Python expects a file, above all
``sys.stdout``/``sys.stderr`` (a PubChannel: ``print`` publishes) and
``sys.stdin`` (a SubChannel: ``input`` receives), which is how a remote
interpreter shell (pyzo's kernel, for instance) sends its output to an editor
and reads its input from it. The wrapper implements what ``print``,
``input``, ``traceback`` and ``code.interact`` use, with the 2.x semantics
(docs/pubsub.md#simplesocket-and-filewrapper), and refuses the rest with ``io.UnsupportedOperation``
as a real non-seekable, descriptor-less stream would.

A process forked after the wrapper was made (``multiprocessing`` forks on
Linux) inherits it as its ``sys.stdout``, but not the parent's connections:
in the child the IO engine is fresh and the copied connections lead nowhere.
So in a forked child, output goes to the real ``sys.__stdout__`` (or
``sys.__stderr__`` when the wrapper stands in for ``sys.stderr``) instead of
vanishing into a dead channel, and ``close``/``flush`` act on that real
stream, as 2.x did.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ._block import check_block
from ._channels import BaseChannel
from ._errors import InvalidArgumentError
from ._message_types import TextMessageType
from ._pubsub import PubChannel, SubChannel

__all__ = ["FileWrapper"]


def _text_channel(channel: BaseChannel, what: str) -> None:
    """Raise TypeError unless ``channel`` carries TEXT messages."""
    if not isinstance(channel.message_type, TextMessageType):
        raise InvalidArgumentError(
            f"FileWrapper {what} must carry TEXT messages (a file wrapper moves str), "
            f"got a {type(channel).__name__} with message type "
            f"{type(channel.message_type).__name__}"
        )


def _int_arg(value: Any, name: str) -> int:
    """Return ``value`` if it is an int (not a bool); TypeError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"FileWrapper {name} must be an int, got {type(value).__name__} {value!r}"
        )
    return value


class FileWrapper:
    """Wrap a PubChannel (for writing) or SubChannel (for reading) as a text file.

    Args:
        channel: A :class:`PubChannel` (the wrapper is writable, e.g. as
            ``sys.stdout``) or a :class:`SubChannel` (readable, e.g. as
            ``sys.stdin``), with message type TEXT.
        chunksize: When > 0, :meth:`write` sends a message longer than this
            many characters as several messages of at most ``chunksize``
            characters, so one huge print does not become one huge package.
            0 (default) never splits.
        echo: None, or a TEXT :class:`PubChannel` on which every non-empty
            message read through this wrapper is published again (a remote
            shell echoes its input to its output this way).
        isatty: What :meth:`isatty` returns; set it when the other end is a
            terminal-like console, so programs enable prompts and colours.

    Raises:
        TypeError: ``channel`` is not a Pub/SubChannel, ``echo`` is not None
            or a PubChannel, either does not carry TEXT, or ``chunksize`` is
            not an int.
        ValueError: ``chunksize`` is negative.

    Attributes:
        softspace: Kept for code written for Python 2's ``print`` statement.
    """

    def __init__(
        self,
        channel: PubChannel | SubChannel,
        chunksize: int = 0,
        echo: PubChannel | None = None,
        isatty: bool = False,
    ) -> None:
        if not isinstance(channel, (PubChannel, SubChannel)):
            raise InvalidArgumentError(
                "FileWrapper needs a PubChannel (to write) or a SubChannel (to read), "
                f"got {channel!r}"
            )
        _text_channel(channel, "channel")
        if echo is not None:
            if not isinstance(echo, PubChannel):
                raise InvalidArgumentError(
                    f"FileWrapper echo must be None or a PubChannel, got {echo!r}"
                )
            _text_channel(echo, "echo")
        if _int_arg(chunksize, "chunksize") < 0:
            raise InvalidArgumentError(
                f"FileWrapper chunksize must be >= 0 (0: never split), got {chunksize}"
            )
        self._channel = channel
        self._chunksize = chunksize
        self._echo = echo
        self._isatty = bool(isatty)
        self._pid = os.getpid()  # a different pid later means we are a forked child
        self._closed_in_child = False
        self.softspace = False

    # -- fixed file attributes ------------------------------------------------

    @property
    def channel(self) -> PubChannel | SubChannel:
        """The wrapped channel."""
        return self._channel

    @property
    def chunksize(self) -> int:
        """The largest message :meth:`write` sends (0: no limit)."""
        return self._chunksize

    @property
    def encoding(self) -> str:
        """Always ``"UTF-8"``: TEXT messages travel as UTF-8."""
        return "UTF-8"

    @property
    def errors(self) -> str:
        """Always ``"strict"``: undecodable input raises, it is not replaced."""
        return "strict"

    @property
    def newlines(self) -> None:
        """Always None: no newline translation is done, in either direction."""
        return None

    @property
    def name(self) -> str:
        """A descriptive name such as ``"<yoton stdout.txt.pub-sub>"``."""
        return f"<yoton {self._channel.slot_outgoing}>"

    @property
    def mode(self) -> str:
        """``"w"`` for a wrapped PubChannel, ``"r"`` for a SubChannel."""
        return "w" if isinstance(self._channel, PubChannel) else "r"

    @property
    def closed(self) -> bool:
        """Whether the wrapped channel (or, in a forked child, this wrapper) is closed."""
        return self._closed_in_child or self._channel.closed

    def isatty(self) -> bool:
        """Return the ``isatty`` flag given at construction."""
        return self._isatty

    def readable(self) -> bool:
        """True for a wrapped SubChannel (``read``, ``readline`` and ``input()`` work)."""
        return isinstance(self._channel, SubChannel)

    def writable(self) -> bool:
        """True for a wrapped PubChannel (``write``, ``writelines`` and ``print`` work)."""
        return isinstance(self._channel, PubChannel)

    def seekable(self) -> bool:
        """Always False: messages are a stream; there is nothing to seek in."""
        return False

    def fileno(self) -> int:
        """Raise io.UnsupportedOperation: messages travel through yoton, not a descriptor."""
        raise io.UnsupportedOperation(
            f"FileWrapper {self.name} has no file descriptor (it is a yoton channel)"
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.mode
        return f"<FileWrapper {self.name} {state}>"

    # -- the forked-child redirect ------------------------------------------------

    def _in_forked_child(self) -> bool:
        return os.getpid() != self._pid

    def _real_output(self) -> IO[str] | None:
        """The real stream a forked child writes to (None when Python has none)."""
        return sys.__stderr__ if self is sys.stderr else sys.__stdout__

    # -- writing --------------------------------------------------------------------

    def _pub(self, what: str) -> PubChannel:
        ch = self._channel
        if not isinstance(ch, PubChannel):
            raise io.UnsupportedOperation(
                f"FileWrapper.{what}(): {self.name} wraps a SubChannel, which can only be "
                "read; wrap a PubChannel to write"
            )
        return ch

    def write(self, msg: str) -> int:
        """Send ``msg``, split into chunks of ``chunksize`` characters if longer.

        Empty strings are not sent (yoton never sends empty messages). In a
        forked child ``msg`` is written to the real stdout/stderr instead.

        Returns:
            ``len(msg)``, as a text file does.

        Raises:
            TypeError: ``msg`` is not a str.
            io.UnsupportedOperation: the wrapper reads a SubChannel.
            OSError: the channel is closed.
        """
        if not isinstance(msg, str):
            raise InvalidArgumentError(f"FileWrapper.write() needs a str, got {type(msg).__name__}")
        pub = self._pub("write")
        if self._in_forked_child():
            real = self._real_output()
            if real is not None:
                real.write(msg)
                real.flush()
            return len(msg)
        size = self._chunksize
        if 0 < size < len(msg):
            for i in range(0, len(msg), size):
                pub.send(msg[i : i + size])
        else:
            pub.send(msg)
        return len(msg)

    def writelines(self, lines: Iterable[str]) -> None:
        """Send each item of ``lines`` as one message (not split by ``chunksize``).

        Like a file's ``writelines``, no newlines are added. In a forked child
        the lines go to the real stdout/stderr instead.
        """
        if self._in_forked_child():
            for line in lines:
                self.write(line)
            return
        pub = self._pub("writelines")
        for line in lines:
            if not isinstance(line, str):
                raise InvalidArgumentError(
                    f"FileWrapper.writelines() needs str items, got {type(line).__name__}"
                )
            pub.send(line)

    def flush(self) -> None:
        """Block until queued messages were handed to the OS (``Context.flush``).

        In a forked child, flush the real stdout/stderr instead: the parent's
        connections cannot be flushed from there (``multiprocessing`` flushes
        ``sys.stdout`` when its child ends).
        """
        if self._in_forked_child():
            real = self._real_output()
            if real is not None and not real.closed:
                real.flush()
            return
        self._channel.context.flush()

    def close(self) -> None:
        """Close the wrapped channel; queued messages stay readable.

        In a forked child the parent's channel is left alone: if this wrapper
        is the child's ``sys.stdin``/``sys.stdout``/``sys.stderr``, the real
        stream it stands in for is closed instead (``multiprocessing`` closes
        ``sys.stdin`` in every child it starts).
        """
        if self._in_forked_child():
            self._closed_in_child = True
            for current, real in (
                (sys.stdin, sys.__stdin__),
                (sys.stdout, sys.__stdout__),
                (sys.stderr, sys.__stderr__),
            ):
                if self is current and real is not None:
                    real.close()
            return
        self._channel.close()

    # -- reading ----------------------------------------------------------------------

    def _sub(self, what: str) -> SubChannel:
        ch = self._channel
        if not isinstance(ch, SubChannel):
            raise io.UnsupportedOperation(
                f"FileWrapper.{what}(): {self.name} wraps a PubChannel, which can only be "
                "written; wrap a SubChannel to read"
            )
        return ch

    def _echoed(self, msg: str) -> str:
        if msg and self._echo is not None:
            self._echo.send(msg)
        return msg

    def read(self, block: Any = None) -> str:
        """Return the next message (``""`` if none), echoing it if ``echo`` is set.

        Unlike a file's ``read(size)``, this reads one message, as in 2.x.

        Args:
            block: None (default) or False returns at once; True waits until
                a message arrives or the channel closes; a number waits at
                most that many seconds.

        Raises:
            TypeError, ValueError: ``block`` is none of the above.
            io.UnsupportedOperation: the wrapper writes a PubChannel.
        """
        sub = self._sub("read")
        wait = check_block(block, "FileWrapper.read()")
        return self._echoed(sub.recv(True if wait is None else wait))

    def readline(self, size: int = 0) -> str:
        """Wait for the next message and return it as a line ending in ``"\\n"``.

        The message is echoed if ``echo`` is set. ``"\\n"`` is appended when
        the message does not end with one. When the channel is closed and
        nothing is left to read, returns ``""`` (end of file), so ``for line in
        wrapper`` and ``input()`` end instead of spinning on empty lines.

        Args:
            size: If > 0, return at most this many characters; the rest of
                the message is discarded (it is one message, not a stream).
                0 or negative: no limit.

        Raises:
            TypeError: ``size`` is not an int.
            io.UnsupportedOperation: the wrapper writes a PubChannel.
        """
        _int_arg(size, "readline() size")
        sub = self._sub("readline")
        line = self._echoed(sub.recv(True))
        if not line:  # empty messages are never sent: the channel closed
            return ""
        if not line.endswith("\n"):
            line += "\n"
        return line[:size] if size > 0 else line

    def __iter__(self) -> Iterator[str]:
        """Iterate over lines (:meth:`readline`) until the channel is closed."""
        self._sub("__iter__")
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line
