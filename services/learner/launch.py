"""Start the learner's processes: on this node alone, or as one node of a multi-node job (torchrun, c10d).

    python -m services.learner.launch [--config FILE.yaml]    (settings from EUREKA_* and the YAML's `learner`)
    eureka learner run --world-size N ...                     (the same, settings from flags)

The topology comes from the standard variables: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT,
NPROC_PER_NODE (default: the GPUs visible, else `world_size`), each falling back to LeaderWorkerSet's
LWS_GROUP_SIZE, LWS_WORKER_INDEX and LWS_LEADER_ADDRESS. Several nodes run torchrun's c10d rendezvous
on MASTER_ADDR:MASTER_PORT (ranks in the order of the nodes' host names, so an LWS leader is global
rank 0); one node with none of them set starts `world_size` local processes itself, so SIGTERM reaches
every rank, rank 0 checkpoints and they exit 0 together.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.learner.config import LearnerConfig
from shared.logs import get_logger

log = get_logger("learner")

SETTINGS_ENV = "LEARNER_CHILD_SETTINGS"  # no EUREKA_ prefix: not a settings variable itself
DEFAULT_MASTER_PORT = 29500  # torchrun's
LOST = "a learner node or process failed"


@dataclass(frozen=True)
class Topology:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def topology(env: Mapping[str, str], world_size: int, gpus: int) -> Topology:
    """The job's shape from the environment (see the module docstring); ValueError with a sentence if inconsistent."""

    def read(name: str, lws: str, default: str) -> str:
        return env.get(name) or env.get(lws) or default

    try:
        nnodes = int(read("NNODES", "LWS_GROUP_SIZE", "1"))
        node_rank = int(read("NODE_RANK", "LWS_WORKER_INDEX", "0"))
        nproc = int(env.get("NPROC_PER_NODE") or (gpus or (world_size if nnodes == 1 else 0)))
        port = int(env.get("MASTER_PORT") or DEFAULT_MASTER_PORT)
    except ValueError as e:
        raise ValueError(f"NNODES, NODE_RANK, NPROC_PER_NODE and MASTER_PORT must be integers ({e})") from e
    addr = read("MASTER_ADDR", "LWS_LEADER_ADDRESS", "127.0.0.1")
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"NODE_RANK {node_rank} is outside 0..NNODES-1 with NNODES={nnodes}; fix the variables")
    if nproc < 1:
        raise ValueError(f"NPROC_PER_NODE is not set and this node sees no GPU; set NPROC_PER_NODE (NNODES={nnodes})")
    if nnodes > 1 and addr == "127.0.0.1" and "MASTER_ADDR" not in env:
        raise ValueError("NNODES > 1 needs MASTER_ADDR (or LWS_LEADER_ADDRESS): the host every node can reach")
    return Topology(nnodes, node_rank, nproc, addr, port)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def child_env(cfg: LearnerConfig) -> dict[str, str]:
    """The environment of a learner process: settings as JSON, secrets as their usual variables."""
    env = os.environ.copy()
    env[SETTINGS_ENV] = cfg.model_dump_json(exclude={"security"})
    sec = cfg.security  # secrets are not in the JSON dump
    if sec.service_token is not None:
        env["EUREKA_SECURITY__SERVICE_TOKEN"] = sec.service_token.get_secret_value()
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(sec, name) is not None:
            env[f"EUREKA_SECURITY__{name.upper()}"] = str(getattr(sec, name))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch(cfg: LearnerConfig) -> int:
    """Run this node's part of the job; the exit code of its processes."""
    topo = topology(os.environ, cfg.world_size, _gpus())
    if topo.world_size != cfg.world_size:
        cfg = cfg.model_copy(update={"world_size": topo.world_size})
        LearnerConfig.model_validate(cfg.model_dump())  # the batch must still split over the new world
    if topo.nnodes == 1 and "MASTER_ADDR" not in os.environ:
        return _spawn_local(cfg)
    return _torchrun(cfg, topo)


def torchrun_command(cfg: LearnerConfig, topo: Topology) -> list[str]:
    """This node's torchrun: every node names the same rendezvous (endpoint and id), a lost node fails the job."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={topo.nnodes}", f"--node-rank={topo.node_rank}",
            f"--nproc-per-node={topo.nproc_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={topo.master_addr}:{topo.master_port}", f"--rdzv-id=eureka-{cfg.consumer}",
            "--max-restarts=0", "-m", "services.learner.main"]


def _torchrun(cfg: LearnerConfig, topo: Topology) -> int:
    cmd = torchrun_command(cfg, topo)
    log.info("torchrun", nnodes=topo.nnodes, node_rank=topo.node_rank, nproc_per_node=topo.nproc_per_node,
             master=f"{topo.master_addr}:{topo.master_port}")
    proc = subprocess.Popen(cmd, env=child_env(cfg))
    _forward_signals([proc])
    code = proc.wait()
    if code != 0:
        _failed(code)
    return code


def _failed(code: int) -> None:
    log.error(f"{LOST}; the job is stopped: start every node again with --resume to continue from the last "
              "committed checkpoint", exit_code=code)


def _spawn_local(cfg: LearnerConfig) -> int:
    """world_size local processes of `services.learner.main` (what torchrun does for one node, without its agent)."""
    from shared.redis_proc import free_port

    env = child_env(cfg)
    env.update(WORLD_SIZE=str(cfg.world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, "-m", "services.learner.main"],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(cfg.world_size)]
    log.info("learner processes started", world_size=cfg.world_size, pids=[p.pid for p in procs])
    _forward_signals(procs)
    while True:  # one rank failing fails the run: stop the others rather than leave them waiting on it
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            _failed(failed[0])
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.5)


def _forward_signals(procs: list[subprocess.Popen]) -> None:
    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


def _main() -> int:
    from services.learner.preflight import refusal
    from shared.config import load_settings
    from shared.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m services.learner.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="YAML file (its `learner` section or top level)")
    args = parser.parse_args()
    setup_logging("learner")
    try:
        settings = load_settings(LearnerConfig, args.config, "learner")
        problem = refusal(settings)
        if problem:
            raise ValueError(problem)
        return launch(settings)
    except ValueError as e:
        print(f"python -m services.learner.launch: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
