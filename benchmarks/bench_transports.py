"""Benchmarks of yoton's own transports side by side: tcp, unix and inproc.

Scenarios (each a function returning a dict of figures; ``SCENARIOS`` hands
them to ``benchmarks/run.py`` in its row format, and
``python benchmarks/bench_transports.py`` runs them alone, printing the
targets):

* :func:`pubsub_throughput` -- 100-byte TEXT messages, publisher to
  subscriber. For ``tcp`` and ``unix`` the publisher runs in a second process;
  for ``inproc`` both contexts are in this process and a reader thread
  receives (that is what inproc is for).
* :func:`bandwidth` -- BINARY messages of 1 MiB or 16 MiB, same set-up. Over
  inproc the payload is handed over by reference, so the time per message
  does not grow with its size; the result says whether the received object
  *is* the sent one.

Targets (checked by :func:`check_targets` on results of the same run):
inproc pub/sub costs at most half the CPU per message of tcp's two ends
together (issue 18; it restates "inproc at least 3x tcp", which one process
cannot reach: see docs/performance.md); a 16 MiB inproc message is not copied
(bandwidth does not fall with size); unix at least as fast as tcp.

CPU per message: inproc's is this process's CPU time (publisher, reader and
IO threads: both ends) over the run, per message received; tcp's and unix's
is the publisher process's CPU time from its first send to its flush plus
this (subscriber) process's CPU time while it receives. A rate compares one
process's two ends with two processes on two cores; CPU per message compares
the work each way costs.

In ``benchmarks/run.py``'s tables (:func:`rows_for_runner`) each table
compares like with like: messages per second of the same 100-byte messages
over the three transports; bandwidth of the same 16 MiB messages copied
through unix and tcp sockets; and, on its own, the inproc check, which is no
bandwidth at all (the receiver gets the sender's object, so MiB/s grows with
the size for free) and so is compared only with inproc at another size,
never with a transport that copies.

The subscriber's inbox is made large enough (``queue_params``) that nothing
is dropped, and each result reports drops so a lossy run cannot look fast.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any

import yoton

MiB = 1 << 20
BIG_QUEUE = (10**7, "old")
_RECV_TIMEOUT = 30.0

#: The issue's targets as minimum ratios, the same for :func:`check_targets`
#: and the runner's rows: tcp's CPU per message (both ends) over inproc's,
#: unix's msg/s over tcp's, and 16 MiB inproc MiB/s over 1 MiB's ("bandwidth
#: does not fall with size").
TCP_CPU_OVER_INPROC = 2.0
UNIX_OVER_TCP = 1.0
BIG_OVER_SMALL_INPROC = 1.0


# -- the publishing peer (a child process for tcp/unix) ------------------------


def _publish(ctx: yoton.Context, n: int, message: Any, binary: bool) -> float:
    """Send ``message`` ``n`` times; return the monotonic time of the first send."""
    if binary:
        pub = yoton.PubChannel(ctx, "bench-bin", yoton.BINARY)
    else:
        pub = yoton.PubChannel(ctx, "bench-text")
    send = pub.send
    started = time.monotonic()
    for _ in range(n):
        send(message)
    return started


def _message(size: int, binary: bool) -> Any:
    return os.urandom(size) if binary else "x" * size


def _peer_main(address: str, n: int, size: int, binary: bool) -> None:
    ctx = yoton.Context()
    ctx.connect(address, timeout=30.0)
    message = _message(size, binary)
    cpu = time.process_time()
    started = _publish(ctx, n, message, binary)
    ctx.flush(120.0)
    cpu = time.process_time() - cpu
    # time.monotonic() is CLOCK_MONOTONIC, the same clock in every process.
    print(started, cpu, flush=True)
    sys.stdin.read()  # keep the connection until the subscriber is done
    ctx.close()


def _receive(sub: yoton.SubChannel, n: int, out: dict[str, Any]) -> None:
    """Receive ``n`` messages; note when the last one arrived."""
    recv = sub.recv
    got = 0
    last = None
    while got < n:
        msg = recv(_RECV_TIMEOUT)
        if not msg:
            break
        got += 1
        last = msg
    out["ended"] = time.monotonic()
    out["received"] = got
    out["last"] = last


def _run(transport: str, n: int, size: int, binary: bool) -> dict[str, Any]:
    """One measurement: from the publisher's first send to the last receive."""
    sub_ctx = yoton.Context(queue_params=BIG_QUEUE)
    kind = yoton.BINARY if binary else yoton.TEXT
    sub = yoton.SubChannel(sub_ctx, "bench-bin" if binary else "bench-text", kind)
    conn = sub_ctx.bind(f"{transport}://localhost:0")
    address = f"{transport}://localhost:{conn.port1}"
    out: dict[str, Any] = {}
    peer: subprocess.Popen[str] | None = None
    pub_ctx: yoton.Context | None = None
    message = None
    try:
        if transport == "inproc":
            # One process: the publisher in this thread, a reader thread, and
            # the shared IO engine routing between the two contexts.
            pub_ctx = yoton.Context()
            pub_ctx.connect(address, timeout=10.0)
            message = _message(size, binary)
            cpu = time.process_time()
            reader = threading.Thread(target=_receive, args=(sub, n, out))
            reader.start()
            started = _publish(pub_ctx, n, message, binary)
            reader.join()
            cpu_both = time.process_time() - cpu
            cpu_pub = cpu_sub = None
        else:
            peer = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--peer",
                    address,
                    str(n),
                    str(size),
                    "bin" if binary else "text",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            cpu = time.process_time()
            _receive(sub, n, out)
            cpu_sub = time.process_time() - cpu
            assert peer.stdout is not None
            started_text, cpu_text = peer.stdout.readline().split()
            started, cpu_pub = float(started_text), float(cpu_text)
            cpu_both = cpu_pub + cpu_sub
    finally:
        if peer is not None:
            assert peer.stdin is not None
            peer.stdin.close()
            peer.wait(60)
            if peer.stdout is not None:
                peer.stdout.close()
        if pub_ctx is not None:
            pub_ctx.close()
        dropped = sub.dropped
        sub_ctx.close()
    seconds = max(out["ended"] - started, 1e-9)
    result: dict[str, Any] = {
        "transport": transport,
        "messages": n,
        "size": size,
        "received": out["received"],
        "dropped": dropped,
        "seconds": seconds,
        "msg_per_s": out["received"] / seconds,
        "mib_per_s": out["received"] * size / seconds / MiB,
    }
    got = max(out["received"], 1)
    result["cpu_us"] = cpu_both / got * 1e6
    if cpu_pub is not None and cpu_sub is not None:
        result["cpu_pub_us"] = cpu_pub / got * 1e6
        result["cpu_sub_us"] = cpu_sub / got * 1e6
    if message is not None and binary:
        result["same_object"] = out["last"] is message
    return result


def pubsub_throughput(transport: str, n: int = 200_000, size: int = 100) -> dict[str, Any]:
    """Pub/sub of ``size``-byte TEXT messages: one run."""
    result = _run(transport, n, size, binary=False)
    result["scenario"] = f"pub/sub {size} B"
    return result


def bandwidth(transport: str, size: int = 16 * MiB, n: int | None = None) -> dict[str, Any]:
    """BINARY messages of ``size`` bytes: one run."""
    if n is None:
        n = 4000 if transport == "inproc" else max(4, (256 * MiB) // size)
    result = _run(transport, n, size, binary=True)
    result["scenario"] = f"bandwidth {size // MiB} MiB"
    return result


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key``; every run's figure goes with it (``runs``)."""
    ordered = sorted(runs, key=lambda r: r[key])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [round(r[key]) for r in runs]
    return median


def run_all(quick: bool = False) -> dict[str, dict[str, Any]]:
    """Run every measurement (``quick``: fewer messages, one run each).

    Each figure is the median of three runs, taken in rounds (every
    measurement once per round), so that the figures a ratio compares are
    seconds apart, not minutes: the host's load drifts (bench_pubsub does the
    same).
    """
    n, repeat, few = (50_000, 1, 8) if quick else (200_000, 3, 16)
    plan: dict[str, tuple[str, Any]] = {
        "pubsub_100B_tcp": ("msg_per_s", lambda: pubsub_throughput("tcp", n)),
        "pubsub_100B_unix": ("msg_per_s", lambda: pubsub_throughput("unix", n)),
        "pubsub_100B_inproc": ("msg_per_s", lambda: pubsub_throughput("inproc", n)),
        # The same count for both sizes: without copies the time per message,
        # and so the count per second, does not depend on the size.
        "bandwidth_1MiB_inproc": ("mib_per_s", lambda: bandwidth("inproc", 1 * MiB, 250 * few)),
        "bandwidth_16MiB_inproc": ("mib_per_s", lambda: bandwidth("inproc", 16 * MiB, 250 * few)),
        "bandwidth_16MiB_tcp": ("mib_per_s", lambda: bandwidth("tcp", 16 * MiB, few)),
        "bandwidth_16MiB_unix": ("mib_per_s", lambda: bandwidth("unix", 16 * MiB, few)),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    for _ in range(repeat):
        for name, (_key, measure) in plan.items():
            runs[name].append(measure())
    out = {name: median_run(runs[name], key) for name, (key, _measure) in plan.items()}
    for name in ("pubsub_100B_tcp", "pubsub_100B_unix", "pubsub_100B_inproc"):
        # CPU per message: the median of the runs by that figure (its own spread).
        by_cpu = median_run(runs[name], "cpu_us")
        out[name + "_cpu"] = {**by_cpu, "runs": [round(r["cpu_us"], 2) for r in runs[name]]}
    return out


def check_targets(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """``(target, met, detail)`` for the issue's targets, from one run's results."""
    tcp = results["pubsub_100B_tcp"]["msg_per_s"]
    unix = results["pubsub_100B_unix"]["msg_per_s"]
    tcp_cpu = results["pubsub_100B_tcp_cpu"]["cpu_us"]
    inproc_cpu = results["pubsub_100B_inproc_cpu"]["cpu_us"]
    bw1 = results["bandwidth_1MiB_inproc"]
    bw16 = results["bandwidth_16MiB_inproc"]
    big_over_small = bw16["mib_per_s"] / bw1["mib_per_s"]
    return [
        (
            f"inproc pub/sub CPU per message <= 1/{TCP_CPU_OVER_INPROC:g} of tcp's two ends",
            tcp_cpu >= TCP_CPU_OVER_INPROC * inproc_cpu,
            f"{inproc_cpu:.2f} vs {tcp_cpu:.2f} us ({inproc_cpu / tcp_cpu:.2f}x)",
        ),
        (
            "16 MiB over inproc not copied",
            bool(bw16.get("same_object")) and big_over_small >= BIG_OVER_SMALL_INPROC,
            f"same object: {bw16.get('same_object')}; {bw16['mib_per_s']:,.0f} MiB/s "
            f"(1 MiB: {bw1['mib_per_s']:,.0f} MiB/s)",
        ),
        (
            f"unix pub/sub >= {UNIX_OVER_TCP:g}x tcp",
            unix >= UNIX_OVER_TCP * tcp,
            f"{unix / tcp:.2f}x",
        ),
    ]


def format_table(results: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    rows = [("scenario", "transport", "msg/s", "MiB/s", "received", "dropped")]
    for name, r in results.items():
        if name.endswith("_cpu"):
            continue
        rows.append(
            (
                r["scenario"],
                r["transport"],
                f"{r['msg_per_s']:,.0f}",
                f"{r['mib_per_s']:,.1f}",
                f"{r['received']}/{r['messages']}",
                str(r["dropped"]),
            )
        )
    targets = check_targets(results) if "pubsub_100B_tcp" in results else []
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        lines += ["", "| target | met | measured |", "|---|---|---|"]
        lines += [f"| {t} | {'yes' if ok else 'NO'} | {d} |" for t, ok, d in targets]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines += [""] + [f"{'MET ' if ok else 'MISS'} {t}: {d}" for t, ok, d in targets]
    return "\n".join(lines)


def rows_for_runner(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in ``benchmarks/run.py``'s format, four tables that each compare like with like.

    The runner computes every ratio against the row named ``_util.US``, so in
    each table that row is the transport (or size) the issue's target is
    about, and the target sits on the row it is compared with
    (``target_ratio``), where it reaches the runner's summary of targets.

    * pub/sub 100 B, msg/s: inproc (us) against tcp (target) and unix;
    * pub/sub 100 B, msg/s: unix (us) against tcp (target);
    * 16 MiB BINARY, MiB/s: unix (us) against tcp, both copied through a socket;
    * the inproc check: 16 MiB (us) against 1 MiB, both inproc. The receiver
      gets the very object that was sent, so "MiB/s" is only bytes handed over
      per second and grows with the size when nothing is copied; the target
      is that it does not fall (ratio >= 1), and whether the received object
      is the sent one is beside it. A ratio against tcp or unix, which copy
      every byte, would be a number without meaning, so there is none.
    """
    from _util import US

    def row(
        scenario: str, key: str, library: str, metric: str = "msg/s", **extra: Any
    ) -> dict[str, Any]:
        r = results[key]
        value = r["mib_per_s"] if metric.startswith("MiB/s") else r["msg_per_s"]
        detail = f"{r['received']:,}/{r['messages']:,}, dropped {r['dropped']:,}"
        if "same_object" in r:
            detail += f"; {'yes' if r['same_object'] else '**no**'}"
        runs = r.get("runs") or []
        if len(runs) > 1:
            unit = "MiB/s" if metric.startswith("MiB/s") else "msg/s"
            detail += f"; median of {len(runs)} runs ({', '.join(f'{x:,}' for x in runs)} {unit})"
        return {
            "scenario": scenario,
            "library": library,
            "metric": metric,
            "value": value,
            "detail": detail,
            **extra,
        }

    pubsub = "transports: pub/sub 100 B, inproc (us; one process) vs tcp, unix (two processes)"
    cpu = (
        "transports: pub/sub 100 B, CPU µs per message of both ends, "
        "inproc (us; one process) vs tcp, unix (publisher + subscriber)"
    )

    def cpu_row(key: str, library: str, **extra: Any) -> dict[str, Any]:
        r = results[key + "_cpu"]
        detail = f"{r['received']:,}/{r['messages']:,}, dropped {r['dropped']:,}"
        if "cpu_pub_us" in r:
            detail += f"; publisher {r['cpu_pub_us']:.2f} + subscriber {r['cpu_sub_us']:.2f}"
        else:
            detail += "; publisher, reader and IO threads of one process"
        runs = r.get("runs") or []
        if len(runs) > 1:
            detail += f"; median of {len(runs)} runs ({', '.join(f'{x:.2f}' for x in runs)} µs)"
        return {
            "scenario": cpu,
            "library": library,
            "metric": "CPU µs/message",
            "higher_is_better": False,
            "value": r["cpu_us"],
            "detail": detail,
            **extra,
        }

    unix = "transports: pub/sub 100 B, unix (us) vs tcp"
    bw = "transports: bandwidth 16 MiB BINARY, unix (us) vs tcp (two processes)"
    zero_copy = (
        "transports: inproc hands BINARY messages over by reference, "
        "16 MiB (us) vs 1 MiB (one process; not a bandwidth)"
    )
    handed = "MiB/s handed over"
    identity = {"detail_title": "received/sent, dropped; received object is the sent one"}
    return [
        row(pubsub, "pubsub_100B_inproc", US),
        row(pubsub, "pubsub_100B_tcp", "yoton 3 over tcp"),
        row(pubsub, "pubsub_100B_unix", "yoton 3 over unix"),
        cpu_row("pubsub_100B_inproc", US),
        cpu_row("pubsub_100B_tcp", "yoton 3 over tcp", target_ratio=TCP_CPU_OVER_INPROC),
        cpu_row("pubsub_100B_unix", "yoton 3 over unix"),
        row(unix, "pubsub_100B_unix", US),
        row(unix, "pubsub_100B_tcp", "yoton 3 over tcp", target_ratio=UNIX_OVER_TCP),
        row(bw, "bandwidth_16MiB_unix", US, "MiB/s"),
        row(bw, "bandwidth_16MiB_tcp", "yoton 3 over tcp", "MiB/s"),
        row(zero_copy, "bandwidth_16MiB_inproc", US, handed, **identity),
        row(
            zero_copy,
            "bandwidth_1MiB_inproc",
            "yoton 3 over inproc, 1 MiB messages",
            handed,
            target_ratio=BIG_OVER_SMALL_INPROC,
            **identity,
        ),
    ]


def transports_scenario(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The runner's entry: every measurement of this module, one run."""
    only = getattr(opts, "only", None)
    if only and not any(s.lower() in "yoton 3 (this project)" for s in only):
        return []
    return rows_for_runner(run_all(quick=bool(getattr(opts, "quick", False))))


#: For ``benchmarks/run.py``: ``[(name, fn(opts) -> rows)]``.
SCENARIOS = [("transports (tcp, unix, inproc)", transports_scenario)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one run each")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    parser.add_argument(
        "--peer", nargs=4, metavar=("ADDRESS", "N", "SIZE", "KIND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.peer:
        address, n, size, kind = args.peer
        _peer_main(address, int(n), int(size), kind == "bin")
        return 0
    results = run_all(quick=args.quick)
    print(format_table(results))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(format_table(results, markdown=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
