"""Pub/sub plumbing shared by ``bench_pubsub``, ``bench_fanout`` and ``bench_sweep``.

The three scenarios measure every library the same way, so the way lives here
once and the scenario modules keep only what is theirs (message counts, sizes,
targets, how a row reads):

* **Endpoints**: one receiver and one sender class per library behind a common
  interface (:class:`Receiver`, :class:`Sender`), made by :func:`receiver` and
  :func:`sender` from a library key: ``yoton`` (this project), ``yoton2``
  (pyzo's 2.x; same API, other import), ``yoton-<scheme>`` (this project over
  ``tcp``, ``unix`` or ``inproc``), ``zmq`` (pyzmq with no HWM: lossless),
  ``zmq-default`` (pyzmq's default HWM of 1,000: it drops), ``nng`` and
  ``raw`` (``_raw``).
  Each endpoint imports its library inside ``__init__``, never at module
  level, so that a 2.x role imports pyzo's ``yoton`` (see ``_util``).
* **The measuring loops** of the child processes: :func:`wait_warm` (the
  subscriber's half of the slow-joiner handshake), :func:`count_messages`
  (counts and times what arrives), :func:`send_counted` (sends ``n`` or what
  fits in a time limit) and :func:`send_until` (warm-up messages and end
  markers). Their per-message work is what the figures include besides the
  library, so it is kept to one ``recv``, one slice, one compare and one
  clock read per message on the receiving side, and one ``send`` on the
  other, the same for every library.
* **A one-shot run** (:func:`measure`): N subscribers, each in its own
  process, and one publisher process connected to all of them, through the
  roles :func:`subscriber` and :func:`publisher`. ``bench_pubsub`` runs it
  with one subscriber, ``bench_fanout`` with four; ``bench_sweep`` has roles
  of its own (one pair, many phases) but starts them with
  :func:`start_pubsub`.

Messages carry their meaning in their first bytes: ``W`` warm-up, ``M`` a
counted message, ``E`` an end marker (``bench_sweep`` adds its phase number
as a second byte), padded to the message size with ``x``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from _raw import RawReceiver, RawSender
from _util import PURE, Commands, Role, cpu_seconds, roles, say, say_json, start_role

#: Seconds without a message after which a subscriber stops counting (the rest was lost).
IDLE_TIMEOUT = 2.0
#: pyzmq's high-water marks (messages per socket queue). A PUB socket never
#: blocks: at its HWM it drops. With a limit, a publisher faster than its
#: subscriber loses messages, and the subscriber's rate is then measured while
#: the publisher competes with it for the CPU (on 2 cores: 408k msg/s with 39 %
#: lost at HWM 10,000 against 657-904k lossless). Without one (0) nothing is
#: lost: the publisher's backlog queues in memory and the subscriber drains it,
#: the last part alone on the machine. The like-for-like figure beside ours
#: (which loses nothing: its publisher waits for a congested connection) is
#: the lossless one; the default's is shown beside it, labelled.
ZMQ_HWM_LOSSLESS = 0
ZMQ_HWM_DEFAULT = 1000
#: pynng's buffers, raised from their default (0: none) to the largest it
#: accepts; it still drops when they fill.
NNG_BUFFER = 8192


#: What :meth:`Receiver.reader` returns: a call without arguments that gives
#: the next message (falsy or one of the exceptions after the timeout).
Reader = tuple[Callable[[], Any], tuple[type[BaseException], ...]]


class Receives(Protocol):
    """What :func:`wait_warm` needs of a receiver (a bench's own wrapper will do)."""

    def recv(self, timeout: float) -> bytes | bytearray | None: ...


class Receiver(Receives, Protocol):
    """The subscribing end: binds (port 0), receives bytes, reports its counters.

    ``recv(timeout)`` is for warm-up and set-up; the counting loop uses
    ``reader(timeout)``: the library's own receive call, bound once, so that
    the loop times the library and not a wrapper (a Python method around
    pyzmq's ``recv`` costs a quarter of pyzmq's time per message).
    """

    def bind(self) -> int: ...

    def reader(self, timeout: float) -> Reader: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Sends(Protocol):
    """What the sending loops (:func:`send_counted`, :func:`send_until`) need."""

    def send(self, data: bytes) -> Any: ...

    def flush(self) -> None: ...


class Sender(Sends, Protocol):
    """The publishing end: connects to one or more ports, sends, flushes batches."""

    def connect(self, port: int) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# -- endpoints: one receiver and one sender class per library ---------------------------


def _address(scheme: str, port: int) -> str:
    """``localhost:port``, or ``scheme://localhost:port`` where a scheme is asked for."""
    return f"{scheme}://localhost:{port}" if scheme else f"localhost:{port}"


class YotonReceiver:
    """Ours and 2.x share the API: bind, SubChannel, recv(timeout).

    ``scheme`` ("tcp", "unix", "inproc") is put before the address; without
    one the address is 2.x's plain ``localhost:port`` (TCP in both).
    ``queue``: the run's message count, to size the inbox for (like pyzmq's
    HWM in its lossless row); 0 keeps the default of 10,000.
    """

    def __init__(self, scheme: str = "", queue: int = 0) -> None:
        import yoton

        self.yoton = yoton
        self.scheme = scheme
        self.ctx = yoton.Context(queue_params=(queue + 10_000, "old")) if queue else yoton.Context()
        self.sub = yoton.SubChannel(self.ctx, "bench", yoton.BINARY)

    def bind(self) -> int:
        self.conn = self.ctx.bind(_address(self.scheme, 0))
        return int(self.conn.port1)

    def recv(self, timeout: float) -> bytes | None:
        return self.sub.recv(timeout) or None

    def reader(self, timeout: float) -> Reader:
        # recv(timeout) returns b"" when nothing came in time.
        return functools.partial(self.sub.recv, timeout), ()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.yoton.__version__}
        dropped = getattr(self.sub, "dropped", None)  # 2.x does not count its drops
        if dropped is not None:
            out["inbox_dropped"] = dropped
        return out

    def close(self) -> None:
        self.ctx.close()


class YotonSender:
    """The publishing end of ours and 2.x; ``scheme`` as for :class:`YotonReceiver`."""

    def __init__(self, scheme: str = "") -> None:
        import yoton

        self.scheme = scheme
        self.ctx = yoton.Context()
        self.pub = yoton.PubChannel(self.ctx, "bench", yoton.BINARY)
        self.send = self.pub.send

    def connect(self, port: int) -> None:
        self.conn = self.ctx.connect(_address(self.scheme, port), timeout=10)

    def flush(self) -> None:
        pass  # yoton batches on its own IO thread

    def stats(self) -> dict[str, Any]:
        st = getattr(self.conn, "stats", None)  # ours only
        return {"queue_dropped": st.packages_dropped} if st is not None else {}

    def close(self) -> None:
        self.ctx.close()


class ZmqReceiver:
    """A SUB socket subscribed to everything; ``hwm`` 0 is no limit."""

    def __init__(self, hwm: int = ZMQ_HWM_LOSSLESS) -> None:
        import zmq

        self.zmq = zmq
        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._timeout = -1

    def bind(self) -> int:
        return int(self.sock.bind_to_random_port("tcp://127.0.0.1"))

    def recv(self, timeout: float) -> bytes | None:
        ms = int(timeout * 1000)
        if ms != self._timeout:  # a setsockopt per message would be timed too
            self.sock.setsockopt(self.zmq.RCVTIMEO, ms)
            self._timeout = ms
        try:
            return self.sock.recv()
        except self.zmq.Again:
            return None

    def reader(self, timeout: float) -> Reader:
        self.sock.setsockopt(self.zmq.RCVTIMEO, int(timeout * 1000))
        self._timeout = int(timeout * 1000)
        return self.sock.recv, (self.zmq.Again,)

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.zctx.term()


class ZmqSender:
    """A PUB socket; ``hwm`` 0 is no limit."""

    def __init__(self, hwm: int = ZMQ_HWM_LOSSLESS) -> None:
        import zmq

        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.send = self.sock.send

    def connect(self, port: int) -> None:
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def flush(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.zctx.term()


class NngReceiver:
    """A sub0 socket subscribed to everything, its buffer raised to :data:`NNG_BUFFER`.

    ``large``: lift pynng's 1 MiB limit on received messages (the size sweep
    goes to 16 MiB); left as it is for 100-byte messages.
    """

    def __init__(self, large: bool = False) -> None:
        import pynng

        self.pynng = pynng
        self.sock = pynng.Sub0(topics=b"", recv_buffer_size=NNG_BUFFER)
        if large:
            self.sock.recv_max_size = 0
        self._timeout = -1

    def bind(self) -> int:
        import socket

        with socket.socket() as s:  # pynng does not report the port of tcp://...:0
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.sock.listen(f"tcp://127.0.0.1:{port}")
        return port

    def recv(self, timeout: float) -> bytes | None:
        ms = int(timeout * 1000)
        if ms != self._timeout:
            self.sock.recv_timeout = ms
            self._timeout = ms
        try:
            return self.sock.recv()
        except self.pynng.Timeout:
            return None

    def reader(self, timeout: float) -> Reader:
        self._timeout = int(timeout * 1000)
        self.sock.recv_timeout = self._timeout
        return self.sock.recv, (self.pynng.Timeout,)

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close()


class NngSender:
    """A pub0 socket, its buffer raised to :data:`NNG_BUFFER`."""

    def __init__(self) -> None:
        import pynng

        self.sock = pynng.Pub0(send_buffer_size=NNG_BUFFER)
        self.send = self.sock.send

    def connect(self, port: int) -> None:
        self.sock.dial(f"tcp://127.0.0.1:{port}", block=True)

    def flush(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close()


def receiver(lib: str, *, large: bool = False, run: int = 0) -> Receiver:
    """The receiving endpoint of library key ``lib`` (see the module docstring).

    ``large``: the messages may exceed 1 MiB (only pynng needs telling).
    ``run``: the messages of the run, to size this project's inbox for (the
    rows that compare with pyzmq without HWM); 0 keeps its default.
    """
    if lib == "yoton2":
        return YotonReceiver()
    if lib == "yoton":
        return YotonReceiver(queue=run)
    if lib.startswith("yoton-"):
        return YotonReceiver(lib.split("-", 1)[1], queue=run)
    if lib == "nng":
        return NngReceiver(large)
    if lib == "zmq-default":
        return ZmqReceiver(ZMQ_HWM_DEFAULT)
    return {"zmq": ZmqReceiver, "raw": RawReceiver}[lib]()


def sender(lib: str) -> Sender:
    """The sending endpoint of library key ``lib``."""
    if lib in ("yoton", "yoton2"):
        return YotonSender()
    if lib.startswith("yoton-"):
        return YotonSender(lib.split("-", 1)[1])
    if lib == "zmq-default":
        return ZmqSender(ZMQ_HWM_DEFAULT)
    return {"zmq": ZmqSender, "nng": NngSender, "raw": RawSender}[lib]()


# -- the measuring loops (child side) --------------------------------------------------


def payload(head: bytes, size: int) -> bytes:
    """``head`` (the tag, e.g. ``b"M"``) padded with ``x`` to ``size`` bytes."""
    return head + b"x" * (size - len(head))


def wait_warm(r: Receives, deadline_s: float = 60.0) -> bool:
    """Wait for the first (warm-up) message: then the subscription is live."""
    deadline = time.monotonic() + deadline_s
    while r.recv(0.5) is None:
        if time.monotonic() > deadline:
            return False
    return True


def count_messages(
    reader: Reader,
    n: int,
    counted: bytes = b"M",
    end: bytes = b"E",
    clock: Callable[[], float] = time.perf_counter,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Count the messages that start with ``counted``; time the first to the last.

    ``reader`` is what :meth:`Receiver.reader` returned for :data:`IDLE_TIMEOUT`.
    Stops at ``n``, at a message that starts with ``end``, after
    :data:`IDLE_TIMEOUT` of silence, or (checked every 64 counted messages,
    outside the per-message loop) once ``time.monotonic()`` passes
    ``deadline``. Other messages (warm-up, another phase's) are skipped.
    ``counted`` and ``end`` are the same length. ``clock`` gives ``first``
    and ``last``: ``time.monotonic`` where processes compare them.
    """
    recv, timeouts = reader
    k = len(counted)
    count = 0
    first = last = 0.0
    reason = ""
    silence = f"{IDLE_TIMEOUT} s of silence"
    while count < n and not reason:
        stop = n if deadline is None else min(n, count + 64)
        try:
            while count < stop:
                m = recv()
                if not m:
                    reason = silence
                    break
                head = m[:k]
                if head == counted:
                    last = clock()
                    if not count:
                        first = last
                    count += 1
                elif head == end:
                    reason = "end marker"
                    break
        except timeouts:
            reason = silence
        if deadline is not None and not reason and count < n and time.monotonic() > deadline:
            reason = "phase deadline"
    return {
        "received": count,
        "first": first,
        "last": last,
        "seconds": last - first,
        "end": reason or "all received",
    }


def send_counted(
    s: Sends, msg: bytes, n: int, time_limit: float, step: int = 1000
) -> dict[str, Any]:
    """Send ``msg`` ``n`` times, or as many as fit in ``time_limit`` s; then flush.

    The clock is read once every ``step`` sends, so that reading it costs
    nothing beside small messages; large ones (``step=1``) take long enough
    each that the limit is kept to one message.
    """
    send = s.send
    clock = time.perf_counter
    sent = 0
    t0 = clock()
    deadline = t0 + time_limit
    while sent < n:
        k = min(step, n - sent)
        for _ in range(k):
            send(msg)
        sent += k
        if clock() > deadline:
            break
    s.flush()
    return {"sent": sent, "seconds": clock() - t0}


def send_paced(s: Sends, msg: bytes, n: int, rate: float) -> dict[str, Any]:
    """Send ``msg`` ``n`` times, evenly ``1/rate`` s apart; then flush.

    Sleeps while the next send is over half a millisecond away and polls
    the clock for the rest (``time.sleep`` overshoots by ~0.1 ms): the pace
    is kept, the publisher's own CPU is high and not what is measured.
    ``late`` counts sends that came more than one gap after their time.
    """
    send = s.send
    gap = 1.0 / rate
    clock = time.perf_counter
    t0 = due = clock()
    late = 0
    for _ in range(n):
        due += gap
        while due - clock() > 0.0005:
            time.sleep(0.0002)
        now = clock()
        while now < due:
            now = clock()
        if now - due > gap:
            late += 1
        send(msg)
    s.flush()
    return {"sent": n, "seconds": clock() - t0, "late": late}


def send_until(s: Sends, msg: bytes, stop: Callable[[], bool], pause: float) -> None:
    """Send ``msg`` every ``pause`` s until ``stop()``: warm-up messages, end markers."""
    while not stop():
        s.send(msg)
        s.flush()
        time.sleep(pause)


# -- a one-shot run: the roles (each in its own process) ---------------------------------


def subscriber(lib: str, n: int, clock: str) -> None:
    """Bind, report the port, wait for warm-up (READY), then count up to ``n`` messages.

    ``clock``: the name of the ``time`` function that stamps first and last
    (``"monotonic"`` where several subscribers' stamps are compared).
    """
    r = receiver(lib, run=n)
    say("PORT", r.bind())
    if not wait_warm(r):
        say_json("RESULT", {"error": "no warm-up message arrived"})
        return
    say("READY")
    result = count_messages(r.reader(IDLE_TIMEOUT), n, clock=getattr(time, clock))
    result.update(r.stats())
    say_json("RESULT", result)
    r.close()


def publisher(
    lib: str, ports: list[int], n: int, time_limit: float, size: int, rate: float = 0.0
) -> None:
    """Connect to every port, send warm-up until GO, then ``n`` messages, then end markers.

    The messages go as fast as they can, or ``rate`` a second (:func:`send_paced`).
    """
    s = sender(lib)
    for port in ports:
        s.connect(port)
    say("CONNECTED")
    cmds = Commands()
    send_until(s, payload(b"W", size), lambda: cmds.seen("GO"), 0.002)
    msg = payload(b"M", size)
    result = send_paced(s, msg, n, rate) if rate else send_counted(s, msg, n, time_limit)
    result.update(s.stats())
    say_json("SENT", result)
    send_until(s, payload(b"E", size), lambda: cmds.seen("STOP") or cmds.seen("EOF"), 0.02)
    s.close()


# -- runner side -----------------------------------------------------------------------


def start_pubsub(
    started: list[Role],
    module: str,
    lib: str,
    sub_args: tuple[Any, ...],
    pub_args: tuple[Any, ...],
    subscribers: int = 1,
) -> tuple[Role, list[Role]]:
    """Start the subscribers, then the publisher connected to all of them.

    Runs ``module.subscriber(lib, *sub_args)`` ``subscribers`` times and
    ``module.publisher(lib, ports, *pub_args)`` once, each in its own process
    (2.x roles with pyzo's ``yoton``), and returns once every subscriber has
    said READY, i.e. has received a warm-up message: the subscriptions are
    live and the publisher waits for GO (slow-joiner safe). The roles go into
    ``started``, so the caller's ``_util.roles()`` block ends them.
    """
    yoton2 = lib == "yoton2"
    pure = lib == PURE  # this project, its accelerator off
    if pure:
        lib = "yoton"
    subs = []
    for i in range(subscribers):
        name = f"{lib} sub {i}" if subscribers > 1 else f"{lib} sub"
        sub = start_role(module, "subscriber", lib, *sub_args, yoton2=yoton2, pure=pure, name=name)
        started.append(sub)
        subs.append(sub)
    ports = [int(sub.expect("PORT")) for sub in subs]
    pub = start_role(
        module, "publisher", lib, ports, *pub_args, yoton2=yoton2, pure=pure, name=f"{lib} pub"
    )
    started.append(pub)
    pub.expect("CONNECTED", 60)
    for sub in subs:
        sub.expect("READY", 60)
    return pub, subs


def check_version(lib: str, result: dict[str, Any]) -> None:
    """Raise if a yoton role imported the wrong yoton (2.x for ours or the reverse)."""
    version = str(result.get("version", ""))
    if (lib == "yoton2") != version.startswith("2."):
        raise RuntimeError(f"the {lib} roles imported the wrong yoton (version {version!r})")


def measure(
    lib: str,
    n: int,
    time_limit: float,
    *,
    subscribers: int = 1,
    clock: str = "perf_counter",
    size: int = 100,
    rate: float = 0.0,
) -> dict[str, Any]:
    """One publisher to ``subscribers`` subscribers, ``n`` messages of ``size`` bytes.

    ``rate``: messages a second, evenly paced (0: as fast as it can).

    Returns ``sent`` (the publisher's SENT), ``recv`` (one RESULT per
    subscriber: received, first, last, seconds, end and drop counters), ``cpu``
    (CPU seconds of the publisher, then of each subscriber, from GO to the
    last RESULT) and ``wall`` (that span). Set-up and warm-up are not in it.
    """
    with roles() as started:
        pub, subs = start_pubsub(
            started, "_pubsub", lib, (n, clock), (n, time_limit, size, rate), subscribers
        )
        everyone = [pub, *subs]
        cpu0 = [cpu_seconds(r.pid) for r in everyone]
        t0 = time.monotonic()
        pub.send("GO")
        sent = pub.expect_json("SENT", time_limit + 120)
        results = [sub.expect_json("RESULT", 120) for sub in subs]
        cpu = [cpu_seconds(r.pid) - c for r, c in zip(everyone, cpu0, strict=True)]
        wall = time.monotonic() - t0
        pub.send("STOP")
    for result in results:
        if "error" in result:
            raise RuntimeError(result["error"])
        check_version(lib, result)
    return {"sent": sent, "recv": results, "cpu": cpu, "wall": wall}


def drops(*parts: dict[str, Any]) -> list[str]:
    """``["inbox dropped N", "queue dropped M"]``, summed over ``parts``, the non-zero ones.

    yoton counts what its subscriber's inbox and its sender's queue discarded;
    the rows show it beside received/sent so that a fast figure with losses
    does not pass for a clean one.
    """
    out = []
    for key in ("inbox_dropped", "queue_dropped"):
        total = sum(int(part.get(key) or 0) for part in parts)
        if total:
            out.append(f"{key.replace('_', ' ')} {total}")
    return out
