"""Stopping a child process: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess


def terminate(proc: subprocess.Popen, grace_s: float) -> int:
    """Ask `proc` to stop (SIGTERM), kill it when it outlives `grace_s`; returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
