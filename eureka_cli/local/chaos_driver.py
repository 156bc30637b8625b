"""The fault driver of `eureka chaos`: lays the planned faults over the training actually left and delivers each.

Pacing: before each fault the interval is the training time left (steps left x the measured step time)
spread over the faults left, never under `min_interval_s`. Holding: the learner runs with
`--hold-after-done`, so when training ends before the schedule, the pipeline keeps serving its final
weights (rollouts keep generating and putting, every process still killable) until every planned fault is
delivered; then the driver stops the learner. Without holding, faults left when training ends are
undelivered, and `eureka chaos` fails.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from eureka_cli.local.chaos_faults import KINDS, FaultKinds
from eureka_cli.local.chaos_pipeline import Fault
from eureka_cli.local.supervisor import Supervisor
from shared.logs import get_logger
from shared.redis_proc import RedisProc

log = get_logger("chaos")

LEARNER_KINDS = ("learner", "learner_node")  # faults that restart the learner from its last checkpoint
TRAINING_KINDS = ("buffer_paged", "broadcast_worker")  # need the learner training (not holding): early in the plan
HOLDING = "serving the final weights until stopped"  # the learner's log line when it holds after its last step
PAGE_OPEN = "event='batch page received'"  # the learner holds part of a batch that arrives in pages
PAGE_DONE = "event='batch sampled'"  # ... and now the whole batch


@dataclass
class Plan:
    order: list[str]  # fault kinds, in schedule order

    @property
    def planned(self) -> dict[str, int]:
        """Faults planned per kind, in report order."""
        n = Counter(self.order)
        return {k: n[k] for k in KINDS if n[k]}


def make_plan(counts: dict[str, int], side: dict[str, bool], seed: int) -> Plan:
    """Kill kinds shuffled by `seed`; the pause third and the slow reward sixth (or last, when fewer); the kinds
    that need the learner training fourth, tenth, ... (well before the schedule can outlast training)."""
    kinds = [k for k, n in counts.items() for _ in range(n) if k not in TRAINING_KINDS]
    random.Random(seed).shuffle(kinds)
    early = [k for k in TRAINING_KINDS for _ in range(counts.get(k, 0))]
    for i, kind in enumerate(early):
        kinds.insert(min(3 + 6 * i, len(kinds)), kind)
    for kind, at in (("pause", 2), ("slow", 5)):
        if side.get(kind):
            kinds.insert(min(at, len(kinds)), kind)
    return Plan(kinds)


class LearnerLog:
    """The learner's log, read as it grows: how often it held after its last step, and whether it holds part of a
    batch that arrives in pages (a page line not yet followed by the batch's end)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.holds = path, 0, 0
        self.open_page = ""  # the last page line while a batch in pages is open

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data.rfind(b"\n") + 1  # only whole lines; the rest is read next time
        self.offset += whole
        for line in data[:whole].decode(errors="replace").splitlines():
            if HOLDING in line:
                self.holds += 1
            elif PAGE_OPEN in line:
                self.open_page = line
            elif PAGE_DONE in line:
                self.open_page = ""


class Driver:
    """Runs a plan against the live pipeline, measures recovery and counts what was delivered."""

    def __init__(self, cfg, sup: Supervisor, redis: RedisProc, ports: dict[str, int], token: str) -> None:
        self.cfg, self.sup, self.redis, self.ports, self.token = cfg, sup, redis, ports, token
        self.lock = threading.Lock()  # one signal or restart at a time
        self.rng = random.Random(cfg.chaos_seed)
        self.faults: list[Fault] = []
        self.delivered: Counter = Counter()
        self.failures: list[str] = []  # checks a delivered fault did not pass (e.g. claims left after a SIGTERM)
        self.crashes: list[str] = []  # processes that died without being killed by us
        self.threads: list[threading.Thread] = []
        self.side: list[threading.Thread] = []  # pause / slow: part of the schedule until they end
        self.finished = threading.Event()  # training is over: stop waiting for restarted processes to serve
        self.learner_dir = cfg.run_dir / "learner"
        self.learner_log = LearnerLog(cfg.run_dir / "logs" / "learner.log")
        self.loads: list[float] = []  # 1-minute load average, sampled by the schedule's loop
        self.learner_ckpt_at_start = 0
        self.learner_holds_at_start = 0
        self.releases_back_at = 0.0  # monotonic time when claims a buffer outage left are past their lease
        self.kinds = FaultKinds(self)

    # --- the schedule -------------------------------------------------------------------------------------

    def run(self, plan: Plan) -> None:
        order = list(plan.order)
        self.start = time.monotonic()
        next_at = self.start + self.cfg.warmup_s
        held_from: float | None = None
        self.held_s = 0.0
        while True:
            with self.lock:
                done = self._watch()
            if done:
                break
            now = time.monotonic()
            if order and now >= next_at and self._first_step_done() and self._ready(order):
                kind = order.pop(0)
                self.kinds.inject(kind, round(now - self.start, 1))
                next_at = time.monotonic() + self._interval(len(order))
            holding = self.cfg.hold_training and self.holding()
            if holding and held_from is None:
                held_from = now
            # Held: end once the schedule is delivered, or only faults that need training are left (undelivered).
            if holding and all(k in TRAINING_KINDS for k in order) and not any(t.is_alive() for t in self.side):
                self.held_s = round(now - held_from, 1)
                self.sup.stop("learner")  # the schedule is delivered: end the hold (SIGTERM, exits 0)
                break
            if holding and held_from == now:
                log.info("training done; holding it until the schedule is delivered", faults_left=len(order))
            self._resolve_progress()
            self.loads.append(os.getloadavg()[0])
            time.sleep(0.3)
        self.chaos_s = time.monotonic() - self.start
        self.finished.set()
        for t in self.threads + self.side:
            t.join()
        self._resolve_progress()
        if order:
            log.warning("training ended before the schedule", left=len(order))

    def _interval(self, faults_left: int) -> float:
        """Training time left spread over the faults left (plus one gap before the end)."""
        step, step_s = self._step_time()
        if step_s is None or faults_left == 0:
            return self.cfg.min_interval_s
        left_s = max(0, self.cfg.steps - step) * step_s
        return max(self.cfg.min_interval_s, left_s / (faults_left + 1))

    def _step_time(self) -> tuple[int, float | None]:
        """The learner's last step and the median of its last few step durations (faults included)."""
        rows = self._metrics()
        times = [r["time"] for r in rows]
        gaps = [b - a for a, b in zip(times[-6:], times[-5:])]
        return (rows[-1]["step"] if rows else 0), (statistics.median(gaps) if gaps else None)

    def _metrics(self) -> list[dict]:
        from shared.plots import read_jsonl

        path = self.learner_dir / "metrics.jsonl"
        return read_jsonl(path) if path.exists() else []

    def _first_step_done(self) -> bool:
        return bool(self._metrics())

    def _ready(self, order: list[str]) -> bool:
        """The next fault goes first when its kind is ready (`_kind_ready`); else the first ready one after it."""
        j = next((j for j, k in enumerate(order) if self._kind_ready(k)), None)
        if j is None:
            return False
        order.insert(0, order.pop(j))
        return True

    def _kind_ready(self, kind: str) -> bool:
        """A learner kill waits until the learner committed a checkpoint (or holds) since its last start, so every
        restart resumes from one. A rollout SIGTERM waits out the lease after a buffer or redis kill: the releases
        that failed meanwhile leave claims to the lease by design, and its check is of the claims it releases."""
        if kind in LEARNER_KINDS:
            return self.learner_ready()
        if kind == "rollout_sigterm":
            return time.monotonic() >= self.releases_back_at
        if kind == "buffer_paged":
            return bool(self.paged_batch()) and not self.holding()
        if kind == "broadcast_worker":  # rounds come with new versions: the learner must be training
            return self.sup.procs["learner"].alive and not self.holding()
        return True

    def paged_batch(self) -> str:
        """The learner's last page line while it holds part of a batch in pages (else empty)."""
        lead = self.sup.procs.get("learner")
        return self.learner_log.open_page if lead is not None and lead.alive else ""

    def learner_ready(self) -> bool:
        return self.checkpoint_step() > self.learner_ckpt_at_start or self._holds() > self.learner_holds_at_start

    def checkpoint_step(self) -> int:
        from services.learner.state import read_checkpoint

        ckpt = read_checkpoint(self.learner_dir)
        return ckpt.step if ckpt else 0

    def _holds(self) -> int:
        return self.learner_log.holds

    def holding(self) -> bool:
        """The learner trained its last step and holds (since its last start)."""
        return self.checkpoint_step() >= self.cfg.steps and self._holds() > self.learner_holds_at_start

    # --- processes ----------------------------------------------------------------------------------------

    def _watch(self) -> bool:
        """True once the learner exited 0 (done); a process that died on its own is recorded and restarted."""
        self.learner_log.poll()
        for name, m in list(self.sup.procs.items()):
            if m.proc is None or m.expected_exit or m.proc.poll() is None:
                continue
            if name == "learner" and m.proc.returncode == 0:
                return True
            self.crashes.append(f"{name} exited with code {m.proc.returncode}")
            log.error("process died on its own, restarting", process=name, code=m.proc.returncode, log=str(m.log_path))
            self.restart(name)
        if self.redis.proc.poll() is not None:
            self.crashes.append(f"redis-server exited with code {self.redis.proc.returncode}")
            self.restart_redis()
        return False

    def restart(self, name: str) -> None:
        if name.startswith("learner"):  # a learner of several nodes restarts whole (`chaos_nodes.LearnerNodes`)
            name = "learner"
        argv = list(self.sup.procs[name].argv)
        if name == "learner":  # continue from the last committed checkpoint
            argv[argv.index("--resume") + 1] = "true"
            self.learner_ckpt_at_start = self.checkpoint_step()
            self.learner_log.poll()
            self.learner_holds_at_start = self._holds()
            self.learner_log.open_page = ""  # the new learner samples its batch afresh
        self.sup.start(name, argv)

    def restart_redis(self) -> None:
        from shared.redis_proc import start_redis

        r = self.redis
        self.redis = start_redis(r.data_dir, port=r.port, password=r.password, fsync="always", timeout_s=120.0)

    def live_rollouts(self, avoid: set[str]) -> str:
        names = [f"rollout{w}" for w in range(self.cfg.rollout_workers)]
        return self.rng.choice([n for n in names if n not in avoid] or names)

    def record(self, fault: Fault) -> None:
        fault.restarted_at = fault.restarted_at or time.time()
        self.faults.append(fault)
        self.delivered[fault.kind] += 1
        if fault.kind in ("buffer", "buffer_paged", "redis"):
            self.releases_back_at = time.monotonic() + (self.cfg.buffer_lease_s or 600.0) + 5.0
        log.info("fault", kind=fault.kind, target=fault.target)

    def background(self, target, *args, side: bool = False) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        (self.side if side else self.threads).append(t)

    def serving(self, fault: Fault, name: str, killed: float) -> None:
        """down_s of a kill: until the restarted process answers its gRPC health check."""
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
        open_faults = [f for f in self.faults if f.progress_s is None]
        if not open_faults:
            return
        times = [r["time"] for r in self._metrics()]
        for f in open_faults:
            after = [t for t in times if t > f.restarted_at]
            if after:
                f.progress_s = round(min(after) - f.restarted_at, 2)

