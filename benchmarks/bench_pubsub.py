"""Pub/sub throughput of 100-byte messages between two processes over TCP.

Libraries: this project, yoton 2.x (pyzo's copy), pyzmq PUB/SUB, pynng
pub0/sub0, and a raw-socket loop (4-byte length prefix + the same payloads,
the sender batching frames into 64 KiB writes) as the physical reference.

Procedure, identical for each library, every role in its own process:

1. The subscriber binds (port 0) and reports its port.
2. The publisher connects and sends warm-up messages (``W...``) every 2 ms.
3. The subscriber says READY on its first message; only then the runner
   tells the publisher GO (slow-joiner safe: the subscription is live).
4. The publisher sends N messages (``M...``), or as many as it can within a
   time limit (yoton 2.x manages ~10,000/s, so it gets fewer), reports how
   many, then sends end markers (``E...``) until told to stop.
5. The subscriber counts ``M`` messages and times the first to the last; it
   stops at N, at an end marker, or after 2 s of silence (lost messages).
   The rate is (received - 1) / (last - first): the *receive* rate, with
   received/sent shown beside it, so drops are never hidden.

Connection set-up and warm-up are outside the timed span. The queue limits
of pyzmq (HWM) and pynng (buffer sizes) are raised to about yoton's default
of 10,000 messages per queue; losses are still reported.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from _raw import RawReceiver, RawSender
from _util import US, Commands, cpu_seconds, roles, say, say_json, start_role

PAYLOAD_SIZE = 100
#: Queue limits of the peers, raised from their defaults (zmq 1000, nng 0/few)
#: to be comparable with yoton's default 10000 per queue; drops still show.
ZMQ_HWM = 10000
NNG_BUFFER = 8192  # the largest pynng accepts
IDLE_TIMEOUT = 2.0
SCENARIO = "pub/sub 100 B"

LIBRARIES = {
    # key: (display name, messages, time limit of the publisher in s)
    "yoton": (US, 300_000, 20.0),
    "yoton2": ("yoton 2.2 (pyzo)", 30_000, 3.0),
    "zmq": ("pyzmq PUB/SUB", 300_000, 20.0),
    "nng": ("pynng pub0/sub0", 300_000, 20.0),
    "raw": ("raw socket loop", 300_000, 20.0),
}


#: Minimum ratio us/peer in the same run (issue 6).
TARGETS = {"yoton2": 30.0, "zmq": 0.3}


def payload(tag: bytes) -> bytes:
    return tag + b"x" * (PAYLOAD_SIZE - len(tag))


# -- endpoints: one receiver and one sender class per library ---------------------------
# Each is used in its own process; imports happen inside so that the 2.x roles
# import pyzo's yoton (see _util).


class YotonReceiver:
    """Ours and 2.x share the API: bind, SubChannel, recv(timeout)."""

    def __init__(self) -> None:
        import yoton

        self.yoton = yoton
        self.ctx = yoton.Context()
        self.sub = yoton.SubChannel(self.ctx, "bench", yoton.BINARY)

    def bind(self) -> int:
        self.conn = self.ctx.bind("localhost:0")
        return int(self.conn.port1)

    def recv(self, timeout: float) -> bytes | None:
        return self.sub.recv(timeout) or None

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.yoton.__version__}
        dropped = getattr(self.sub, "dropped", None)
        if dropped is not None:
            out["inbox_dropped"] = dropped
        return out

    def close(self) -> None:
        self.ctx.close()


class YotonSender:
    def __init__(self) -> None:
        import yoton

        self.ctx = yoton.Context()
        self.pub = yoton.PubChannel(self.ctx, "bench", yoton.BINARY)
        self.send = self.pub.send

    def connect(self, port: int) -> None:
        self.conn = self.ctx.connect(f"localhost:{port}", timeout=10)

    def flush(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        st = getattr(self.conn, "stats", None)
        return {"queue_dropped": st.packages_dropped} if st is not None else {}

    def close(self) -> None:
        self.ctx.close()


class ZmqReceiver:
    def __init__(self) -> None:
        import zmq

        self.zmq = zmq
        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, ZMQ_HWM)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._timeout = -1

    def bind(self) -> int:
        return int(self.sock.bind_to_random_port("tcp://127.0.0.1"))

    def recv(self, timeout: float) -> bytes | None:
        ms = int(timeout * 1000)
        if ms != self._timeout:
            self.sock.setsockopt(self.zmq.RCVTIMEO, ms)
            self._timeout = ms
        try:
            return self.sock.recv()
        except self.zmq.Again:
            return None

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.zctx.term()


class ZmqSender:
    def __init__(self) -> None:
        import zmq

        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, ZMQ_HWM)
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
    def __init__(self) -> None:
        import pynng

        self.pynng = pynng
        self.sock = pynng.Sub0(topics=b"", recv_buffer_size=NNG_BUFFER)
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

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close()


class NngSender:
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


ENDPOINTS: dict[str, tuple[type, type]] = {
    "yoton": (YotonReceiver, YotonSender),
    "yoton2": (YotonReceiver, YotonSender),
    "zmq": (ZmqReceiver, ZmqSender),
    "nng": (NngReceiver, NngSender),
    "raw": (RawReceiver, RawSender),
}


# -- roles (each runs in its own process) --------------------------------------------


def subscriber(lib: str, n: int) -> None:
    r = ENDPOINTS[lib][0]()
    say("PORT", r.bind())
    deadline = time.monotonic() + 60
    while r.recv(0.5) is None:  # warm-up: wait for the first message
        if time.monotonic() > deadline:
            say_json("RESULT", {"error": "no warm-up message arrived"})
            return
    say("READY")
    recv = r.recv
    clock = time.perf_counter
    count = 0
    first = last = 0.0
    end_reason = "all received"
    while count < n:
        m = recv(IDLE_TIMEOUT)
        if m is None:
            end_reason = f"{IDLE_TIMEOUT} s of silence"
            break
        tag = m[:1]
        if tag == b"M":
            last = clock()
            if not count:
                first = last
            count += 1
        elif tag == b"E":
            end_reason = "end marker"
            break
    result = {"received": count, "seconds": last - first, "end": end_reason}
    result.update(r.stats())
    say_json("RESULT", result)
    r.close()


def publisher(lib: str, port: int, n: int, time_limit: float) -> None:
    s = ENDPOINTS[lib][1]()
    s.connect(port)
    say("CONNECTED")
    cmds = Commands()
    warm = payload(b"W")
    while not cmds.seen("GO"):
        s.send(warm)
        s.flush()
        time.sleep(0.002)
    msg = payload(b"M")
    send = s.send
    clock = time.perf_counter
    sent = 0
    t0 = clock()
    deadline = t0 + time_limit
    while sent < n:
        k = min(1000, n - sent)
        for _ in range(k):
            send(msg)
        sent += k
        if clock() > deadline:
            break
    s.flush()
    t1 = clock()
    result = {"sent": sent, "seconds": t1 - t0}
    result.update(s.stats())
    say_json("SENT", result)
    end = payload(b"E")
    while not (cmds.seen("STOP") or cmds.seen("EOF")):
        send(end)
        s.flush()
        time.sleep(0.02)
    s.close()


# -- runner side -------------------------------------------------------------------


def measure(lib: str, n: int, time_limit: float) -> dict[str, Any]:
    """Run one publisher/subscriber pair; return the raw figures."""
    yoton2 = lib == "yoton2"
    with roles() as started:
        sub = start_role("bench_pubsub", "subscriber", lib, n, yoton2=yoton2, name=f"{lib} sub")
        started.append(sub)
        port = int(sub.expect("PORT"))
        pub = start_role(
            "bench_pubsub", "publisher", lib, port, n, time_limit, yoton2=yoton2, name=f"{lib} pub"
        )
        started.append(pub)
        pub.expect("CONNECTED")
        sub.expect("READY", 60)
        cpu0 = [cpu_seconds(pub.pid), cpu_seconds(sub.pid)]
        t0 = time.monotonic()
        pub.send("GO")
        sent = pub.expect_json("SENT", time_limit + 120)
        result = sub.expect_json("RESULT", 120)
        cpu = [cpu_seconds(pub.pid) - cpu0[0], cpu_seconds(sub.pid) - cpu0[1]]
        wall = time.monotonic() - t0
        pub.send("STOP")
    if "error" in result:
        raise RuntimeError(result["error"])
    version = str(result.get("version", ""))
    if (lib == "yoton2") != version.startswith("2."):
        raise RuntimeError(f"the {lib} roles imported the wrong yoton (version {version!r})")
    return {"sent": sent, "recv": result, "cpu": cpu, "wall": wall}


def run(opts: Namespace) -> list[dict[str, Any]]:
    rows = []
    quick = getattr(opts, "quick", False)
    only = getattr(opts, "only", None)
    for lib, (display, n, limit) in LIBRARIES.items():
        if only and not any(o.lower() in (lib + " " + display).lower() for o in only):
            continue
        if quick:
            n, limit = max(n // 10, 2000), min(limit, 2.0)
        row: dict[str, Any] = {"scenario": SCENARIO, "library": display, "metric": "msg/s"}
        if lib in TARGETS:
            row["target_ratio"] = TARGETS[lib]
        try:
            fig = measure(lib, n, limit)
        except Exception as exc:  # one broken peer must not hide the others
            row.update(value=None, detail=f"failed: {str(exc).splitlines()[0]}")
            rows.append(row)
            continue
        received, secs = fig["recv"]["received"], fig["recv"]["seconds"]
        sent = fig["sent"]["sent"]
        rate = (received - 1) / secs if received > 1 and secs > 0 else 0.0
        extra = []
        for key in ("inbox_dropped", "queue_dropped"):
            for part in (fig["recv"], fig["sent"]):
                if part.get(key):
                    extra.append(f"{key.replace('_', ' ')} {part[key]}")
        detail = f"{received:,}/{sent:,}"
        if received != sent:
            detail += f" ({sent - received:,} lost)"
        if extra:
            detail += "; " + ", ".join(extra)
        detail += (
            f"; CPU s in {fig['wall']:.1f} s: publisher {fig['cpu'][0]:.2f}, "
            f"subscriber {fig['cpu'][1]:.2f}"
        )
        row.update(
            value=rate,
            detail=detail,
            received=received,
            sent=sent,
            send_rate=sent / fig["sent"]["seconds"] if fig["sent"]["seconds"] else 0.0,
        )
        rows.append(row)
    return rows


SCENARIOS = [(SCENARIO, run)]
