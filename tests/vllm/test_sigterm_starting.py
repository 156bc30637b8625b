"""A vLLM rollout worker SIGTERMed while its engine starts exits 0 at once (nothing claimed yet), instead of
loading the engine first and outliving a pod's grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.redis_proc import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[2]
ENGINE_STARTING = "Initializing a V1 LLM engine"  # vLLM's line when it begins building the engine


def test_sigterm_while_the_engine_starts_exits_zero_before_serving(tmp_path: Path, tiny_vllm_path: Path) -> None:
    log_path = tmp_path / "rollout.log"
    nowhere = f"127.0.0.1:{free_port()}"  # no buffer, reward or learner: the worker must not get past starting
    argv = [sys.executable, "-m", "eureka_cli", "rollout", "serve", "--port", "0", "--metrics-port", "0",
            "--backend", "vllm", "--model-path", str(tiny_vllm_path), "--worker-id", "starting",
            "--buffer-address", nowhere, "--reward-address", nowhere, "--learner-address", nowhere,
            "--vllm.gpu-memory-utilization", "0.1", "--vllm.enforce-eager", "true", "--recipe.max-prompt-tokens", "1024",
            "--recipe.max-response-tokens", "12"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    try:
        wait_until(lambda: ENGINE_STARTING in log_path.read_text(errors="replace") or proc.poll() is not None, 300,
                   "the vLLM engine starting")
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)  # the chart's grace period
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "signal received while starting: nothing claimed, exiting" in text, text[-3000:]
    assert "rollout status server listening" not in text, text[-3000:]
