"""A learner of several nodes on loopback for `eureka chaos --learner-nodes 2`: one launcher per node, as in a cluster.

Node 0 is the process named `learner` (its torchrun hosts the c10d rendezvous store, as at MASTER_ADDR; its rank 0
serves weights and talks to the buffer); node k is `learner<k>`. The job starts and restarts whole: starting
`learner` first stops any node left, starts node 0, waits for its store, then starts the other nodes with the same
command (the same `--resume`), so a restart after any lost node resumes every node from the last checkpoint.
torchrun starts its workers in sessions of their own, so a kill -9 of a node kills its process tree, and a
restart first kills what a failed job left (every process carrying this job's marker variable).
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import time
from pathlib import Path

import psutil

from eureka_cli.local.supervisor import Managed, ProcessDied, Supervisor
from shared.redis_proc import free_port

LEAD = "learner"
MARK = "EUREKA_CHAOS_LEARNER_JOB"  # set on every learner process of this run; its workers inherit it


class LearnerNodes(Supervisor):
    """A Supervisor whose `learner` is a job of `nodes` launchers with `procs // nodes` processes each."""

    def __init__(self, run_dir: Path, nodes: int, procs: int, store_timeout_s: float = 180.0,
                 base_env: dict[str, str] | None = None) -> None:
        super().__init__(run_dir, base_env)
        self.nodes, self.nproc, self.store_timeout_s = nodes, procs // nodes, store_timeout_s
        self.mark = secrets.token_hex(8)

    @property
    def others(self) -> list[str]:
        """The names of the nodes after node 0."""
        return [f"{LEAD}{k}" for k in range(1, self.nodes)]

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, *, exits: bool = False) -> Managed:
        if name != LEAD or self.nodes == 1:
            return super().start(name, argv, env, exits=exits)
        for other in self.others:  # a job restarts whole
            if other in self.procs:
                self.kill(other)
        if LEAD in self.procs:
            self.kill(LEAD)
        self._kill_leftovers()
        base = env if env is not None else (self.procs[LEAD].env if LEAD in self.procs else {})
        port = free_port()  # a new store per start: the old one's port may linger after a kill
        lead = super().start(LEAD, argv, {**base, **self._node_env(0, port)}, exits=exits)
        self._wait_store(lead, port)
        for k, other in enumerate(self.others, start=1):
            super().start(other, lead.argv, {**base, **self._node_env(k, port)}, exits=exits)
        return lead

    def stop(self, name: str, grace_s: float = 20.0) -> None:
        """Stopping any node stops the job: node 0 first (rank 0 decides when every rank stops), then the others."""
        if name != LEAD and name not in self.others:
            return super().stop(name, grace_s)
        for other in self.others:  # the job ends: no node's exit is a crash
            if other in self.procs:
                self.procs[other].expected_exit = True
        super().stop(LEAD, grace_s)
        for other in self.others:
            if other in self.procs:
                super().stop(other, grace_s)
        self._kill_leftovers()

    def signal(self, name: str, sig: signal.Signals) -> None:
        if sig == signal.SIGKILL and self.nodes > 1 and (name == LEAD or name in self.others):
            self.kill(name)
        else:
            super().signal(name, sig)

    def kill(self, name: str) -> None:
        """kill -9 of every process of a node (what a lost machine does: the launcher and its tree), waited for."""
        m = self.procs[name]
        m.expected_exit = True
        if m.proc is None or m.proc.poll() is not None:
            return
        try:
            tree = [psutil.Process(m.proc.pid), *psutil.Process(m.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with _gone():
                p.kill()
        psutil.wait_procs(tree, timeout=30)
        m.proc.wait()

    def _kill_leftovers(self) -> None:
        """kill -9 of every process of this job's learner still running once its nodes are down (a worker of a
        failed node outlives its launcher)."""
        left = []
        for p in psutil.process_iter():
            with _gone():
                if p.environ().get(MARK) == self.mark:
                    p.kill()
                    left.append(p)
        psutil.wait_procs(left, timeout=30)

    def _node_env(self, rank: int, port: int) -> dict[str, str]:
        return {MARK: self.mark, "NNODES": str(self.nodes), "NODE_RANK": str(rank), "NPROC_PER_NODE": str(self.nproc),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}

    def _wait_store(self, lead: Managed, port: int) -> None:
        """Until node 0's torchrun accepts connections on the rendezvous port."""
        end = time.monotonic() + self.store_timeout_s
        while time.monotonic() < end:
            if lead.proc is None or lead.proc.poll() is not None:
                code = lead.proc.returncode if lead.proc else None
                raise ProcessDied(f"learner node 0 exited with code {code} before hosting its rendezvous; its log "
                                  f"{lead.log_path} ends with:\n{lead.tail()}")
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise ProcessDied(f"learner node 0 did not host its rendezvous on port {port} within {self.store_timeout_s} s")


def _gone() -> contextlib.AbstractContextManager:
    """Ignore a process that ended meanwhile or is not ours to read."""
    return contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
