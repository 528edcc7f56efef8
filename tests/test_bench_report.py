"""The benchmark runner's report: ratios, targets, the size table, the performance page's block.

Pure functions of ``benchmarks/run.py`` on hand-made rows: no processes, no
timing. A wrong ratio direction or a target reported met when it was missed
would make the published benchmark tables lie.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def run_mod():
    """benchmarks/run.py under a name of its own (``run`` alone is too common)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("yoton_bench_run", BENCH / "run.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _rows(us: float, peer: float, higher: bool, target: float) -> list[dict]:
    from _util import US

    return [
        {"scenario": "s", "library": US, "metric": "m", "value": us, "higher_is_better": higher},
        {
            "scenario": "s",
            "library": "peer",
            "metric": "m",
            "value": peer,
            "higher_is_better": higher,
            "target_ratio": target,
        },
    ]


def test_throughput_ratio_and_target(run_mod):
    met = run_mod.table(_rows(100.0, 200.0, True, 0.3))
    assert "| 0.50 | ≥ 0.30: met |" in met
    missed = run_mod.table(_rows(100.0, 500.0, True, 0.3))
    assert "| 0.20 | ≥ 0.30: **MISSED** |" in missed


def test_latency_ratio_is_peer_over_us(run_mod):
    # our median 300 µs, the peer's 100 µs: ratio 0.33 < 0.5 (i.e. more than 2x slower)
    text = run_mod.table(_rows(300.0, 100.0, False, 0.5))
    assert "| 0.33 | ≥ 0.50: **MISSED** |" in text
    summary = run_mod.target_summary({"lat": _rows(150.0, 100.0, False, 0.5)})
    assert "| lat | us/peer ≥ 0.50 | 0.67 | met |" in summary


def test_missing_figure_is_missed_not_met(run_mod):
    rows = _rows(100.0, 200.0, True, 0.3)
    rows[0]["value"] = None
    assert "**MISSED**" in run_mod.target_summary({"s": rows})


def test_absolute_target(run_mod):
    from _util import US

    rows = [
        {
            "scenario": "t",
            "library": US,
            "metric": "threads",
            "value": 3.0,
            "higher_is_better": False,
            "target_max": 8,
            "target_met": False,
        }
    ]
    assert "≤ 8: **MISSED**" in run_mod.table(rows)
    rows[0]["target_met"] = True
    assert "| t | ≤ 8 threads | 3 | met |" in run_mod.target_summary({"t": rows})


def test_series_table_shows_every_size_and_losses(run_mod):
    rows = [
        {
            "scenario": "sweep",
            "library": "lib",
            "metric": "MB/s",
            "series": {2: 0.5, 1 << 20: 1500.0, 16 << 20: None},
            "series_detail": {2: "9/10 (1 lost or late)"},
        }
    ]
    text = run_mod.series_table(rows)
    assert "| library (MB/s) | 2 B | 1 MiB | 16 MiB |" in text
    assert "| lib | 0.5 | 1,500 | n/a |" in text
    assert "lib, 2 B: 9/10 (1 lost or late)" in text


def test_update_docs_replaces_only_the_marked_block(run_mod, tmp_path):
    page = tmp_path / "performance.md"
    page.write_text(
        f"top\n{run_mod.DOCS_BEGIN}\nold table\n{run_mod.DOCS_END}\nbottom\n",
        encoding="utf-8",
    )
    run_mod.update_docs("new table", str(page))
    text = page.read_text(encoding="utf-8")
    assert "old table" not in text
    assert text.startswith("top\n") and text.endswith("bottom\n")
    assert f"{run_mod.DOCS_BEGIN}\nnew table\n{run_mod.DOCS_END}" in text
    page.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no benchmark markers"):
        run_mod.update_docs("x", str(page))


def test_the_performance_page_has_the_markers_once_and_the_readme_none(run_mod):
    """``--docs`` writes into docs/performance.md; the README keeps no copy to go stale."""
    page = Path(run_mod.DOCS_PAGE).read_text(encoding="utf-8")
    assert page.count(run_mod.DOCS_BEGIN) == 1 and page.count(run_mod.DOCS_END) == 1
    assert page.index(run_mod.DOCS_BEGIN) > page.index("## Benchmarks")
    readme = (Path(run_mod.ROOT) / "README.md").read_text(encoding="utf-8")
    assert "benchmark results: begin" not in readme


def _transport_result(
    n: int,
    size: int,
    msg_per_s: float,
    same: bool | None = None,
    cpu: tuple[float, ...] = (1.0,),
) -> dict:
    """``cpu``: (both ends) for inproc, (publisher, subscriber) for tcp/unix, µs/message."""
    r = {
        "messages": n,
        "size": size,
        "received": n,
        "dropped": 0,
        "msg_per_s": msg_per_s,
        "mib_per_s": msg_per_s * size / (1 << 20),
        "cpu_us": sum(cpu),
    }
    if len(cpu) == 2:
        r["cpu_pub_us"], r["cpu_sub_us"] = cpu
    if same is not None:
        r["same_object"] = same
    return r


def test_transport_tables_compare_like_with_like(run_mod):
    """inproc hands objects over by reference: its MiB/s is compared with inproc at
    another size, never with tcp or unix, which copy every byte."""
    import bench_transports as bt

    mib = 1 << 20
    results = {
        "pubsub_100B_tcp": _transport_result(10, 100, 100.0),
        "pubsub_100B_unix": _transport_result(10, 100, 120.0),
        "pubsub_100B_inproc": _transport_result(10, 100, 250.0),
        "pubsub_100B_tcp_cpu": _transport_result(10, 100, 100.0, cpu=(1.1, 1.2)),
        "pubsub_100B_unix_cpu": _transport_result(10, 100, 120.0, cpu=(1.0, 1.0)),
        "pubsub_100B_inproc_cpu": _transport_result(10, 100, 250.0, cpu=(1.5,)),
        "bandwidth_1MiB_inproc": _transport_result(10, mib, 1000.0, True),
        "bandwidth_16MiB_inproc": _transport_result(10, 16 * mib, 900.0, True),
        "bandwidth_16MiB_tcp": _transport_result(4, 16 * mib, 50.0),
        "bandwidth_16MiB_unix": _transport_result(4, 16 * mib, 60.0),
    }
    groups: dict[str, list[dict]] = {}
    for row in bt.rows_for_runner(results):
        groups.setdefault(row["scenario"], []).append(row)
    by_reference = [g for g in groups.values() if any("over inproc" in r["library"] for r in g)]
    assert len(by_reference) == 1 and len(by_reference[0]) == 2
    text = run_mod.table(by_reference[0])
    assert "| 14,400 | 10/10, dropped 0; yes | 1.00 |" in text  # 900 msg/s x 16 MiB
    assert "| 1,000 | 10/10, dropped 0; yes | 14.40 | ≥ 1.00: met |" in text
    copied = next(g for title, g in groups.items() if "bandwidth 16 MiB" in title)
    assert "| 1.20 |" in run_mod.table(copied)  # unix over tcp, both copied
    cpu = next(g for title, g in groups.items() if "CPU µs per message" in title)
    # Lower is better: the ratio is tcp's two ends over inproc's, 2.3 / 1.5.
    text = run_mod.table(cpu)
    assert (
        "| 2.3 | 10/10, dropped 0; publisher 1.10 + subscriber 1.20 | 1.53 | ≥ 2.00: **MISSED** |"
        in (text)
    )
    summary = run_mod.target_summary(groups)
    assert "us/yoton 3 over tcp ≥ 2.00 | 1.53 | **MISSED** |" in summary
    assert "us/yoton 3 over tcp ≥ 1.00 | 1.20 | met |" in summary


def test_transport_figures_are_medians_of_interleaved_runs(run_mod, monkeypatch):
    """run_all takes every measurement once per round and reports the median run."""
    import bench_transports as bt

    calls: list[str] = []
    rates = iter([300.0, 100.0, 200.0] * 7)

    def fake_run(transport: str, n: int, size: int, binary: bool) -> dict:
        calls.append(f"{transport}/{size}")
        return _transport_result(n, size, next(rates))

    monkeypatch.setattr(bt, "_run", fake_run)
    results = bt.run_all()
    # Rounds: each of the seven measurements once, three times over.
    assert calls[:7] == calls[7:14] == calls[14:]
    tcp = results["pubsub_100B_tcp"]
    assert len(tcp["runs"]) == 3 and tcp["msg_per_s"] == sorted(tcp["runs"])[1]
    rows = bt.rows_for_runner(results)
    detail = next(r["detail"] for r in rows if r["library"].endswith("over tcp"))
    assert "median of 3 runs" in detail
