"""The IO engine: one trio event loop in one daemon thread, shared by every context.

Why one loop and not threads per connection: a context with a thousand peers
should not need two thousand threads, and a single loop lets the receive path
route a whole batch of packages without any lock hand-offs between IO threads.

The synchronous API (``send``, ``recv``, ``Future.result``) is a thin bridge:
user threads append to plain deques and wake the loop with
:meth:`Engine.run_sync_soon` at most once per batch; the loop notifies user
threads through ``threading.Condition`` objects only when someone waits.

Import starts nothing: the thread is created by the first :func:`get_engine`
call that needs it. A child created by ``os.fork`` gets a fresh engine, because
the parent's loop thread does not exist in the child.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._borrow import give_back_held
from ._errors import InvalidArgumentError
from ._log import get_logger
from ._poller import AVAILABLE as POLLER_AVAILABLE
from ._poller import get_poller, in_io_role
from ._socketwatch import DEFAULT_READ_SIZE, SocketWatch, WatchedSocket

if TYPE_CHECKING:
    import socket

    from ._connection import Connection

__all__ = ["LINK_ERRORS", "Engine", "get_engine"]

logger = get_logger()

#: What a stream operation raises when its link is gone: trio's own errors
#: (the stream broke, or we closed it meanwhile) and the OS's. Catch these, not
#: a hand-written list, wherever a send or receive may meet a dead link. (Not in
#: _errors.py: the sans-IO modules import that one and must not import trio.)
LINK_ERRORS: tuple[type[Exception], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)

#: How often the keep-alive ticker runs at most (heartbeats, timed-out
#: detection): every tick while any ticker wants the default cadence.
TICK_INTERVAL = 0.05
#: The longest the ticker sleeps while every ticker says it needs nothing
#: sooner (a bound on how late a due time that moved earlier is seen).
TICK_MAX_SLEEP = 1.0


class Engine:
    """A trio loop running in a daemon thread, plus a thread-safe bridge to it.

    One per process (:func:`engine`), whatever the number of contexts and
    connections: it accepts, connects, handshakes, writes batches and runs the
    keep-alive ticks, so a context with a thousand connections needs no
    thousand threads. It starts on first use and is replaced in a forked
    child. Transports reach it through :func:`yoton.transport.engine`.
    """

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()
        # Callables ``fn(now)``, called every TICK_INTERVAL or when they say (add_ticker).
        self._tickers: set[Callable[[float], object]] = set()
        self._tick_kick: trio.Event | None = None  # set to tick at once (a ticker was added)
        self._ticks = 0

    # -- life cycle ---------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._token is not None:
            return
        with self._lock:
            if self._token is not None:
                return
            self._thread = threading.Thread(
                target=self._thread_main, name="yoton-engine", daemon=True
            )
            self._thread.start()
            self._started.wait()

    def _thread_main(self) -> None:
        self._ident = threading.get_ident()
        try:
            trio.run(self._main)
        except BaseException:  # pragma: no cover - the engine must never die silently
            logger.exception("yoton engine stopped unexpectedly")
            raise

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            nursery.start_soon(self._ticker)
            self._started.set()
            await trio.sleep_forever()

    async def _ticker(self) -> None:
        """Call the tickers, then sleep until the earliest time one of them named.

        Why not every TICK_INTERVAL, as before: an idle process woke 20 times a
        second for it (~4 ms of CPU a second, the engine's whole idle cost),
        while an idle link needs a heartbeat 5 times a second and nothing else
        does. A ticker may return the :func:`time.monotonic` by which it needs
        its next call (StreamLink: its next heartbeat or time-out); ``None``
        asks for the default cadence. Never sooner than TICK_INTERVAL after a
        tick (a thousand links' due times, or a thousand links added, do not
        make a thousand ticks), never later than TICK_MAX_SLEEP, and by
        TICK_INTERVAL after the last when a ticker is added (:meth:`add_ticker`
        sets ``_tick_kick``, once per tick).
        """
        now = time.monotonic()
        wake = now + TICK_INTERVAL
        while True:
            kick = self._tick_kick = trio.Event()
            with trio.move_on_after(max(0.0, wake - time.monotonic())):
                await kick.wait()
            if kick.is_set():  # a ticker was added: tick now, or TICK_INTERVAL after the last
                await trio.sleep(max(0.0, now + TICK_INTERVAL - time.monotonic()))
            self._ticks += 1
            now = time.monotonic()  # the clock of every tick, in any thread
            soonest = now + TICK_INTERVAL
            wake = now + TICK_MAX_SLEEP
            for fn in list(self._tickers):
                try:
                    due = fn(now)
                except Exception:  # pragma: no cover - defensive
                    logger.exception("error in keep-alive tick %r", fn)
                    due = None
                if not isinstance(due, float):  # (None: the default cadence)
                    wake = soonest
                elif due < wake:
                    wake = max(due, soonest)

    # -- bridge -------------------------------------------------------------

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The engine loop's ``TrioToken`` (starts the engine if needed)."""
        self._ensure_started()
        assert self._token is not None
        return self._token

    def in_engine_thread(self) -> bool:
        """True when called from the engine's own thread."""
        return threading.get_ident() == self._ident

    def in_io_thread(self) -> bool:
        """True in the engine's thread and in any thread reading packages for
        yoton (the poller, or a thread that borrowed sockets): such a thread
        must never block waiting for the network."""
        return threading.get_ident() == self._ident or in_io_role()

    def run_sync_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` in the engine thread; thread-safe, never blocks."""
        self.token.run_sync_soon(fn, *args)

    def spawn(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start ``async_fn(*args)`` as a task of the engine; thread-safe.

        Exceptions escaping the task are logged, never propagated: one broken
        connection must not take the engine (and every other connection) down.
        """
        if self.in_engine_thread():
            assert self._nursery is not None
            self._nursery.start_soon(_guarded, async_fn, *args)
        else:
            nursery = self._nursery_or_start()
            self.run_sync_soon(nursery.start_soon, _guarded, async_fn, *args)

    def _nursery_or_start(self) -> trio.Nursery:
        self._ensure_started()
        assert self._nursery is not None
        return self._nursery

    def run(self, async_fn: Callable[..., Awaitable[Any]], *args: object) -> Any:
        """Run ``async_fn(*args)`` in the engine and block until it returns.

        The calling thread first hands back the sockets it kept from its last
        wait for yoton data, so that what ``async_fn`` waits for is read
        meanwhile even when it arrives on one of them.
        """
        if self.in_engine_thread():
            raise RuntimeError(
                "this yoton call blocks and cannot be made from the engine thread "
                "(e.g. from a handler running inside the IO loop)"
            )
        give_back_held()  # what the engine waits for may come on a socket we hold
        return trio.from_thread.run(async_fn, *args, trio_token=self.token)

    def watch_socket(
        self,
        conn: Connection,
        sock: socket.socket | int,
        receive: Callable[[bytes], object],
        ended: Callable[[BaseException | None], object],
        *,
        read_size: int = DEFAULT_READ_SIZE,
    ) -> SocketWatch | None:
        """Let the core read ``sock`` for ``conn``: the poller, or a thread that waits.

        For a transport that is not a stream connection but whose input is a
        plain socket (or another file descriptor epoll accepts, e.g. a pipe).
        From now on the process's poller thread reads it, and so does a user
        thread of ``conn``'s context while it waits for yoton data (a
        ``Future.result()``, ``SubChannel.recv()``, a RepChannel worker): it
        reads and delivers the reply it waits for itself, with no hand-off
        between threads. Each chunk read goes to ``receive(data)``, which
        decodes it and calls ``conn.deliver``; one thread at a time, in order,
        and in an IO role (it must not block waiting for the network).
        Reading ends once: ``ended(exc)`` at EOF (``exc`` None), after a
        failed read (the ``OSError``), when ``receive`` raised (the exception,
        logged to ``conn.log``) or returned False (None); or by
        :meth:`SocketWatch.stop`, after which no thread reads ``sock``.
        :class:`SocketWatch` has the whole contract.

        Args:
            conn: The connection whose packages arrive on ``sock``.
            sock: A connected, non-blocking socket, or a non-blocking file
                descriptor; the transport keeps owning (and closes) it.
            receive: Called with each chunk (``bytes``); return False to stop.
            ended: Called once when reading ended by itself.
            read_size: Bytes asked for per read (default 64 KiB).

        Returns:
            The watch (call its ``stop()`` before closing ``sock``), or None
            where the platform has no ``select.epoll``: read the socket your
            own way there (e.g. a task of this engine).

        Raises:
            InvalidArgumentError: ``conn`` is not a :class:`Connection`,
                ``sock`` is in blocking mode, or ``read_size`` < 1 (a
                ``TypeError`` and a ``ValueError`` too).
        """
        from ._connection import Connection  # (a cycle at import time)

        if not isinstance(conn, Connection):
            raise InvalidArgumentError(
                f"watch_socket() reads a socket for a yoton.transport.Connection, got {conn!r}"
            )
        if isinstance(sock, bool) or not isinstance(sock, int) and not hasattr(sock, "fileno"):
            raise InvalidArgumentError(
                f"watch_socket() reads a socket or a file descriptor (int), got {sock!r}"
            )
        fd = sock if isinstance(sock, int) else sock.fileno()
        if os.get_blocking(fd):
            raise InvalidArgumentError(
                f"watch_socket() needs a non-blocking socket or file descriptor; {sock!r} is "
                "blocking (call sock.setblocking(False) or os.set_blocking(fd, False) first)"
            )
        if isinstance(read_size, bool) or not isinstance(read_size, int) or read_size < 1:
            raise InvalidArgumentError(f"read_size must be at least 1 byte, got {read_size!r}")
        if not POLLER_AVAILABLE:  # pragma: no cover - Linux has epoll
            return None
        poller = get_poller()
        reader = WatchedSocket(conn, sock, receive, ended, read_size, poller)
        poller.add(reader)  # (before a borrower can see it: see _socketwatch.py)
        conn.context._add_reader(reader)
        if reader.done:  # it ended before it was listed: unlist it
            conn.context._remove_reader(reader)
        return SocketWatch(reader)

    def add_ticker(self, fn: Callable[[float], object]) -> None:
        """Call ``fn(now)`` in the engine thread every :data:`TICK_INTERVAL` seconds.

        ``now`` is :func:`time.monotonic` of the tick. For keep-alive work
        (heartbeats, timed-out detection). ``fn`` may return the
        :func:`time.monotonic` by which it needs its next call: the engine then
        sleeps until the earliest any ticker needs (at least TICK_INTERVAL, at
        most :data:`TICK_MAX_SLEEP`), so an idle process does not wake for
        nothing; any other return value (``None``) asks for every
        TICK_INTERVAL. A ticker added is called within TICK_INTERVAL. Adding
        the same callable (or an equal bound method) again changes nothing.
        Thread-safe.
        """
        self._ensure_started()
        if fn in self._tickers:
            return
        self._tickers.add(fn)
        kick = self._tick_kick
        if kick is not None and not kick.is_set():
            if self.in_engine_thread():
                kick.set()
            else:
                self.run_sync_soon(kick.set)

    def remove_ticker(self, fn: Callable[[float], object]) -> None:
        """Stop calling ``fn`` (an equal bound method will do); thread-safe."""
        self._tickers.discard(fn)

    def statistics(self) -> dict[str, int]:
        """``{"tickers": n, "ticks": n, "running": 0 or 1}``, for :func:`yoton.io_statistics`.

        ``ticks``: how often the ticker ran so far (an idle process's wake-ups).
        """
        return {
            "tickers": len(self._tickers),
            "ticks": self._ticks,
            "running": int(self._token is not None),
        }


async def _guarded(async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
    try:
        await async_fn(*args)
    except trio.Cancelled:
        raise
    except Exception:
        logger.exception("unhandled error in yoton engine task %r", async_fn)


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """Return the process-wide engine (created lazily; its thread starts on first use)."""
    global _engine
    eng = _engine
    if eng is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine()
            eng = _engine
    return eng


def _after_fork_in_child() -> None:
    global _engine, _engine_lock
    _engine = None
    _engine_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
