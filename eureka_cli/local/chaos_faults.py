"""The fault kinds of `eureka chaos`, each with its own count (`--kills-<kind>`, `--sigterms-rollout`, ...).

A kind is a method `_<kind>` of `FaultKinds` that delivers one fault and records it with `Pipeline.record`;
`KINDS` names them in report order. A new kind is one more method, one more count in `ChaosConfig`, and one
more entry here.
"""

from __future__ import annotations

import signal
import subprocess
import time

from eureka_cli.local.chaos_broadcast import kill_mid_round
from eureka_cli.local.chaos_pipeline import Fault, Pipeline
from shared.logs import get_logger

log = get_logger("chaos")

KILL_KINDS = ("rollout", "reward", "buffer", "learner", "redis", "buffer_paged")  # kill -9 and restart
KILLS = (*KILL_KINDS, "learner_node", "broadcast_worker")  # every kill -9 (`kills` in chaos.json)
KINDS = (*KILLS, "rollout_sigterm", "pause", "slow")
PREFIX = "eureka:"
PROMPTS_GROUP = "rollout"  # the buffer's consumer group on the prompt stream


class FaultKinds:
    """Delivers one fault of a kind against the driver's pipeline."""

    def __init__(self, driver: Pipeline) -> None:
        self.d = driver
        self.paused: set[str] = set()

    def inject(self, kind: str, at_s: float) -> None:
        if kind in KILL_KINDS:
            self._kill(kind, at_s)
        else:
            getattr(self, f"_{kind}")(at_s)

    def _kill(self, kind: str, at_s: float) -> None:
        d = self.d
        with d.lock:
            if kind == "redis":
                start = time.monotonic()
                d.redis.kill()
                d.restart_redis()
                d.record(Fault(kind, "redis-server", at_s, round(time.monotonic() - start, 2)))
                return
            target = d.live_rollouts(self.paused) if kind == "rollout" else kind.removesuffix("_paged")
            fault = Fault(kind, target, at_s)
            if kind == "buffer_paged":  # the learner holds part of a batch in pages: the kill lands between two
                fault.detail = "learner's last page before the kill: " + _fields(d.paged_batch(), "groups", "of")
            d.sup.signal(target, signal.SIGKILL)
            d.sup.wait(target)
            killed = time.monotonic()
            d.restart(target)
            d.record(fault)
        d.background(d.serving, fault, target, killed)

    def _learner_node(self, at_s: float) -> None:
        """kill -9 of every process of the learner's second node (a lost machine): the first node must fail the
        job (exit non-zero) within node_loss_s, then every node restarts with --resume. A learner holding after its
        last step waits for its stop, not for a peer, so there the first node is stopped instead."""
        d = self.d
        with d.lock:
            lead = d.sup.procs["learner"]
            lead.expected_exit = True
            holding = d.holding()
            fault = Fault("learner_node", "learner1", at_s)
            d.sup.signal("learner1", signal.SIGKILL)
            d.sup.wait("learner1")
            killed = time.monotonic()
            if holding:
                d.sup.signal("learner", signal.SIGTERM)
        try:  # the driver's loop waits here: no other fault lands meanwhile
            code = lead.proc.wait(d.cfg.node_loss_s)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            d.sup.signal("learner", signal.SIGKILL)
            code = lead.proc.wait()  # type: ignore[union-attr]
            d.failures.append(f"the first learner node did not fail the job within {d.cfg.node_loss_s} s of losing "
                              "the second (killed)")
        failed_s = round(time.monotonic() - killed, 2)
        with d.lock:
            if code == 0 and not holding:
                d.failures.append("the first learner node exited 0 after losing the second; the job must fail")
            fault.detail = f"{'held; stopped' if holding else 'first node exit'} {code} after {failed_s} s"
            d.restart("learner")
            d.record(fault)
        d.background(d.serving, fault, "learner", killed)

    def _broadcast_worker(self, at_s: float) -> None:
        """kill -9 of a rollout worker inside a weight broadcast round (`chaos_broadcast.py`), then a restart."""
        d = self.d
        flag = "--broadcast.address="
        address = next(a.removeprefix(flag) for a in d.sup.procs["learner"].argv if a.startswith(flag))
        why = kill_mid_round(d, address, self.paused, at_s, d.cfg.broadcast_round_s)
        if why:
            d.failures.append(f"broadcast_worker: {why}")

    def _rollout_sigterm(self, at_s: float) -> None:
        """SIGTERM of a rollout worker, as Kubernetes ends a pod: it must exit within the chart's grace period
        (else SIGKILL) having released its claims, so none waits for a lease to expire; then a new one starts."""
        d = self.d
        with d.lock:
            target = d.live_rollouts(self.paused)
            self.paused.add(target)  # no pause lands on it while it drains
            m = d.sup.procs[target]
            m.expected_exit = True
            start = time.monotonic()
            d.sup.signal(target, signal.SIGTERM)
        try:  # the driver's loop waits here: no other fault lands meanwhile
            code = m.proc.wait(d.cfg.sigterm_grace_s)
        except subprocess.TimeoutExpired:
            d.sup.signal(target, signal.SIGKILL)
            code = m.proc.wait()
            d.failures.append(f"{target} did not exit within the {d.cfg.sigterm_grace_s} s grace period of a SIGTERM "
                              "(killed)")
            code = None
        exit_s = round(time.monotonic() - start, 2)
        with d.lock:
            waiting = self._claims_waiting(target, time.monotonic() - m.started_at)
            if code not in (0, None):
                d.failures.append(f"{target} exited with code {code} on SIGTERM")
            if waiting:
                d.failures.append(f"{target} left {waiting} claimed prompts waiting for a lease after its SIGTERM")
            d.restart(target)
            self.paused.discard(target)
            exit_code = "killed" if code is None else code
            fault = Fault("rollout_sigterm", target, at_s, exit_s, detail=f"exit {exit_code}, claims waiting {waiting}")
            d.record(fault)
        d.background(d.serving, fault, target, start)

    def _claims_waiting(self, worker: str, lived_s: float) -> int:
        """Prompts the process of `worker` that lived `lived_s` still holds in the buffer (claimed by it, neither put
        nor released). Claims delivered before it started are a killed predecessor's (same consumer name): those
        wait for their lease by design."""
        r = self.d.redis.client()
        try:
            pending = r.xpending_range(PREFIX + "prompts", PROMPTS_GROUP, "-", "+", 10_000, consumername=worker)
            released = {m.decode() if isinstance(m, bytes) else m for m in r.smembers(PREFIX + "prompts:released")}
        finally:
            r.close()
        ids = [p["message_id"] for p in pending if p["time_since_delivered"] <= lived_s * 1000]
        return sum((i.decode() if isinstance(i, bytes) else i) not in released for i in ids)

    def _pause(self, at_s: float) -> None:
        self.d.background(self._pause_run, at_s, side=True)

    def _pause_run(self, at_s: float) -> None:
        """SIGSTOP a rollout worker past its lease and its RPC deadlines, then SIGCONT."""
        d = self.d
        with d.lock:
            name = d.live_rollouts(self.paused)
            self.paused.add(name)
            d.sup.signal(name, signal.SIGSTOP)
        log.info("fault", kind="pause", target=name, seconds=d.cfg.pause_s)
        time.sleep(d.cfg.pause_s)
        with d.lock:
            d.sup.signal(name, signal.SIGCONT)
            self.paused.discard(name)
            d.record(Fault("pause", name, at_s, d.cfg.pause_s))

    def _slow(self, at_s: float) -> None:
        self.d.background(self._slow_run, at_s, side=True)

    def _slow_run(self, at_s: float) -> None:
        """The reward service runs 1 s in 2.5 s for slow_reward_s (a slow dependency)."""
        d = self.d
        log.info("fault", kind="slow", target="reward", seconds=d.cfg.slow_reward_s)
        end = time.monotonic() + d.cfg.slow_reward_s
        while time.monotonic() < end:
            with d.lock:
                d.sup.signal("reward", signal.SIGSTOP)
            time.sleep(1.5)
            with d.lock:
                d.sup.signal("reward", signal.SIGCONT)
            time.sleep(1.0)
        with d.lock:
            d.record(Fault("slow", "reward", at_s, d.cfg.slow_reward_s))


def _fields(line: str, *names: str) -> str:
    """`name=value` pairs of a log line, in the order asked (`groups=3 of=8`)."""
    pairs = dict(p.split("=", 1) for p in line.split() if "=" in p)
    return " ".join(f"{n}={pairs.get(n, '?')}" for n in names)
