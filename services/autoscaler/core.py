"""The scaling decision: desired rollout replicas from the buffer's prompt backlog and staleness.

Pure logic, no I/O. Backlog drives the target (`ceil(backlog / target_backlog_per_replica)`). Staleness
vetoes growth: when many of the groups put since the last look were dropped as stale, rollout is
producing faster than the learner consumes, so more workers would only make more stale groups; step down.
Steps are limited and a cooldown follows every change, so the Deployment never flaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_backlog_per_replica: int
    max_step_up: int
    max_step_down: int
    cooldown_s: float
    max_stale_fraction: float


@dataclass(frozen=True)
class Observation:
    """What the buffer's GetStats says (counters are cumulative)."""

    prompt_backlog: int
    groups_put_total: int
    groups_stale_total: int


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # one of: steady, backlog, stale, bounds, cooldown

    def changes(self, current: int) -> bool:
        return self.replicas != current


def stale_fraction(prev: Observation | None, cur: Observation) -> float:
    """Share of the groups put since `prev` that went stale; 0 without history or after a counter reset."""
    if prev is None:
        return 0.0
    put = cur.groups_put_total - prev.groups_put_total
    stale = cur.groups_stale_total - prev.groups_stale_total
    if put <= 0 or stale < 0:
        return 0.0
    return min(1.0, stale / put)


class Autoscaler:
    """Keeps the previous observation and the time of the last change between decisions."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._prev: Observation | None = None
        self._last_change: float | None = None

    def decide(self, current: int, obs: Observation, now: float) -> Decision:
        p = self.policy
        frac = stale_fraction(self._prev, obs)
        self._prev = obs
        clamp = lambda n: max(p.min_replicas, min(p.max_replicas, n))  # noqa: E731
        if clamp(current) != current:
            # Out of bounds (someone scaled by hand, or the bounds changed): correct at once.
            return self._changed(Decision(clamp(current), "bounds"), now)
        if frac > p.max_stale_fraction:
            target, reason = current - 1, "stale"
        else:
            target, reason = math.ceil(obs.prompt_backlog / p.target_backlog_per_replica), "backlog"
        target = clamp(max(current - p.max_step_down, min(current + p.max_step_up, target)))
        if target == current:
            return Decision(current, "steady")
        if self._last_change is not None and now - self._last_change < p.cooldown_s:
            return Decision(current, "cooldown")
        return self._changed(Decision(target, reason), now)

    def _changed(self, decision: Decision, now: float) -> Decision:
        self._last_change = now
        return decision
