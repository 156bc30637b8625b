"""`eureka chaos`: the `eureka up` pipeline under seeded faults, then an audit of every trajectory and prompt.

The driver (`chaos_driver.py`) delivers every planned fault (`chaos_faults.py`: kill -9 and restart of
rollout workers, reward, buffer, the learner with `--resume` and redis-server; a rollout worker's SIGTERM
under the chart's grace period; a rollout worker paused past its lease; a slow reward service), pacing
them over the training left and holding the trained pipeline until the schedule is done. When the learner
has reached its last step, the audit (`chaos_audit.py`) compares what the buffer accepted with what the
learner trained or dropped. Writes `chaos.json` and `chaos.md` into the run folder (and the marked figures
of a doc with `--write-doc`); exits 1 when a planned fault was not delivered or failed its check, or when
anything was lost or duplicated.
"""

from __future__ import annotations

import json
import secrets
import signal
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from eureka_cli.local import run, run_folder
from eureka_cli.local.chaos_audit import audit, figures_table, rewrite_docs
from eureka_cli.local.chaos_driver import Driver, make_plan
from eureka_cli.local.chaos_faults import KILLS, KINDS
from eureka_cli.local.chaos_nodes import LearnerNodes
from eureka_cli.local.config import UpConfig
from eureka_cli.local.supervisor import ProcessDied
from shared.logs import get_logger, setup_logging
from shared.redis_proc import RedisProc, start_redis

log = get_logger("chaos")


class ChaosConfig(UpConfig):
    """`eureka chaos`: `eureka up` on the small world while a seeded driver kills, pauses and slows its processes."""

    run_dir: Path | None = Field(None, description="where the run, its logs, chaos.json and chaos.md go (must be new; "
                                 "default: a new runs/chaos-<UTC time>)")
    steps: int = Field(30, ge=2)
    world: Literal[2, 3] = Field(2, description="small-world generator (2: short answers, so a faulted run is quick)")
    checkpoint_every: int = Field(3, ge=1)
    eval_limit: int = Field(120, ge=1)
    redis_fsync: Literal["everysec", "always"] = "always"
    buffer_lease_s: float | None = Field(30.0, gt=0, description="buffer lease: short, so reclaims happen in the run")
    chaos_seed: int = Field(0, description="seed of the fault schedule")
    kills_rollout: int = Field(6, ge=0, description="kill -9 + restart of a rollout worker")
    kills_reward: int = Field(4, ge=0)
    kills_buffer: int = Field(4, ge=0)
    kills_learner: int = Field(3, ge=0, description="kill -9 of the learner (every rank), restarted with --resume")
    kills_redis: int = Field(3, ge=0, description="kill -9 of redis-server, restarted on the same port and data dir")
    kills_buffer_paged: int = Field(0, ge=0, description="kill -9 of the buffer while the learner holds part of a "
                                    "batch that arrives in pages (between two SampleGroups pages), restarted; off by "
                                    "default: a learner that keeps up with the rollouts has a batch open for "
                                    "milliseconds only")
    buffer_page_bytes: int = Field(1024, ge=1024, description="the buffer's sample_page_bytes in the run: below one "
                                   "group, so every batch arrives in pages, one group a page")
    learner_nodes: int = Field(1, ge=1, le=4, description="learner launchers (nodes) on loopback, learner_procs "
                               "split between them (c10d rendezvous hosted by node 0)")
    kills_learner_node: int = Field(0, ge=0, description="kill -9 of every process of the learner's second node: the "
                                    "first fails the job, every node restarts with --resume (needs --learner-nodes 2+)")
    kills_broadcast_worker: int = Field(0, ge=0, description="kill -9 of a rollout worker inside a weight broadcast "
                                        "round, restarted (needs --broadcast true)")
    broadcast_bucket_bytes: int = Field(1024, ge=1024, description="broadcast bucket size in the run with --broadcast: "
                                        "small, so a round of the small world lasts long enough to kill a member in")
    broadcast_round_s: float = Field(120.0, gt=0, description="how long a broadcast_worker fault waits for a round "
                                     "with a member in it")
    node_loss_s: float = Field(180.0, gt=0, description="how long the first learner node gets to fail the job after "
                               "losing the second")
    sigterms_rollout: int = Field(2, ge=0, description="SIGTERM of a rollout worker: exits within sigterm_grace_s, "
                                  "its claims released")
    sigterm_grace_s: float = Field(60.0, gt=0, description="the chart's terminationGracePeriodSeconds of a rollout pod")
    warmup_s: float = Field(15.0, ge=0, description="training time before the first fault (and at least one step)")
    min_interval_s: float = Field(10.0, gt=0, description="least time between two faults (pacing spreads them over "
                                  "the training left)")
    hold_training: bool = Field(True, description="hold the trained pipeline (learner --hold-after-done) until every "
                                "planned fault is delivered; false: faults left when training ends fail the run")
    pause_s: float = Field(45.0, ge=0, description="SIGSTOP of one rollout worker (past its lease); 0 = none")
    slow_reward_s: float = Field(30.0, ge=0, description="reward SIGSTOP 1.5 s / SIGCONT 1 s duty cycle; 0 = none")
    write_doc: Path | None = Field(None, description="also rewrite the chaos figures between the markers of this doc "
                                   "(docs/RELIABILITY.md)")

    @model_validator(mode="after")
    def _nodes(self) -> ChaosConfig:
        if self.learner_procs % self.learner_nodes:
            raise ValueError(f"--learner-procs {self.learner_procs} does not split evenly over --learner-nodes "
                             f"{self.learner_nodes}; give every node the same number of processes")
        if self.kills_broadcast_worker and not self.broadcast:
            raise ValueError("--kills-broadcast-worker needs the broadcast weight path; add --broadcast true")
        if self.kills_learner_node and self.learner_nodes < 2:
            raise ValueError("--kills-learner-node needs a learner of two nodes or more; add --learner-nodes 2")
        return self

    def counts(self) -> dict[str, int]:
        return {**{k: getattr(self, f"kills_{k}") for k in KILLS}, "rollout_sigterm": self.sigterms_rollout}


def main(cfg: ChaosConfig) -> int:
    setup_logging("chaos")
    if cfg.write_doc is not None and not cfg.write_doc.is_file():
        print(f"eureka chaos: --write-doc {cfg.write_doc} is not a file; name the doc whose chaos figures to rewrite")
        return 2
    try:
        run_dir = run_folder.claim(cfg.run_dir, "chaos", resume=cfg.resume, holds_run="learner", command="chaos",
                                   resumable=False)
    except run_folder.RunFolderRefused as e:
        print(e)
        return 2
    print(f"eureka chaos: run folder {run_dir}", flush=True)
    cfg = cfg.model_copy(update={"run_dir": run_dir})
    plan = make_plan(cfg.counts(), {"pause": cfg.pause_s > 0, "slow": cfg.slow_reward_s > 0}, cfg.chaos_seed)
    signal.signal(signal.SIGINT, run.raise_interrupt)
    signal.signal(signal.SIGTERM, run.raise_interrupt)
    started = time.time()
    env = {"EUREKA_SAMPLE_PAGE_BYTES": str(cfg.buffer_page_bytes)}  # read by the buffer alone
    if cfg.broadcast:  # read by the learner and the rollout workers
        env["EUREKA_BROADCAST__BUCKET_BYTES"] = str(cfg.broadcast_bucket_bytes)
    sup = LearnerNodes(run_dir, cfg.learner_nodes, cfg.learner_procs, base_env=env)
    driver: Driver | None = None
    redis: RedisProc | None = None
    try:
        train, heldout, base = run.prepare(cfg)
        base_eval = run.evaluate(sup, "eval-base", base, heldout, cfg, run_dir / "eval_base.json")
        token = secrets.token_urlsafe(24)
        redis = start_redis(run_dir / "redis", password=secrets.token_urlsafe(24), fsync="always")
        hold = ["--hold-after-done", "true"] if cfg.hold_training else []
        ports = run.start_services(sup, cfg, redis, token, train, base, run_dir / "learner", learner_extra=hold)
        driver = Driver(cfg, sup, redis, ports, token)
        driver.run(plan)
        redis = driver.redis
        sup.procs["learner"].expected_exit = True
        for w in range(cfg.rollout_workers):  # producers drain first, so the audit reads a still buffer
            sup.stop(f"rollout{w}")
        result = audit(redis, run_dir / "learner", cfg.steps)
        run.stop_services(sup, redis)
        redis = None
        final_eval = run.evaluate(sup, "eval-final", run_dir / "learner" / "final", heldout, cfg,
                                  run_dir / "eval_final.json")
    except run.Interrupted as e:
        log.warning("interrupted, stopping every process", signal=str(e))
        run.stop_services(sup, driver.redis if driver else redis)
        return 130
    except ProcessDied as e:
        run.stop_services(sup, driver.redis if driver else redis)
        print(f"eureka chaos: {e}")
        return 1
    report = _report(cfg, plan.planned, driver, result, base_eval, final_eval, time.time() - started)
    (run_dir / "chaos.json").write_text(json.dumps(report, indent=2))
    table = figures_table(report)
    (run_dir / "chaos.md").write_text(table + "\n")
    print(table)
    if cfg.write_doc is not None:
        rewrite_docs(cfg.write_doc, table)
    problems = _problems(report)
    for line in problems:
        print(f"eureka chaos: {line}")
    print(f"report: {run_dir / 'chaos.json'}")
    print(f"lost={result['lost']} duplicated={result['duplicated']} kills={report['kills']}/{report['kills_planned']} "
          f"faults={report['faults_delivered']}/{report['faults_planned']}")
    return 1 if problems else 0


def _problems(report: dict) -> list[str]:
    """A sentence for each reason the run fails."""
    out = []
    if report["faults_delivered"] < report["faults_planned"]:
        short = ", ".join(f"{k} {report['delivered'].get(k, 0)}/{n}" for k, n in report["planned"].items()
                          if report["delivered"].get(k, 0) < n)
        out.append(f"delivered {report['faults_delivered']} of {report['faults_planned']} planned faults ({short}): "
                   "training ended first; keep --hold-training on, or plan fewer faults or more --steps (buffer_paged "
                   "and broadcast_worker land only while the learner trains, not while it holds)")
    out += report["fault_failures"]
    if report["unplanned_exits"]:
        exits = report["unplanned_exits"]
        out.append(f"{len(exits)} processes exited without a fault ({'; '.join(exits)}); their logs are under the run "
                   "folder's logs/")
    if report["lost"] or report["duplicated"]:
        out.append(f"{report['lost']} acknowledged groups lost and {report['duplicated']} duplicated "
                   f"(first lost ids: {report['lost_ids']})")
    return out


def _report(cfg: ChaosConfig, planned: dict, driver: Driver, result: dict, base: dict, final: dict,
            wall_s: float) -> dict:
    per_kind: dict[str, dict] = {}
    for kind in KINDS:
        fs = [f for f in driver.faults if f.kind == kind]
        if not fs and not planned.get(kind):
            continue
        prog = [f.progress_s for f in fs if f.progress_s is not None]
        down = [f.down_s for f in fs if f.down_s > 0]
        per_kind[kind] = {
            "planned": planned.get(kind, 0),
            "n": len(fs),
            "down_s_max": max(down) if down else None,
            "progress_s_mean": round(sum(prog) / len(prog), 1) if prog else None,
            "progress_s_max": max(prog) if prog else None,
        }
    delivered = {k: driver.delivered.get(k, 0) for k in planned}
    return {
        "seed": cfg.chaos_seed,
        "steps": cfg.steps,
        "rollout_backend": cfg.rollout_backend,
        "learner_nodes": cfg.learner_nodes,
        "broadcast": cfg.broadcast,
        "wall_time_s": round(wall_s, 1),
        "chaos_time_s": round(driver.chaos_s, 1),
        "held_after_training_s": driver.held_s,
        "planned": dict(planned),
        "delivered": delivered,
        "faults_planned": sum(planned.values()),
        "faults_delivered": sum(delivered.values()),
        "kills_planned": sum(n for k, n in planned.items() if k in KILLS),
        "kills": sum(n for k, n in delivered.items() if k in KILLS),
        "faults": per_kind,
        "fault_failures": driver.failures,
        "unplanned_exits": driver.crashes,
        "load_average_1m": {"mean": round(statistics.fmean(driver.loads), 2), "max": round(max(driver.loads), 2)}
        if driver.loads else None,
        "learner_resumed_from_checkpoint": _count(cfg.run_dir / "logs" / "learner.log", "event=resumed"),
        **result,
        "base_accuracy": base["overall"]["accuracy"],
        "final_accuracy": final["overall"]["accuracy"],
        "improved": final["overall"]["accuracy"] > base["overall"]["accuracy"],
        "fault_log": [asdict(f) for f in driver.faults],
    }


def _count(log_path: Path, needle: str) -> int:
    """Lines of a process log that contain `needle` (rank 0 and the others each log their resume)."""
    return sum(needle in line for line in log_path.read_text(errors="replace").splitlines()) if log_path.exists() else 0
