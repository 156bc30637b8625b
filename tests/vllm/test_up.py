"""`eureka up` with vLLM rollout workers on the small world: it trains, publishes, the workers switch versions,
the final checkpoint opens in plain transformers, and `eureka eval --backend vllm` evaluates it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_up import MARK, _marked_pids
from tests.waiting import wait_until

pytestmark = pytest.mark.vllm
STEPS = 3


def test_up_with_vllm_workers_trains_and_the_final_model_evaluates_through_vllm(tmp_path: Path, tiny_vllm_path):
    mark = uuid.uuid4().hex
    run_dir = tmp_path / "run"
    env = {**os.environ, MARK: mark}
    cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), "--steps", str(STEPS), "--world", "2",
           "--eval-limit", "4", "--learner-procs", "1", "--rollout-workers", "1", "--model-path", str(tiny_vllm_path),
           "--rollout-backend", "vllm", "--rollout-vllm.gpu-memory-utilization", "0.1",
           "--rollout-vllm.enforce-eager", "true"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == STEPS
    served = {int(v) for v in re.findall(r"'groups put'.*?policy_version=(\d+)", (run_dir / "logs/rollout0.log").read_text())}
    assert served >= {0, 1}, f"the vLLM worker put groups of versions {sorted(served)}"
    wait_until(lambda: not _marked_pids(mark), 10, "every process eureka up started to exit")

    from transformers import AutoModelForImageTextToText, AutoProcessor

    final = run_dir / "learner" / "final"
    processor = AutoProcessor.from_pretrained(str(final))
    assert (processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]) == (
        4 * 28 * 28, 640 * 28 * 28)
    assert processor.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")
    assert AutoModelForImageTextToText.from_pretrained(str(final)).dtype.is_floating_point

    from shared.model.cache import synthetic_dir

    data = synthetic_dir(0) / "heldout.jsonl"  # what eureka up made and evaluated on (seed 0)
    report_path = tmp_path / "eval.json"
    ev = subprocess.run([sys.executable, "-m", "eureka_cli", "eval", "--model", str(final), "--data", str(data),
                         "--limit", "4", "--samples", "2", "--max-new-tokens", "16", "--backend", "vllm",
                         "--vllm.gpu-memory-utilization", "0.1", "--vllm.enforce-eager", "true", "--out",
                         str(report_path)], env=env, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["settings"]["backend"] == "vllm"
    assert report["overall"]["prompts"] == 4 and report["overall"]["responses"] == 8
    assert 1 <= report["overall"]["mean_length"] <= 16
