"""`eureka chaos`: the `eureka up` pipeline under seeded faults, then an audit of every trajectory and prompt.

A driver kill -9s and restarts each kind of process on a schedule (rollout workers, reward, buffer,
learner with `--resume`, redis-server on the same port and data dir), pauses one rollout worker past
its lease (SIGSTOP, SIGCONT) and slows the reward service (a SIGSTOP/SIGCONT duty cycle). When the
learner has reached its last step, the audit (`chaos_audit.py`) compares what the buffer accepted
with what the learner trained or dropped. Writes `chaos.json` and rewrites the marked figures table
of `docs/RELIABILITY.md`; exits 1 when anything was lost or duplicated.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from eureka_cli.local import run
from eureka_cli.local.chaos_audit import audit, figures_table, rewrite_docs
from eureka_cli.local.config import UpConfig
from eureka_cli.local.supervisor import ProcessDied, Supervisor
from shared.logs import get_logger, setup_logging
from shared.redis_proc import RedisProc, start_redis

log = get_logger("chaos")

KINDS = ("rollout", "reward", "buffer", "learner", "redis")


class ChaosConfig(UpConfig):
    """`eureka chaos`: `eureka up` on the small world while a seeded driver kills, pauses and slows its processes."""

    run_dir: Path = Field(Path("runs/chaos"), description="where the run, its logs and chaos.json go (must be new)")
    steps: int = Field(30, ge=2)
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
    warmup_s: float = Field(15.0, ge=0, description="training time before the first fault")
    fault_interval_s: float = Field(10.0, gt=0, description="time between two kills")
    pause_s: float = Field(45.0, ge=0, description="SIGSTOP of one rollout worker (past its lease); 0 = none")
    slow_reward_s: float = Field(30.0, ge=0, description="reward SIGSTOP 1.5 s / SIGCONT 1 s duty cycle; 0 = none")
    docs: Path | None = Field(Path("docs/RELIABILITY.md"), description="file whose chaos table is rewritten")


@dataclass
class Fault:
    kind: str
    target: str
    at_s: float  # since the first fault's schedule start
    down_s: float = 0.0  # kill -> restarted process answers its health check (SERVING / PING); -1: not before the end
    progress_s: float | None = None  # restart -> the learner's next step
    restarted_at: float = 0.0  # wall time (the learner's metrics carry wall times)


class Driver:
    """Runs the schedule against the live pipeline and measures recovery."""

    def __init__(self, cfg: ChaosConfig, sup: Supervisor, redis: RedisProc, ports: dict[str, int], token: str) -> None:
        self.cfg, self.sup, self.redis, self.ports, self.token = cfg, sup, redis, ports, token
        self.lock = threading.Lock()  # one signal or restart at a time
        self.paused: set[str] = set()
        self.faults: list[Fault] = []
        self.crashes: list[str] = []  # processes that died without being killed by us
        self.rng = random.Random(cfg.chaos_seed)
        self.metrics = cfg.run_dir.resolve() / "learner" / "metrics.jsonl"
        self.threads: list[threading.Thread] = []
        self.learner_ckpt_at_start = 0  # checkpoint step when the learner last started
        self.finished = threading.Event()  # training is over: stop waiting for restarted processes to serve

    def schedule(self) -> list[str]:
        c = self.cfg
        kinds = (["rollout"] * c.kills_rollout + ["reward"] * c.kills_reward + ["buffer"] * c.kills_buffer
                 + ["learner"] * c.kills_learner + ["redis"] * c.kills_redis)
        self.rng.shuffle(kinds)
        return kinds

    def run(self) -> None:
        kinds = self.schedule()
        t0 = time.monotonic() + self.cfg.warmup_s
        side = [(t0 + 2 * self.cfg.fault_interval_s, self._pause), (t0 + 5 * self.cfg.fault_interval_s, self._slow)]
        self.start = t0
        i = 0
        while True:
            with self.lock:
                done = self._watch()
            if done:
                break
            now = time.monotonic()
            for item in list(side):
                if now >= item[0]:
                    side.remove(item)
                    t = threading.Thread(target=item[1], daemon=True)
                    t.start()
                    self.threads.append(t)
            if i < len(kinds) and now >= t0 + i * self.cfg.fault_interval_s and self._ready(kinds, i):
                self._kill(kinds[i], now - t0)
                i += 1
            self._resolve_progress()
            time.sleep(0.3)
        self.chaos_s = time.monotonic() - t0
        self.finished.set()
        for t in self.threads:
            t.join()
        self._resolve_progress()
        if i < len(kinds):
            log.warning("training ended before the schedule", done=i, scheduled=len(kinds))

    def _ready(self, kinds: list[str], i: int) -> bool:
        """A learner kill waits until the learner committed a checkpoint since its last start (so every restart
        resumes from one); other kinds go first meanwhile."""
        if kinds[i] != "learner" or self._checkpoint_step() > self.learner_ckpt_at_start:
            return True
        later = [j for j in range(i + 1, len(kinds)) if kinds[j] != "learner"]
        if later:
            kinds[i], kinds[later[0]] = kinds[later[0]], kinds[i]
        return bool(later)

    def _checkpoint_step(self) -> int:
        from services.learner.state import read_checkpoint

        ckpt = read_checkpoint(self.metrics.parent)
        return ckpt.step if ckpt else 0

    def _watch(self) -> bool:
        """True once the learner exited 0 (done); a process that died on its own is recorded and restarted."""
        for name, m in list(self.sup.procs.items()):
            if m.proc is None or m.expected_exit or m.proc.poll() is None:
                continue
            if name == "learner" and m.proc.returncode == 0:
                return True
            self.crashes.append(f"{name} exited with code {m.proc.returncode}")
            log.error("process died on its own, restarting", process=name, code=m.proc.returncode, log=str(m.log_path))
            self._restart(name)
        if self.redis.proc.poll() is not None:
            self.crashes.append(f"redis-server exited with code {self.redis.proc.returncode}")
            self._restart_redis()
        return False

    def _kill(self, kind: str, at_s: float) -> None:
        with self.lock:
            if kind == "redis":
                start = time.monotonic()
                self.redis.kill()
                self._restart_redis()
                fault = Fault(kind, "redis-server", round(at_s, 1), round(time.monotonic() - start, 2))
                self.faults.append(fault)
                fault.restarted_at = time.time()
                log.info("fault", kind=kind, down_s=fault.down_s)
                return
            target = kind
            if kind == "rollout":
                live = [f"rollout{w}" for w in range(self.cfg.rollout_workers) if f"rollout{w}" not in self.paused]
                target = self.rng.choice(live or [f"rollout{w}" for w in range(self.cfg.rollout_workers)])
            fault = Fault(kind, target, round(at_s, 1))
            self.sup.signal(target, signal.SIGKILL)
            self.sup.wait(target)
            killed = time.monotonic()
            self._restart(target)
            fault.restarted_at = time.time()
            self.faults.append(fault)
        log.info("fault", kind=kind, target=target)
        t = threading.Thread(target=self._serving, args=(fault, target, killed), daemon=True)
        t.start()
        self.threads.append(t)

    def _restart(self, name: str) -> None:
        argv = list(self.sup.procs[name].argv)
        if name == "learner":  # continue from the last committed checkpoint
            argv[argv.index("--resume") + 1] = "true"
            self.learner_ckpt_at_start = self._checkpoint_step()
        self.sup.start(name, argv)

    def _restart_redis(self) -> None:
        r = self.redis
        self.redis = start_redis(r.data_dir, port=r.port, password=r.password, fsync="always", timeout_s=120.0)

    def _serving(self, fault: Fault, name: str, killed: float) -> None:
        from shared.config import GrpcConfig, SecurityConfig
        from shared.grpc_client import create_channel, wait_serving

        port = self.ports["weights" if name == "learner" else name]
        channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig(service_token=self.token))
        end = time.monotonic() + 300.0
        try:
            while True:
                try:
                    wait_serving(channel, timeout_s=1.0)
                    fault.down_s = round(time.monotonic() - killed, 2)
                    return
                except TimeoutError:
                    # A rollout restarted late serves only after its first weight pull, which cannot come once
                    # the learner has finished: give up then rather than hold the end of the run.
                    if self.finished.is_set() or time.monotonic() > end:
                        fault.down_s = -1.0
                        return
        finally:
            channel.close()

    def _resolve_progress(self) -> None:
        """progress_s of each fault: from its restart to the first learner step recorded after it."""
        from shared.plots import read_jsonl

        open_faults = [f for f in self.faults if f.progress_s is None]
        if not open_faults or not self.metrics.exists():
            return
        times = [r["time"] for r in read_jsonl(self.metrics)]
        for f in open_faults:
            after = [t for t in times if t > f.restarted_at]
            if after:
                f.progress_s = round(min(after) - f.restarted_at, 2)

    def _pause(self) -> None:
        """SIGSTOP a rollout worker past its lease and its RPC deadlines, then SIGCONT."""
        if self.cfg.pause_s <= 0:
            return
        name = "rollout0"
        with self.lock:
            self.paused.add(name)
            self.sup.signal(name, signal.SIGSTOP)
        log.info("fault", kind="pause", target=name, seconds=self.cfg.pause_s)
        time.sleep(self.cfg.pause_s)
        with self.lock:
            self.sup.signal(name, signal.SIGCONT)
            self.paused.discard(name)
        self.faults.append(Fault("pause", name, round(time.monotonic() - self.start, 1), self.cfg.pause_s))
        self.faults[-1].restarted_at = time.time()

    def _slow(self) -> None:
        """The reward service runs 1 s in 2.5 s for slow_reward_s (a slow dependency)."""
        if self.cfg.slow_reward_s <= 0:
            return
        log.info("fault", kind="slow", target="reward", seconds=self.cfg.slow_reward_s)
        end = time.monotonic() + self.cfg.slow_reward_s
        while time.monotonic() < end:
            with self.lock:
                self.sup.signal("reward", signal.SIGSTOP)
            time.sleep(1.5)
            with self.lock:
                self.sup.signal("reward", signal.SIGCONT)
            time.sleep(1.0)
        self.faults.append(Fault("slow", "reward", round(time.monotonic() - self.start, 1), self.cfg.slow_reward_s))
        self.faults[-1].restarted_at = time.time()


def main(cfg: ChaosConfig) -> int:
    setup_logging("chaos")
    run_dir = cfg.run_dir.resolve()
    if (run_dir / "learner").exists():
        print(f"eureka chaos: {run_dir} already holds a run; choose a new --run-dir")
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"run_dir": run_dir, "resume": False})
    signal.signal(signal.SIGINT, run.raise_interrupt)
    signal.signal(signal.SIGTERM, run.raise_interrupt)
    started = time.time()
    sup = Supervisor(run_dir)
    driver: Driver | None = None
    redis: RedisProc | None = None
    try:
        train, heldout, base = run.prepare(cfg)
        base_eval = run.evaluate(sup, "eval-base", base, heldout, cfg, run_dir / "eval_base.json")
        token = secrets.token_urlsafe(24)
        redis = start_redis(run_dir / "redis", password=secrets.token_urlsafe(24), fsync="always")
        ports = run.start_services(sup, cfg, redis, token, train, base, run_dir / "learner")
        driver = Driver(cfg, sup, redis, ports, token)
        driver.run()
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
    report = _report(cfg, driver, result, base_eval, final_eval, time.time() - started)
    (run_dir / "chaos.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    table = figures_table(report)
    print(table)
    if cfg.docs is not None and cfg.docs.is_file():
        rewrite_docs(cfg.docs, table)
    print(f"lost={result['lost']} duplicated={result['duplicated']}")
    return 1 if result["lost"] or result["duplicated"] else 0


def _report(cfg: ChaosConfig, driver: Driver, result: dict, base: dict, final: dict, wall_s: float) -> dict:
    per_kind: dict[str, dict] = {}
    for kind in (*KINDS, "pause", "slow"):
        fs = [f for f in driver.faults if f.kind == kind]
        if not fs:
            continue
        prog = [f.progress_s for f in fs if f.progress_s is not None]
        down = [f.down_s for f in fs if f.down_s > 0]
        per_kind[kind] = {
            "n": len(fs),
            "down_s_max": max(down) if down else None,
            "progress_s_mean": round(sum(prog) / len(prog), 1) if prog else None,
            "progress_s_max": max(prog) if prog else None,
        }
    kills = sum(v["n"] for k, v in per_kind.items() if k in KINDS)
    return {
        "seed": cfg.chaos_seed,
        "steps": cfg.steps,
        "wall_time_s": round(wall_s, 1),
        "chaos_time_s": round(driver.chaos_s, 1),
        "kills": kills,
        "faults": per_kind,
        "unplanned_exits": driver.crashes,
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
