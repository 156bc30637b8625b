"""What a chaos fault works with: the `Fault` record and the `Pipeline` it is delivered against (`chaos_driver.Driver`
is the one implementation); shared by `chaos_faults.py` and `chaos_broadcast.py`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eureka_cli.local.supervisor import Supervisor
from shared.redis_proc import RedisProc


@dataclass
class Fault:
    kind: str
    target: str
    at_s: float  # since the schedule start
    down_s: float = 0.0  # kill -> restarted process answers its health check (SERVING / PING); -1: not before the end
    progress_s: float | None = None  # restart -> the learner's next step
    restarted_at: float = 0.0  # wall time (the learner's metrics carry wall times)
    detail: str = ""


class FaultSettings(Protocol):
    """The chaos settings a fault reads."""

    pause_s: float
    slow_reward_s: float
    sigterm_grace_s: float
    node_loss_s: float
    broadcast_round_s: float
    rollout_workers: int


class Pipeline(Protocol):
    """What a fault needs from the running pipeline (`chaos_driver.Driver` is the one implementation)."""

    cfg: FaultSettings
    sup: Supervisor
    redis: RedisProc
    lock: threading.Lock
    failures: list[str]

    def restart(self, name: str) -> None: ...
    def holding(self) -> bool: ...
    def restart_redis(self) -> None: ...
    def live_rollouts(self, avoid: set[str]) -> str: ...
    def paged_batch(self) -> str: ...
    def record(self, fault: Fault) -> None: ...
    def background(self, target: Callable[..., Any], *args: Any, side: bool = False) -> None: ...
    def serving(self, fault: Fault, name: str, killed: float) -> None: ...
