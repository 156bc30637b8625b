"""Run folders of `eureka up` / `eureka chaos` through the real CLI: a second invocation without --run-dir
gets a new folder; a named folder that holds a run is refused with a sentence before anything starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen"), os.environ.get("PYTHONPATH", "")])}


def _started_folder(cwd: Path, *args: str) -> Path:
    """Start `eureka <args>` in `cwd`, read the run folder it prints, then stop it with Ctrl-C (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-m", "eureka_cli", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "run folder " in line:
                return Path(line.split("run folder ", 1)[1].strip())
        raise AssertionError(f"eureka {' '.join(args)} exited with {proc.wait()} without printing its run folder")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _refused(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "eureka_cli", *args], cwd=cwd, env=_env(), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_second_up_and_chaos_get_their_own_run_folder(tmp_path: Path) -> None:
    for command, prefix in (("up", "demo"), ("chaos", "chaos")):
        first = _started_folder(tmp_path, command)
        (first / "learner").mkdir(parents=True, exist_ok=True)
        (first / "learner" / "checkpoint.json").write_text("{}")  # the first run holds a checkpoint
        while first.name == time.strftime(f"{prefix}-%Y%m%d-%H%M%S", time.gmtime()):
            time.sleep(0.05)  # a new second, so the stamp itself differs (a same-second start gets a suffix)
        second = _started_folder(tmp_path, command)
        assert first != second
        for folder in (first, second):
            assert folder.parent == (tmp_path / "runs").resolve() and folder.name.startswith(f"{prefix}-")


def test_named_folder_holding_a_run_is_refused(tmp_path: Path) -> None:
    held = tmp_path / "held"
    (held / "learner").mkdir(parents=True)
    (held / "learner" / "checkpoint.json").write_text("{}")
    out = _refused(tmp_path, "up", "--run-dir", str(held))
    assert "already holds a run; pass --resume to continue it" in out
    out = _refused(tmp_path, "chaos", "--run-dir", str(held))
    assert "already holds a run; choose another --run-dir" in out
    assert "--resume continues a named run" in _refused(tmp_path, "up", "--resume")
    assert "holds no run to resume" in _refused(tmp_path, "up", "--run-dir", str(tmp_path / "new"), "--resume")
    assert not (tmp_path / "runs").exists()
