#!/usr/bin/env python3
"""Run yoton's side-by-side benchmarks and print one markdown table per scenario.

Usage (``python3 dev.py bench`` runs this with the project's venv)::

    python benchmarks/run.py [--quick] [--only LIB ...] [--scenario TEXT ...]
                             [--markdown FILE] [--plot FILE]

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
* ``target_ratio`` (float, optional): on a peer's row, the issue's target as
  a minimum of its "ratio us/peer" (e.g. 0.3 for "at least 0.3x pyzmq", 0.5
  for "a median at most 2x pyzmq's");
* ``target_max`` / ``target_met`` (optional): an absolute target on our own
  row (e.g. at most 8 threads) and whether the run met it;
* ``no_ratio`` (bool, optional): show no ratio for this row (e.g. inproc,
  which hands messages over by reference, beside copies over sockets);
* ``series`` (dict size -> value, optional): figures against message size;
  such a group is shown as one column per size and drawn in the plot
  (``series_detail``: size -> text, for losses).

Output: the tables, then a summary of every target (met / MISSED), printed
and written to ``--markdown`` (default ``benchmarks/results/latest.md``); the
plot of throughput against message size goes to ``--plot`` (default
``benchmarks/results/throughput.png``).

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
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import BENCH_DIR, US, accelerator_state  # noqa: E402

ROOT = os.path.dirname(BENCH_DIR)
#: The documentation page that shows the tables (its "Benchmarks" section), and the plot.
DOCS_PAGE = os.path.join(ROOT, "docs", "performance.md")
DOCS_PLOT = os.path.join(ROOT, "docs", "throughput.png")
DOCS_BEGIN = "<!-- benchmark results: begin (written by benchmarks/run.py --docs) -->"
DOCS_END = "<!-- benchmark results: end -->"
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
DEFAULT_MARKDOWN = os.path.join(RESULTS_DIR, "latest.md")
DEFAULT_PLOT = os.path.join(RESULTS_DIR, "throughput.png")

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
    if value >= 1000 or (value >= 10 and float(value).is_integer()):
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def _ratio(ours: float | None, value: float | None, higher: bool) -> float | None:
    if not ours or not value:
        return None
    return ours / value if higher else value / ours


def _target_cell(r: dict[str, Any], ratio: float | None) -> str:
    if "target_ratio" in r:
        want = r["target_ratio"]
        met = ratio is not None and ratio >= want
        return f"≥ {want:.2f}: {'met' if met else '**MISSED**'}"
    if "target_max" in r:
        return f"≤ {r['target_max']:g}: {'met' if r.get('target_met') else '**MISSED**'}"
    return ""


def _size_label(size: int) -> str:
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size // unit} {name}"
    return f"{size} B"


def series_table(rows: list[dict[str, Any]]) -> str:
    """One row per library, one column per message size."""
    sizes = sorted({int(k) for r in rows for k in (r.get("series") or {})})
    metric = rows[0].get("metric", "value")
    lines = [
        f"| library ({metric}) | " + " | ".join(_size_label(z) for z in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    notes = []
    for r in rows:
        series = {int(k): v for k, v in (r.get("series") or {}).items()}
        if not series:
            lines.append(
                f"| {r.get('library')} | "
                + " | ".join(["n/a"] * len(sizes))
                + f" |  <!-- {r.get('detail', '')} -->"
            )
            notes.append(f"{r.get('library')}: {r.get('detail', '')}")
            continue
        cells = [_fmt(series.get(z), metric) for z in sizes]
        lines.append(f"| {r.get('library')} | " + " | ".join(cells) + " |")
        for z, text in (r.get("series_detail") or {}).items():
            if "lost" in str(text) or "dropped" in str(text):
                notes.append(f"{r.get('library')}, {_size_label(int(z))}: {text}")
    if notes:
        lines += ["", "Received/sent where not all arrived: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown table for the rows of one scenario."""
    if any("series" in r for r in rows):
        return series_table(rows)
    metric = rows[0].get("metric", "value")
    detail_title = rows[0].get("detail_title") or (
        "received/sent" if metric == "msg/s" else "detail"
    )
    higher = rows[0].get("higher_is_better", True)
    ours = next((r.get("value") for r in rows if r.get("library") == US), None)
    with_targets = any("target_ratio" in r or "target_max" in r for r in rows)
    lines = [
        f"| library | {metric} | {detail_title} | ratio us/peer |"
        + (" target |" if with_targets else ""),
        "|---|---:|---|---:|" + ("---|" if with_targets else ""),
    ]
    for r in rows:
        value = r.get("value")
        if r.get("library") == US:
            ratio: float | None = None
            shown = "1.00" if value else "n/a"
        elif r.get("no_ratio"):
            ratio, shown = None, "—"
        else:
            ratio = _ratio(ours, value, higher)
            shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        line = (
            f"| {r.get('library', '?')} | {_fmt(value, metric)} | {r.get('detail', '')} | {shown} |"
        )
        if with_targets:
            line += f" {_target_cell(r, ratio)} |"
        lines.append(line)
    return "\n".join(lines)


def target_summary(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Every target of the run: what, measured, met."""
    lines = ["| scenario | target | measured | met |", "|---|---|---:|---|"]
    for title, rows in groups.items():
        higher = rows[0].get("higher_is_better", True)
        ours = next((r.get("value") for r in rows if r.get("library") == US), None)
        for r in rows:
            if "target_ratio" in r:
                ratio = _ratio(ours, r.get("value"), higher)
                met = ratio is not None and ratio >= r["target_ratio"]
                want = f"us/{r['library']} ≥ {r['target_ratio']:.2f}"
                got = f"{ratio:.2f}" if ratio is not None else "n/a"
            elif "target_max" in r:
                met = bool(r.get("target_met"))
                want = f"≤ {r['target_max']:g} {r.get('metric', '')}"
                got = _fmt(r.get("value"), "")
            else:
                continue
            lines.append(f"| {title} | {want} | {got} | {'met' if met else '**MISSED**'} |")
    return "\n".join(lines) if len(lines) > 2 else "No targets were measured in this run."


def plot(groups: dict[str, list[dict[str, Any]]], path: str, subtitle: str) -> bool:
    """Log-log plot of every ``series`` row (throughput against message size).

    Rows marked ``by_reference`` (inproc, whose receiver gets the sender's
    object: its "MB/s" grows with the size up to ~10^7 and would squeeze every
    other line into the bottom of a shared axis) get a panel of their own,
    with this project's tcp line repeated there for scale.
    """
    series_rows = [r for rows in groups.values() for r in rows if r.get("series")]
    if not series_rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    copied = [r for r in series_rows if not r.get("by_reference")]
    apart = [r for r in series_rows if r.get("by_reference")]
    sizes = sorted({int(k) for r in series_rows for k in r["series"]})
    metric = series_rows[0].get("metric", "")
    if apart:
        fig, (ax, ax2) = plt.subplots(
            1, 2, figsize=(13, 5.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]}
        )
    else:
        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
        ax2 = None

    def draw(axis: Any, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            pts = sorted((int(k), v) for k, v in r["series"].items() if v)
            if not pts:
                continue
            ours = r.get("library") == US
            axis.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "-" if ours or r.get("by_reference") else "--",
                marker="o",
                markersize=3,
                label=r.get("library"),
                linewidth=2.2 if ours or r.get("by_reference") else 1.3,
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sizes, [_size_label(z) for z in sizes], rotation=50, fontsize=8)
        axis.set_xlabel("message size")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)

    draw(ax, copied)
    ax.set_ylabel(f"throughput, {metric} (log)")
    ax.set_title("copied through a socket (two processes)", fontsize=10)
    if ax2 is not None:
        scale = [
            {**r, "library": "yoton 3 over tcp (for scale)"}
            for r in copied
            if r.get("library") == US
        ]
        draw(ax2, apart + scale)
        ax2.set_title("inproc: handed over by reference (one process)", fontsize=10)
    fig.suptitle(f"pub/sub throughput against message size\n{subtitle}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def update_docs(body: str, path: str = DOCS_PAGE) -> None:
    """Replace the text between the performance page's benchmark markers with ``body``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        a = text.index(DOCS_BEGIN) + len(DOCS_BEGIN)
        b = text.index(DOCS_END, a)
    except ValueError:
        raise ValueError(
            f"{path} has no benchmark markers ({DOCS_BEGIN!r} ... {DOCS_END!r})"
        ) from None
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:a] + "\n" + body.strip() + "\n" + text[b:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages/rounds (smoke run)")
    ap.add_argument("--only", nargs="+", metavar="LIB", help="only libraries matching these")
    ap.add_argument("--scenario", nargs="+", metavar="TEXT", help="only scenarios matching these")
    ap.add_argument(
        "--markdown",
        metavar="FILE",
        default=DEFAULT_MARKDOWN,
        help=f"write the tables to FILE (default {DEFAULT_MARKDOWN})",
    )
    ap.add_argument(
        "--plot",
        metavar="FILE",
        default=DEFAULT_PLOT,
        help=f"write the throughput/size plot to FILE (default {DEFAULT_PLOT})",
    )
    ap.add_argument(
        "--docs",
        "--readme",  # its first name, when the tables were in the README
        dest="docs",
        action="store_true",
        help="also put the tables into docs/performance.md (between its benchmark markers) "
        "and the plot at docs/throughput.png",
    )
    opts = ap.parse_args(argv)

    machine = (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    stamp = f"{datetime.datetime.now():%Y-%m-%d %H:%M}"
    args = argv if argv is not None else sys.argv[1:]
    header = (
        f"# yoton benchmarks\n\n{stamp}, {machine}{', quick run' if opts.quick else ''}.\n"
        f"Command: `{shlex.join(['python3', 'dev.py', 'bench', *args])}`"
        f"\nLoad average before the run: {load} (other work on the machine skews figures)."
        f"\n{accelerator_state().capitalize()}."
        "\n\nRatio us/peer > 1 means this project is better.\n"
    )
    print(header, flush=True)
    sections = [header]
    groups: dict[str, list[dict[str, Any]]] = {}
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
                groups[title] = group
                text = f"## {title}\n\n{table(group)}\n"
                print(text, flush=True)
                sections.append(text)
            print(f"({name}: {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    text = f"## Targets\n\n{target_summary(groups)}\n"
    print(text, flush=True)
    sections.append(text)
    print(f"total {time.monotonic() - t_start:.1f} s", file=sys.stderr)
    if opts.plot:
        try:
            if plot(groups, opts.plot, f"{stamp}, {machine}"):
                print(f"wrote {opts.plot}", file=sys.stderr)
        except Exception:  # the tables matter more than the picture
            print(f"plot failed:\n{traceback.format_exc()}", file=sys.stderr)
    if opts.docs:
        if plot(groups, DOCS_PLOT, f"{stamp}, {machine}"):
            print(f"wrote {DOCS_PLOT}", file=sys.stderr)
        body = "\n".join(sections).replace("# yoton benchmarks\n\n", "", 1)
        update_docs(body.replace("\n## ", "\n### "))  # below the page's "## Benchmarks"
        print(f"updated {DOCS_PAGE}", file=sys.stderr)
    if opts.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(opts.markdown)), exist_ok=True)
        with open(opts.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(sections))
        print(f"wrote {opts.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
