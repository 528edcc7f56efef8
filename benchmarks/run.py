#!/usr/bin/env python3
"""Run yoton's side-by-side benchmarks and print one markdown table per scenario.

Usage (``python3 dev.py bench`` runs this with the project's venv)::

    python benchmarks/run.py [--quick] [--only LIB ...] [--scenario TEXT ...]
                             [--markdown FILE]

Every scenario measures this project against the peers a user would pick
instead -- yoton 2.x (pyzo's copy), pyzmq, pynng -- plus a raw-socket loop as
the physical reference, in one invocation, each peer and role in its own
process. Tables show the ratio of our figure to each peer's (> 1 means we are
better).

Scenario modules (the interface other benchmark modules implement)
------------------------------------------------------------------
Any ``bench_*.py`` module in this directory (e.g. ``bench_pubsub.py``,
``bench_reqrep.py``, ``bench_transports.py``) is imported and its module-level
``SCENARIOS`` list is run, in file-name order (``bench_pubsub`` first)::

    SCENARIOS = [(name, fn), ...]

``fn(opts)`` gets the parsed command line (``argparse.Namespace`` with at least
``quick: bool`` -- use fewer messages/rounds -- and ``only: list[str] | None``
-- substrings of library names to run, None for all) and returns a list of
row dicts, one per library:

* ``scenario`` (str): table title, e.g. ``"pub/sub 100 B"``;
* ``library`` (str): use ``_util.US`` for this project's row, which the
  ratios are computed against;
* ``metric`` (str): column title of the value, e.g. ``"msg/s"``, ``"MiB/s"``,
  ``"median µs"``;
* ``value`` (float or None): None when the peer failed or is unavailable;
* ``detail`` (str, optional): shown in the third column (e.g. received/sent,
  p99, drops) -- put losses here, never hide them;
* ``higher_is_better`` (bool, optional, default True): False for latencies
  and memory, so that the ratio still reads "> 1 = we are better";
* ``detail_title`` (str, optional): column title of ``detail`` (default
  ``"received/sent"`` for msg/s rows, else ``"detail"``).

Roles run in their own processes through ``_util.start_role`` (yoton 2.x with
``yoton2=True``). A module that fails to import, or an ``fn`` that raises, is
reported as a row and does not stop the other scenarios. The whole run stays
within a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import BENCH_DIR, US  # noqa: E402

Scenario = tuple[str, Callable[[argparse.Namespace], list[dict[str, Any]]]]


def discover() -> list[tuple[str, list[Scenario] | Exception]]:
    """Import every ``bench_*.py`` module; return (module, SCENARIOS or the import error)."""
    names = sorted(
        os.path.splitext(os.path.basename(p))[0]
        for p in glob.glob(os.path.join(BENCH_DIR, "bench_*.py"))
    )
    names.sort(key=lambda n: (n != "bench_pubsub", n))
    found: list[tuple[str, list[Scenario] | Exception]] = []
    for name in names:
        try:
            mod = importlib.import_module(name)
            scenarios = list(mod.SCENARIOS)
        except Exception as exc:  # report, do not stop the run
            found.append((name, exc))
            continue
        found.append((name, scenarios))
    return found


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown table for the rows of one scenario."""
    metric = rows[0].get("metric", "value")
    detail_title = rows[0].get("detail_title") or (
        "received/sent" if metric == "msg/s" else "detail"
    )
    higher = rows[0].get("higher_is_better", True)
    ours = next((r.get("value") for r in rows if r.get("library") == US), None)
    lines = [
        f"| library | {metric} | {detail_title} | ratio us/peer |",
        "|---|---:|---|---:|",
    ]
    for r in rows:
        value = r.get("value")
        if r.get("library") == US:
            ratio = "1.00" if value else "n/a"
        elif ours and value:
            x = ours / value if higher else value / ours
            ratio = f"{x:.2f}"
        else:
            ratio = "n/a"
        lines.append(
            f"| {r.get('library', '?')} | {_fmt(value, metric)} | {r.get('detail', '')} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages/rounds (smoke run)")
    ap.add_argument("--only", nargs="+", metavar="LIB", help="only libraries matching these")
    ap.add_argument("--scenario", nargs="+", metavar="TEXT", help="only scenarios matching these")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    opts = ap.parse_args(argv)

    header = (
        f"# yoton benchmarks\n\n{datetime.datetime.now():%Y-%m-%d %H:%M}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs{', quick run' if opts.quick else ''}.\n"
        "Ratio us/peer > 1 means this project is better.\n"
    )
    print(header, flush=True)
    sections = [header]
    t_start = time.monotonic()
    for module, scenarios in discover():
        if isinstance(scenarios, Exception):
            text = f"## {module}\n\nnot run: cannot import it: {scenarios!r}\n"
            print(text, flush=True)
            sections.append(text)
            continue
        for name, fn in scenarios:
            if opts.scenario and not any(s.lower() in name.lower() for s in opts.scenario):
                continue
            print(f"running {name} ({module}) ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                rows = fn(opts)
            except Exception:
                text = f"## {name}\n\nfailed:\n\n```\n{traceback.format_exc()}```\n"
                print(text, flush=True)
                sections.append(text)
                continue
            by_scenario: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_scenario.setdefault(r.get("scenario", name), []).append(r)
            for title, group in by_scenario.items():
                text = f"## {title}\n\n{table(group)}\n"
                print(text, flush=True)
                sections.append(text)
            print(f"({name}: {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(f"total {time.monotonic() - t_start:.1f} s", file=sys.stderr)
    if opts.markdown:
        with open(opts.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(sections))
        print(f"wrote {opts.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
