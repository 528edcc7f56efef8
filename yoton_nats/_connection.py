"""``NatsConnection``: a context's membership of a yoton bus on a NATS server.

Why one Connection per context and bus (and not one per peer): on a bus the
server does the routing, so a context has one link, to the server, and every
other context of the bus is behind it. The core routes through that link as
through any other: broadcasts go out once and the server fans them out to the
contexts that listen on the slot; a package for one context goes to that
context's own subject. ``bind`` and ``connect`` both join the bus (there is no
server side among contexts), and both leave the link ``connected``; a context
that joins by ``bind`` announces itself like one that joins by ``connect``, so
holders of a state re-send it to the newcomer.

``id2`` and ``pid2`` are 0: there is no single peer. ``port1``/``port2`` are
the bus's port when the address named the bus as ``host:port`` (so a program
written for TCP, which reads ``conn.port1`` after binding port 0, runs
unchanged); with ``nats://server/BUS`` they are our socket's and the
server's ports.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from typing import Any

import trio

from yoton import InvalidArgumentError
from yoton.transport import ConnectError, Connection, TimeoutError, engine

from ._address import bus_token, parse_nats_address
from ._busframe import MIN_MAX_PAYLOAD
from ._client import SessionError
from ._link import BusLink, LinkSettings
from ._protocol import PING, pub_command, sub_command, unsub_command

__all__ = ["NatsConnection"]

#: The default of ``conn.timeout`` for a bus link (seconds).
DEFAULT_TIMEOUT = 2.0
#: How long ``close()`` may spend sending what is still queued.
CLOSE_GRACE = 1.0
#: How long making or closing a channel waits for the server to confirm its subscription.
SUBSCRIBE_WAIT = 5.0
#: Ports a bind to port 0 tries before it gives up finding an unused bus.
PROBE_TRIES = 20

#: ``(context id, bus)`` of the links alive in this process: a context joins a
#: bus once (a second link would only double its traffic).
_joined: set[tuple[int, str]] = set()
if hasattr(os, "register_at_fork"):  # a child's contexts are new: it has joined nothing
    os.register_at_fork(after_in_child=_joined.clear)


def _retry(read: Any, context: Any) -> frozenset[int]:
    """``read(context)``, read again if a channel was made in another thread meanwhile
    (the IO engine reads the context's slot tables without its lock)."""
    for _ in range(100):
        try:
            return frozenset(read(context))
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return frozenset(read(context))


class NatsConnection(Connection):
    """A context on a bus of a NATS server or cluster (scheme ``nats``).

    Addresses: ``nats://[user:password@]host:port[,host:port...]/BUS``,
    ``nats://token@host:port/BUS``, or ``host:port`` naming the bus on the
    server of ``$YOTON_NATS_URL`` (see ``_address.py``).

    Keywords of ``bind``/``connect``:
        ssl_context: A stdlib :class:`ssl.SSLContext`: use TLS (also needed
            when the server requires TLS with a private CA).
        tls_handshake_first: Start TLS before the server speaks (servers with
            ``handshake_first``).
        user, password, token: Credentials (instead of in the address).
        reconnect_timeout: Seconds to keep trying servers after losing ours
            before the connection closes (default 60).
    """

    scheme = "nats"
    joins_bus = True
    #: Let the core read plain-TCP server connections (its poller thread, or a
    #: user thread waiting for data: ``Engine.watch_socket``) instead of a trio
    #: task per link; False keeps them on trio.
    poll_reads = True

    def __init__(self, context: Any, name: str = "") -> None:
        super().__init__(context, name)
        # A server is usually across a network, and an idle link PINGs it every
        # timeout / 2: 2 s rather than the 0.5 s of a link between two contexts.
        self.timeout = DEFAULT_TIMEOUT
        self.settings = LinkSettings()
        self.max_message_size = context.max_message_size
        self._engine = engine()
        self._nats_link: BusLink | None = None
        self._nats_bus = ""
        self._my_id = context.id

    # -- options and addresses ------------------------------------------------------

    def configure(self, **options: Any) -> None:
        s = self.settings
        for key, value in options.items():
            if key == "ssl_context":
                if value is not None and not isinstance(value, ssl.SSLContext):
                    raise InvalidArgumentError(
                        f"ssl_context must be an ssl.SSLContext, got {value!r}"
                    )
                s.ssl_context = value
            elif key == "tls_handshake_first":
                s.handshake_first = bool(value)
            elif key in ("user", "password", "token"):
                if not isinstance(value, str):
                    raise InvalidArgumentError(f"{key} must be a str, got {type(value).__name__}")
                setattr(s, key, value)
            elif key == "reconnect_timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise InvalidArgumentError(
                        f"reconnect_timeout must be a number of seconds >= 0, got {value!r}"
                    )
                s.reconnect_timeout = float(value)
            else:
                raise InvalidArgumentError(
                    f"The 'nats' transport takes no option {key!r}; it takes ssl_context, "
                    "tls_handshake_first, user, password, token and reconnect_timeout."
                )

    @property
    def leaving(self) -> bool:
        """True once the connection is closing or closed."""
        return self.status in ("closing", "closed")

    def client_name(self) -> str:
        return f"yoton {self.context.id:016x} pid {os.getpid()}" + (
            f" {self.name}" if self.name else ""
        )

    def listened(self) -> frozenset[int]:
        return _retry(type(self.context).listened_slots, self.context)

    def sending(self) -> frozenset[int]:
        return _retry(type(self.context).sent_slots, self.context)

    def engine_spawn(self, fn: Any, *args: Any) -> None:
        self._engine.spawn(fn, *args)

    def engine_call(self, fn: Any, *args: Any) -> None:
        self._engine.run_sync_soon(fn, *args)

    def engine_kick(self, link: Any) -> None:
        self._engine.run_sync_soon(link.kick)

    # -- joining ------------------------------------------------------------------------

    def open_connect(self, address: str, timeout: float) -> None:
        self._join(address, max(float(timeout), 0.5), announce=False)

    def open_bind(self, address: str, max_tries: int) -> None:
        del max_tries  # every context of a bus joins it: there is no port to be taken
        self._join(address, 5.0, announce=True)

    def _join(self, address: str, timeout: float, announce: bool) -> None:
        if self.context.has_auth_key:
            raise InvalidArgumentError(
                "Context(auth_key=...) has no meaning on a NATS bus (there is no yoton "
                "handshake between contexts there); use the server's authorization instead: "
                "nats://user:password@host:port/BUS, a token, or ssl_context= for TLS."
            )
        addr = parse_nats_address(address, typed=f"nats://{address}")
        s = self.settings
        if not (s.user or s.token):
            s.user, s.password, s.token = addr.user, addr.password, addr.token
        if self._engine.in_engine_thread():
            raise RuntimeError("joining a NATS bus blocks and cannot be done in the IO engine")
        self._engine.run(self._join_async, addr, timeout, announce)

    async def _join_async(self, addr: Any, timeout: float, announce: bool) -> None:
        deadline = time.monotonic() + timeout
        link = BusLink(self, "", list(addr.servers))
        host_port = addr.host_port
        probe = host_port is not None and host_port[1] == 0  # the bus is found after login
        link.bridging = any(c is not self for c in self.context.connections)
        wire = b""
        if not probe:
            bus = f"{host_port[0]}:{host_port[1]}" if host_port else addr.bus
            wire = self._subscribe_all(link, bus)
        try:
            # Login and subscriptions in one exchange: its PONG says the server
            # filters for us from now on.
            session = await link.open(None, deadline, wire)
        except SessionError as exc:  # LoginRefused included: its reason says so
            hint = ""
            if host_port is not None:
                servers = ",".join(f"{h}:{p}" for h, p in addr.servers)
                hint = (
                    f" ({addr.text!r} names a bus, {addr.bus!r}, on the server of "
                    f"$YOTON_NATS_URL, here {servers}; to join a bus through the server "
                    f"at {host_port[0]}:{host_port[1]}, write "
                    f"'nats://{host_port[0]}:{host_port[1]}/BUS')"
                )
            raise ConnectError(f"{exc}{hint}") from exc
        try:
            link.start_session(session)
            if session.info.max_payload < MIN_MAX_PAYLOAD:
                raise ConnectError(
                    f"the NATS server's max_payload "
                    f"({session.info.max_payload}) is below {MIN_MAX_PAYLOAD} bytes"
                )
            if probe and not session.info.headers:
                raise ConnectError(
                    "finding an unused bus (port 0) needs a "
                    "server that supports headers (nats-server 2.2 or later)"
                )
            if probe:
                assert host_port is not None
                host_port = await self._free_bus(session, host_port[0], deadline)
                bus = f"{host_port[0]}:{host_port[1]}"
                await session.stream.send_all(self._subscribe_all(link, bus) + PING)
                await self._await_pong(link, session, deadline)
        except BaseException:
            with trio.CancelScope(shield=True):
                await session.stream.aclose()
            raise
        key = (self.context.id, bus)
        if key in _joined:
            with trio.CancelScope(shield=True):
                await session.stream.aclose()
            raise ConnectError(
                f"this context is on bus {bus!r} already "
                "(a context joins a bus once; like connecting to itself)"
            )
        _joined.add(key)
        self._nats_link = link
        self._nats_bus = bus
        if host_port is not None:
            names = (host_port[0], host_port[1], host_port[0], host_port[1])
        else:
            names = (*session.local, session.host, session.port)
        self.set_established(
            0,  # no single peer: every context of the bus is behind this link
            0,
            hosting=False,  # "connected" either way: there is no server among contexts
            hostname1=names[0],
            port1=names[1],
            hostname2=names[2],
            port2=names[3],
            announce=announce,
        )
        self._engine.spawn(link.run)
        if not self.leaving:
            link.sync_subscriptions()  # a channel made meanwhile

    def _subscribe_all(self, link: BusLink, bus: str) -> bytes:
        """Name the bus's subjects; return the SUB commands of everything wanted."""
        link.prefix = f"yoton.{bus_token(bus)}."
        link.x_subject = link.prefix + "x"
        link.x_subject_b = link.x_subject.encode()
        for subject in sorted(link.wanted()):
            link.subs[subject] = link.next_sid
            link.next_sid += 1
        return b"".join(sub_command(s, sid) for s, sid in link.subs.items())

    async def _await_pong(self, link: BusLink, session: Any, deadline: float) -> None:
        """Read until the PONG (the backlog keeps anything else for the reader task)."""
        from ._protocol import Err, Pong

        while True:
            with trio.move_on_after(max(deadline - time.monotonic(), 0.01)) as scope:
                data = await session.stream.receive_some(1 << 16)
            if scope.cancelled_caught:
                raise ConnectError(f"the NATS server at {session.host}:{session.port} did not "
                                   "confirm our subscriptions in time")  # fmt: skip
            if not data:
                raise ConnectError(f"the NATS server at {session.host}:{session.port} closed "
                                   "the connection")  # fmt: skip
            for ev in session.reader.feed(data):
                if isinstance(ev, Pong):
                    return
                if isinstance(ev, Err) and ev.closes_connection:
                    raise ConnectError(f"the NATS server said: {ev.message}")
                session.backlog.append(ev)

    async def _free_bus(self, session: Any, host: str, deadline: float) -> tuple[str, int]:
        """A port whose bus nobody is on (bind to port 0): publish a probe with a reply
        subject; the server answers "no responders" (status 503) at once when no one
        listens on the bus. A PONG after it bounds the wait."""
        from ._protocol import Msg, Pong

        inbox = f"_yoton.probe.{self.context.id:x}.{random.getrandbits(32):x}"
        stream, reader = session.stream, session.reader
        await stream.send_all(sub_command(inbox, 1 << 30))
        for _ in range(PROBE_TRIES):
            port = random.randint(49152, 65535)
            subject = f"yoton.{bus_token(f'{host}:{port}')}.x"
            await stream.send_all(pub_command(subject, b"", inbox) + PING)
            free = False
            while True:
                with trio.move_on_after(max(deadline - time.monotonic(), 0.01)) as scope:
                    data = await stream.receive_some(1 << 16)
                if scope.cancelled_caught or not data:
                    raise ConnectError("the NATS server did not answer the free-bus probe")
                done = False
                for ev in reader.feed(data):
                    if isinstance(ev, Msg) and ev.subject == inbox and ev.status == 503:
                        free = True
                    elif isinstance(ev, Pong):
                        done = True
                if done:
                    break
            if free:
                await stream.send_all(unsub_command(1 << 30))
                return host, port
        raise ConnectError(f"found no unused bus in {PROBE_TRIES} tries (bind to port 0)")

    # -- the contract the core calls ------------------------------------------------------

    def send_package(self, header: Any, data: bytes) -> None:
        link = self._nats_link
        if link is None:
            return
        if header[2] == self._my_id and link.send_direct(header, data):
            return
        q = link.outq
        n, discard_old = self.context.queue_params
        if len(q) >= n:
            self.count_dropped(1)
            if discard_old != "old":
                return
            try:
                q.popleft()
            except IndexError:
                pass
        q.append((header, data))
        if len(q) >= 4096:
            self.set_congested(True)
        if not link.wake_pending:
            link.wake_pending = True
            self._engine.run_sync_soon(link.kick)

    def queued_count(self) -> int:
        link = self._nats_link
        return len(link.outq) if link is not None else 0

    def wait_writable(self) -> None:
        link = self._nats_link
        if link is None or self._engine.in_io_thread():
            return  # a thread that reads for yoton never waits for the network
        link.wait_writable()

    def slots_changed(self, added: frozenset[int], removed: frozenset[int]) -> None:
        """A channel was made or closed: follow it with SUB/UNSUB; when called from a
        user thread, return once the server confirmed (no slow-joiner window)."""
        link = self._nats_link
        if link is None or self.leaving:
            return
        if self._engine.in_engine_thread():
            link.sync_subscriptions()
            return
        self._engine.run(self._resync, link)

    async def _resync(self, link: BusLink) -> None:
        link.sync_subscriptions()
        await link.ping(SUBSCRIBE_WAIT)

    def links_changed(self) -> None:
        """Another link of our context came or went: a relay listens to every slot."""
        link = self._nats_link
        if link is None:
            return
        bridging = any(c is not self for c in self.context.connections)
        if bridging != link.bridging:
            link.bridging = bridging
            if self._engine.in_engine_thread():
                link.sync_subscriptions()
            else:
                self._engine.run_sync_soon(link.sync_subscriptions)

    def flush(self, timeout: float = 3.0) -> None:
        """Block until what was sent so far reached the server (PING/PONG after it).

        Raises:
            yoton.TimeoutError: not within ``timeout`` seconds (e.g. reconnecting).
        """
        link = self._nats_link
        if link is None or self.leaving:
            return
        if not self._engine.run(self._flush_async, link, float(timeout)):
            raise TimeoutError(
                f"Flushing to the NATS server timed out after {timeout} s "
                f"({len(link.outq)} packages still queued)."
            )

    async def _flush_async(self, link: BusLink, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not link.closing:
            if link.session is not None and not link.outq and not link.writing:
                if await link.ping(deadline - time.monotonic()):
                    return True
            else:
                await trio.sleep(0.001)
        return link.closing

    def shutdown(self, reason: str, notify_peer: bool) -> None:
        link = self._nats_link
        if link is None:
            self.set_closed(reason)
            return
        link.close_reason = reason
        if self._engine.in_engine_thread():
            self._engine.spawn(self._close_async, link, notify_peer)
        else:
            self._engine.run_sync_soon(self._engine.spawn, self._close_async, link, notify_peer)
            self.wait_closed(CLOSE_GRACE + 1.0)

    async def _close_async(self, link: BusLink, graceful: bool) -> None:
        if graceful and link.session is not None:
            with trio.move_on_after(CLOSE_GRACE):
                await self._flush_async(link, CLOSE_GRACE)
        link.closing = True
        if link.run_scope is not None:
            link.run_scope.cancel()
        with link.cond:
            link.cond.notify_all()
        await link.done.wait()

    def forget_bus(self) -> None:
        """The link ended (called once by the link)."""
        _joined.discard((self.context.id, self._nats_bus))

    def _describe(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "status": self.status, "bus": self._nats_bus}
