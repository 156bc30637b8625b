"""A learner of several nodes on loopback for `eureka chaos --learner-nodes 2`: one launcher per node, as in a cluster.

Node 0 is the process named `learner` (its torchrun hosts the c10d rendezvous store, as at MASTER_ADDR; its rank 0
serves weights and talks to the buffer); node k is `learner<k>`. The job starts and restarts whole: starting
`learner` first stops any node left, starts node 0, waits for its store, then starts the other nodes with the same
command (the same `--resume`), so a restart after any lost node resumes every node from the last checkpoint.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from eureka_cli.local.supervisor import Managed, ProcessDied, Supervisor
from shared.redis_proc import free_port

LEAD = "learner"


class LearnerNodes(Supervisor):
    """A Supervisor whose `learner` is a job of `nodes` launchers with `procs // nodes` processes each."""

    def __init__(self, run_dir: Path, nodes: int, procs: int, store_timeout_s: float = 180.0) -> None:
        super().__init__(run_dir)
        self.nodes, self.nproc, self.store_timeout_s = nodes, procs // nodes, store_timeout_s

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

    def kill(self, name: str) -> None:
        """kill -9 of every process of a node (what a lost machine does), waited for."""
        m = self.procs[name]
        m.expected_exit = True
        self.signal(name, signal.SIGKILL)
        if m.proc is not None:
            m.proc.wait()

    def _node_env(self, rank: int, port: int) -> dict[str, str]:
        return {"NNODES": str(self.nodes), "NODE_RANK": str(rank), "NPROC_PER_NODE": str(self.nproc),
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
