"""`eureka up --broadcast true`, a short run: the rollout workers get their versions by broadcast (their
`eureka_rollout_weight_updates_total{path="broadcast"}`, scraped while the run goes), and the run ends cleanly.

Slow (a whole local pipeline on a random tiny model): `make test-slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


def _updates(url: str) -> dict[str, float]:
    """A worker's weight updates by path (empty while it does not answer)."""
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()  # noqa: S310 - loopback only
    except OSError:
        return {}
    return {s.labels["path"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "eureka_rollout_weight_updates_total"}


@pytest.mark.slow
@pytest.mark.parametrize(("procs", "zero_stage"), [("1", "2"), ("2", "3")])  # ZeRO-3: sent from the version file
def test_up_with_broadcast_delivers_versions_by_broadcast(tmp_path: Path, procs: str, zero_stage: str) -> None:
    from shared.model.io import make_random_tiny

    model = make_random_tiny(tmp_path / "tiny", seed=0)
    run_dir = tmp_path / "run"
    # Every group kept (the random model scores 0): the learner steps whatever the rewards.
    recipe = ["--recipe.filter-low", "0", "--recipe.filter-high", "1", "--recipe.rollout-batch-prompts", "2",
              "--recipe.n-samples", "2", "--recipe.mini-batches", "1", "--recipe.max-response-tokens", "8"]
    cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), "--model-path", str(model),
           "--steps", "4", "--eval-limit", "2", "--learner-procs", procs, "--zero-stage", zero_stage,
           "--rollout-workers", "2", "--broadcast", "true", *recipe]
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen: dict[str, dict[str, float]] = {}
    try:
        end = time.monotonic() + 1200
        while proc.poll() is None and time.monotonic() < end:
            targets = run_dir / "prometheus_targets.json"
            if targets.exists():
                for t in json.loads(targets.read_text()):
                    if t["labels"]["job"] == "eureka-rollout":
                        url = f"http://{t['targets'][0]}/metrics"
                        seen[url] = _updates(url) or seen.get(url, {})
            time.sleep(1.0)
        assert proc.wait(timeout=max(end - time.monotonic(), 1)) == 0, (tmp_path / "up.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert len(seen) == 2, seen
    for url, updates in seen.items():
        # The first version comes over gRPC (the frozen tower with it); later ones by broadcast.
        assert updates.get("grpc", 0) >= 1 and updates.get("broadcast", 0) >= 1, (url, updates)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
