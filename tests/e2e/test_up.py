"""End to end: `eureka up` on the small world raises the held-out reward and leaves nothing running.

Slow (several CPU minutes): `make test-slow` or `pytest -m slow tests/e2e`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

MARK = "EUREKA_E2E_RUN_MARK"  # inherited by every process `eureka up` starts, directly or not


def _reward(report: dict) -> float:
    overall = report["overall"]
    return overall["accuracy"] + 0.5 * overall["format"]


def _marked_pids(mark: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_up_raises_heldout_reward_and_cleans_up(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    run_dir = tmp_path / "run"
    env = {**os.environ, MARK: mark}
    cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), "--steps", "16", "--eval-limit", "60"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    base = json.loads((run_dir / "eval_base.json").read_text())
    final = json.loads((run_dir / "eval_final.json").read_text())
    print(json.dumps(summary, indent=2))
    assert _reward(final) > _reward(base), (base["overall"], final["overall"])
    assert summary["steps"] == 16
    assert (run_dir / "curves.png").stat().st_size > 10_000
    deadline = time.monotonic() + 10
    while _marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _marked_pids(mark) == [], "processes started by eureka up are still running"
