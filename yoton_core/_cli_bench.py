"""``yoton bench``: a short local pub/sub and req/rep measurement.

Two contexts in this process joined over the chosen transport (one binds at
``<scheme>://localhost:0``, the other connects to the port it got), so it runs
anywhere the transport does, in a few seconds, and tells whether the
transport works and roughly how fast. Both ends share one interpreter (and
its GIL), so the figures are lower than between two processes; the project's
``benchmarks/`` compare yoton with its peers properly.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from ._cli import EXIT_OK, EXIT_TIMEOUT, CommandFailed, _positive_int

__all__ = ["add_command", "run_bench"]

#: (pub/sub messages, req/rep round trips) of a normal and of a --quick run.
SIZES = {"normal": (100_000, 2_000), "quick": (2_000, 50)}
#: Seconds one phase may take before the bench gives up.
PHASE_TIMEOUT = 60.0


def add_command(command: Callable[..., Any], parents: list[Any]) -> None:
    p = command(
        "bench",
        "measure pub/sub and req/rep locally",
        "Join two contexts of this process over TRANSPORT and measure pub/sub throughput "
        "and req/rep round trips. Both ends share one interpreter: for comparisons "
        "between libraries, use the project's benchmarks/.",
        parents,
    )
    p.add_argument(
        "--transport",
        default="tcp",
        metavar="T",
        help="scheme to measure (default: tcp; see 'yoton transports')",
    )
    p.add_argument(
        "--size", type=_positive_int, default=100, metavar="B", help="message size (100)"
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: few messages")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """``yoton bench``: a short pub/sub and req/rep measurement between two local contexts.

    A quick look at what this machine and transport do, not the side-by-side
    benchmarks of ``benchmarks/`` (``python3 dev.py bench``).
    """
    from ._context import Context
    from ._message_types import BINARY
    from ._plugins import resolve_transport
    from ._pubsub import PubChannel, SubChannel
    from ._repchannel import RepChannel
    from ._reqrep import ReqChannel

    scheme = args.transport
    resolve_transport(scheme)  # an unknown scheme: the error lists the installed ones
    n_msgs, n_calls = SIZES["quick" if args.quick else "normal"]
    server, client = Context(verbose=args.verbose), Context(verbose=args.verbose)
    try:
        bound = server.bind(f"{scheme}://localhost:0")
        client.connect(f"{scheme}://localhost:{bound.port1}", timeout=5.0)

        pub = PubChannel(server, "yoton-bench", BINARY)
        sub = SubChannel(client, "yoton-bench", BINARY)
        sub.set_sync_mode(True)  # measure what arrives, not what a full inbox drops
        payload = b"x" * args.size
        start = time.perf_counter()
        for _ in range(n_msgs):
            pub.send(payload)
        for i in range(n_msgs):
            if not sub.recv(PHASE_TIMEOUT):
                raise CommandFailed(
                    f"pub/sub: message {i + 1} of {n_msgs} did not arrive", EXIT_TIMEOUT
                )
        pubsub_s = time.perf_counter() - start

        class Echo(RepChannel):
            def echo(self, arg1: Any, sleep: float = 0.0) -> Any:
                return arg1

        rep = Echo(server, "yoton-bench-rep")
        rep.set_mode("thread")
        req = ReqChannel(client, "yoton-bench-rep")
        req.echo("warm-up").result(PHASE_TIMEOUT)
        rtts = []
        for _ in range(n_calls):
            t0 = time.perf_counter()
            req.echo("x" * 16).result(PHASE_TIMEOUT)
            rtts.append(time.perf_counter() - t0)
    finally:
        client.close()
        server.close()
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    print(f"transport     {scheme} (both ends in this process)")
    print(
        f"pub/sub       {n_msgs / pubsub_s:,.0f} msg/s, {n_msgs * args.size / pubsub_s / 1e6:,.1f} "
        f"MB/s ({n_msgs:,} messages of {args.size:,} B)"
    )
    print(
        f"req/rep       median {statistics.median(rtts) * 1e6:,.0f} us, "
        f"p99 {p99 * 1e6:,.0f} us ({n_calls:,} round trips)"
    )
    return EXIT_OK
