"""MM-Eureka's update granularity: a rollout batch in mini-batches, proximal log-probs from before the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("mini_batches.py")
REPO = Path(__file__).resolve().parents[2]


def test_eight_mini_batches_proximal_then_clip(tiny_model: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(HELPER), str(tiny_model)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["mini_batches"] == 8 and out["sizes"] == [2] * 8
    assert out["optimizer_steps"] == 8 and out["lr_steps"] == 8  # one optimizer (and schedule) step each
    assert out["proximal_diff"] <= 1e-6  # proximal = the first mini-batch's pre-step forward
    assert out["clip"][0] == 0.0  # ratio exactly 1 before the first step
    assert max(out["clip"][1:]) > 0  # then the clip acts
    assert out["moved"] > 0
