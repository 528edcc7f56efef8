"""The benchmark runner's report: ratios, targets, the size table, the README block.

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
        {"scenario": "s", "library": US, "metric": "m", "value": us,
         "higher_is_better": higher},
        {"scenario": "s", "library": "peer", "metric": "m", "value": peer,
         "higher_is_better": higher, "target_ratio": target},
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

    rows = [{"scenario": "t", "library": US, "metric": "threads", "value": 3.0,
             "higher_is_better": False, "target_max": 8, "target_met": False}]
    assert "≤ 8: **MISSED**" in run_mod.table(rows)
    rows[0]["target_met"] = True
    assert "| t | ≤ 8 threads | 3 | met |" in run_mod.target_summary({"t": rows})


def test_series_table_shows_every_size_and_losses(run_mod):
    rows = [{"scenario": "sweep", "library": "lib", "metric": "MB/s",
             "series": {2: 0.5, 1 << 20: 1500.0, 16 << 20: None},
             "series_detail": {2: "9/10 (1 lost or late)"}}]
    text = run_mod.series_table(rows)
    assert "| library (MB/s) | 2 B | 1 MiB | 16 MiB |" in text
    assert "| lib | 0.5 | 1,500 | n/a |" in text
    assert "lib, 2 B: 9/10 (1 lost or late)" in text


def test_update_readme_replaces_only_the_marked_block(run_mod, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"top\n{run_mod.README_BEGIN}\nold table\n{run_mod.README_END}\nbottom\n",
        encoding="utf-8",
    )
    run_mod.update_readme("new table", str(readme))
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text
    assert text.startswith("top\n") and text.endswith("bottom\n")
    assert f"{run_mod.README_BEGIN}\nnew table\n{run_mod.README_END}" in text
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no benchmark markers"):
        run_mod.update_readme("x", str(readme))
