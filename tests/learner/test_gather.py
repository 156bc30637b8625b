"""Under ZeRO-3 (two real processes, gloo on CPU) a version is gathered a bucket at a time into its file: the bytes
and the digest of DeepSpeed's consolidated state dict, the vision tower kept out of DeepSpeed included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.redis_proc import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two DeepSpeed processes
def test_zero3_version_written_bucket_by_bucket_is_the_consolidated_one(tiny_model: Path, tmp_path: Path) -> None:
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "learner" / "gather_worker.py"), str(tiny_model),
             str(tmp_path / "v5.safetensors"), str(64 << 10)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    got = json.loads(outs[0][0].strip().splitlines()[-1])
    assert got["same_bytes"] and got["digest"] == got["consolidated_digest"]
    assert got["vision_tensors"] > 0 and got["buckets"] > 10 and got["bytes"] > 10 * (64 << 10)
