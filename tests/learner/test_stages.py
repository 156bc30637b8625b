"""ZeRO stages 0, 2 and 3 train the same: two steps with gradient accumulation give the same grad norms and weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HELPER = Path(__file__).with_name("two_steps.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_zero_stages_agree(tiny_model: Path, tmp_path: Path) -> None:
    results = {}
    for stage in (0, 2, 3):
        out = tmp_path / f"stage{stage}.pt"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, str(HELPER), str(stage), str(tiny_model), str(out)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[stage] = torch.load(out)
    base = results[0]
    assert all(n > 0 for n in base["norms"])
    for stage in (2, 3):
        assert results[stage]["norms"] == pytest.approx(base["norms"], rel=1e-4)
        for name, tensor in base["state_dict"].items():
            assert torch.allclose(results[stage]["state_dict"][name].float(), tensor.float(), atol=1e-4), (stage, name)
