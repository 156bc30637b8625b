"""The `Scorer` both front doors call: input caps, per-mode format weights, totals and metrics over the pool.

Transport-free: gRPC and HTTP convert their messages to `Item`s, call `Scorer.score`, and map
`BadRequest` / `PoolBusy` / `PoolClosed` to their status codes in one place each.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from services.reward.config import RewardConfig
from services.reward.core import INSTRUCT, PRETRAINED, ItemInput, ItemScore, Status
from services.reward.metrics import reward_metrics
from services.reward.pool import PoolBusy, PoolClosed, WorkerPool
from shared.logs import get_logger
from shared.reflection import reflection_rate

log = get_logger("reward.scoring")

MODES = (INSTRUCT, PRETRAINED)


class BadRequest(Exception):
    """The request as a whole is invalid (a sentence says what to fix); nothing was scored."""


@dataclass(frozen=True)
class Item(ItemInput):
    """An item as the front doors receive it: what is scored, plus the caller's id echoed back."""

    item_id: str = ""


@dataclass(frozen=True)
class Result:
    item_id: str
    accuracy: float
    format: float
    total: float
    extracted: str
    status: Status
    detail: str


class Scorer:
    """Scores a request's batch on the `WorkerPool`: caps, format weights, totals and per-door metrics."""

    def __init__(self, cfg: RewardConfig, pool: WorkerPool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.metrics = reward_metrics()

    def _cap(self, item: Item) -> str | None:
        """A sentence when the item breaks an input cap (it is then scored 0 without being verified)."""
        cfg = self.cfg
        if len(item.response) > cfg.max_response_chars:
            return f"response has {len(item.response)} characters, above the cap of {cfg.max_response_chars}; scored 0"
        if len(item.gold) > cfg.max_gold_chars:
            return f"gold answer has {len(item.gold)} characters, above the cap of {cfg.max_gold_chars}; scored 0"
        if len(item.options) > cfg.max_options:
            return f"{len(item.options)} options exceed the cap of {cfg.max_options}; scored 0"
        if any(len(o) > cfg.max_gold_chars for o in item.options):
            return f"an option is longer than {cfg.max_gold_chars} characters; scored 0"
        return None

    def check(self, items: list[Item], format_weight: float | None) -> None:
        if not items:
            raise BadRequest("the request has no items; send at least one (response, gold) pair")
        if len(items) > self.cfg.max_batch_items:
            raise BadRequest(f"{len(items)} items exceed the batch cap of {self.cfg.max_batch_items}; split the batch")
        if format_weight is not None and (not math.isfinite(format_weight) or format_weight < 0):
            raise BadRequest(f"format_weight must be a finite number >= 0, got {format_weight}")
        for i, item in enumerate(items):
            if item.mode not in MODES:
                raise BadRequest(f"item {i}: mode {item.mode!r} is not one of {', '.join(MODES)}")

    def weight(self, mode: str, format_weight: float | None) -> float:
        if format_weight is not None:
            return format_weight
        return self.cfg.pretrained_format_weight if mode == PRETRAINED else self.cfg.instruct_format_weight

    def score(self, items: list[Item], format_weight: float | None = None, door: str = "grpc") -> list[Result]:
        """Score a batch; counts the request, its outcome and latency under `door` (grpc, http, get_reward)."""
        start, outcome = time.perf_counter(), "ok"
        try:
            return self._score(items, format_weight, door)
        except BadRequest:
            outcome = "invalid"
            raise
        except PoolBusy:
            outcome = "busy"
            raise
        except PoolClosed:
            outcome = "unavailable"
            raise
        finally:
            self.metrics.requests.labels(door=door, outcome=outcome).inc()
            self.metrics.latency.labels(door=door).observe(time.perf_counter() - start)
            if outcome != "ok":
                self.metrics.errors.labels(kind=outcome).inc()

    def _score(self, items: list[Item], format_weight: float | None, door: str) -> list[Result]:
        self.check(items, format_weight)
        if all(not item.gold.strip() for item in items):
            self.metrics.empty_gold_requests.labels(door=door).inc()
            log.warning("every gold answer of the request is empty: all its items score 0; send the golds "
                        "(OpenRLHF: set --label_key, or --data.label_key, to the answer field)",
                        door=door, items=len(items))
        capped = [self._cap(item) for item in items]
        to_score: list[ItemInput] = [it for it, c in zip(items, capped) if c is None]
        scored = iter(self.pool.score(to_score) if to_score else [])
        results = []
        for item, cap in zip(items, capped):
            score = ItemScore(0.0, 0.0, "", Status.INVALID, cap) if cap is not None else next(scored)
            total = score.accuracy + self.weight(item.mode, format_weight) * score.format
            results.append(Result(item.item_id, score.accuracy, score.format, total, score.extracted,
                                  score.status, score.detail))
        self._observe(results, [it.response for it, c in zip(items, capped) if c is None])
        return results

    def _observe(self, results: list[Result], responses: list[str]) -> None:
        m = self.metrics
        m.reflection_rate.set(reflection_rate(responses))
        for r in results:
            m.items.labels(status=r.status.value).inc()
            if r.status is not Status.OK:
                m.errors.labels(kind=r.status.value).inc()
        ok = [r for r in results if r.status is Status.OK]
        if ok:
            m.accuracy_mean.set(sum(r.accuracy for r in ok) / len(ok))
            m.format_mean.set(sum(r.format for r in ok) / len(ok))
        m.reward_mean.set(sum(r.total for r in results) / len(results))
