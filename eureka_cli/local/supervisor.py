"""Starts, watches and stops the local processes of `eureka up` (each in its own process group).

Children get their own session so a terminal Ctrl-C reaches only the supervisor, which then stops
them in reverse start order: SIGTERM (graceful drain), then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.logs import get_logger

log = get_logger("up")


class ProcessDied(RuntimeError):
    """A managed process exited while it should be running."""


@dataclass
class Managed:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    expected_exit: bool = False
    finishes: bool = False  # ends on its own when its work is done: exit 0 is not a death
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Supervisor:
    """A set of named child processes with logs under `<run_dir>/logs/`."""

    def __init__(self, run_dir: Path, base_env: dict[str, str] | None = None) -> None:
        self.log_dir = run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = {**os.environ, **(base_env or {})}
        self.procs: dict[str, Managed] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, *, exits: bool = False,
              finishes: bool | None = None) -> Managed:
        """Start `argv` as `name` (a re-start reuses the name's argv, env and `finishes` when not given)."""
        old = self.procs.get(name)
        m = Managed(name, argv or (old.argv if old else []), {**self.base_env, **(env or (old.env if old else {}))},
                    self.log_dir / f"{name}.log", expected_exit=exits,
                    finishes=(old.finishes if old else False) if finishes is None else finishes)
        if old is not None:
            m.restarts = old.restarts + 1
        logf = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        m.proc = subprocess.Popen(m.argv, env=m.env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.procs[name] = m
        log.info("started", process=name, pid=m.proc.pid)
        return m

    def signal(self, name: str, sig: signal.Signals) -> None:
        m = self.procs[name]
        if m.alive:
            os.killpg(m.proc.pid, sig)  # type: ignore[union-attr]

    def check(self) -> None:
        """Raise ProcessDied naming the log when a long-running process has exited (one that `finishes`: with
        a code other than 0)."""
        for m in self.procs.values():
            if m.proc is None or m.expected_exit or m.proc.poll() is None:
                continue
            if not (m.finishes and m.proc.returncode == 0):
                raise ProcessDied(
                    f"{m.name} exited with code {m.proc.returncode}; its log {m.log_path} ends with:\n{m.tail()}"
                )

    def wait(self, name: str, timeout_s: float | None = None) -> int:
        m = self.procs[name]
        assert m.proc is not None
        return m.proc.wait(timeout_s)

    def stop(self, name: str, grace_s: float = 20.0) -> None:
        m = self.procs[name]
        m.expected_exit = True
        if not m.alive:
            return
        self.signal(name, signal.SIGTERM)
        try:
            m.proc.wait(grace_s)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time, killing", process=name, grace_s=grace_s)
            self.signal(name, signal.SIGKILL)
            m.proc.wait()  # type: ignore[union-attr]

    def stop_all(self, grace_s: float = 20.0) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, grace_s)


def eureka_argv(*words: str) -> list[str]:
    """argv that runs an `eureka` subcommand with this interpreter."""
    return [sys.executable, "-m", "eureka_cli", *words]
