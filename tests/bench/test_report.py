"""docs/BENCHMARKS.md and the README's demo table are what `bench/report.py` makes of the committed
bench/results/*.json, and the README quotes no measured figure outside its generated table."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
report = sys.modules["bench_report"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)  # type: ignore[union-attr]

# A measured figure: a rate, a percentage, a ratio or a speedup (configuration defaults such as "30 s" are not).
_MEASURED = re.compile(r"\d\s*(?:%|[A-Za-z]+/s\b|x faster)|\bratio(?:s)? (?:of )?\d|\bspeedup \d|\d+(?:\.\d+)? -> \d")


def test_benchmarks_md_is_generated_from_the_committed_results() -> None:
    assert report.RESULTS_DIR.is_dir()
    tracked = subprocess.run(["git", "ls-files", "bench/results"], cwd=REPO, capture_output=True, text=True).stdout
    assert ".json" in tracked, "bench/results/*.json are committed: they are the record the docs quote"
    want = report.benchmarks_md(report.results())
    assert (REPO / "docs" / "BENCHMARKS.md").read_text() == want, "stale: run `make bench-report`"


def test_the_readme_demo_table_is_generated_and_the_only_figures() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme) < 9000, f"README.md has {len(readme)} characters; keep it under 9,000 (details in docs/)"
    first_block = readme.split("```")[1].splitlines()[1:]
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    assert report.readme_with_demo_table(readme, report.results()) == readme, "stale: run `make bench-report`"
    for begin, end in ((report.DEMO_BEGIN, report.DEMO_END), (report.SIGNATURES_BEGIN, report.SIGNATURES_END)):
        head, _, rest = readme.partition(begin)
        _, _, tail = rest.partition(end)
        readme = head + tail
    outside = [m.group(0) for m in _MEASURED.finditer(readme)]
    assert outside == [], f"README.md quotes figures outside its generated tables: {outside}"


def test_a_row_shows_figure_baseline_and_ratio(tmp_path: Path) -> None:
    found = {"reward": {"service_items_per_s": 300.0, "baseline_items_per_s": 150.0, "machine": "m",
                        "load_average_1m": {"start": 1.0, "end": 1.5}, "recorded_utc": "2026-01-01 00:00 UTC"},
             "async_vs_sync": {"async": {"train_time_s": 50.0}, "sync": {"train_time_s": 150.0}, "machine": "m",
                               "load_average_1m": 1.0, "recorded_utc": "t"}}
    md = report.benchmarks_md(found)
    assert "| 300 items/s | single-process math-verify loop: 150 items/s | 2.00 | 1.5 | m, load 1.0-1.5," in md
    assert "| 50.0 s | `--mode sync`, same seed, base and steps: 150 s | 3.00 |" in md  # times: baseline / figure
    assert "not recorded: run `make bench-buffer`" in md


def test_memory_rows_read_bytes_as_gb_and_lower_is_better() -> None:
    steps = [{"step_peak_bytes": 0}] * 9
    steps[6], steps[8] = {"step_peak_bytes": 1_000_000_000}, {"step_peak_bytes": 3_000_000_000}
    found = {"memory": {"steps": steps, "projection_qwen2_5_vl_7b": {"per_gpu_bytes": 100e9,
                                                                   "profile": {"gpu_bytes": 80e9}},
                        "machine": "m", "load_1m": 1.5, "recorded_utc": "t"}}
    md = report.benchmarks_md(found)
    assert "| 1.0 GB | the full-logits step, same model and batch: 3.0 GB | 3.00 |  | m, load 1.5, t |" in md
    assert "| 100 GB | one GPU's memory: 80.0 GB | 0.80 | 1.0 |" in md  # over one GPU: below its target


def test_make_bench_report_runs_it() -> None:
    out = subprocess.run(["make", "-n", "bench-report"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "bench/report.py" in out and "pip install" not in out  # stdlib only: no setup needed
