"""bench/peer_trl.py end to end with 2 steps, in the bench venv (`.venv-bench`, what `make bench-peer_trl` runs it
in): both systems train, both are evaluated, the JSON is complete."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH_PY = REPO / ".venv-bench" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two trainings and three evaluations: past the suite's 600 s per test on a loaded machine
def test_peer_trl_two_steps(tmp_path: Path) -> None:
    if not BENCH_PY.exists():
        pytest.skip("the bench venv is not set up: `make .venv-bench/.installed` (or `make bench-peer_trl`)")
    out = tmp_path / "peer_trl.json"
    proc = subprocess.run(
        [str(BENCH_PY), str(REPO / "bench" / "peer_trl.py"), "--steps", "2", "--eval-limit", "8",
         "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    samples_per_step = result["recipe"]["n_samples"] * result["recipe"]["rollout_batch_prompts"]
    for name in ("eureka", "trl"):
        assert result[name]["steps"] == 2
        assert result[name]["samples"] == 2 * samples_per_step
        assert result[name]["train_wall_s"] > 0
        assert 0.0 <= result[name]["accuracy"] <= 1.0
    assert (Path(result["trl"]["model_dir"]) / "config.json").is_file()
    assert result["prompts"].startswith("image")
    assert "trl step 2/2" in proc.stdout


def test_make_bench_peer_trl_installs_into_the_bench_venv_only() -> None:
    plan = subprocess.run(["make", "-n", "--no-print-directory", "-W", "requirements-bench.lock", "bench-peer_trl"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line and "requirements-bench.lock" in line]
    assert installs and all(line.startswith(".venv-bench/bin/python ") for line in installs), plan
    assert ".venv-bench/bin/python bench/peer_trl.py" in plan
