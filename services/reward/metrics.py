"""The reward service's Prometheus metrics (`eureka_reward_*`), created once per process."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import counter, gauge, histogram


@dataclass(frozen=True)
class RewardMetrics:
    requests: Counter
    items: Counter
    latency: Histogram
    timeouts: Counter
    errors: Counter
    empty_gold_requests: Counter
    worker_restarts: Counter
    accuracy_mean: Gauge
    format_mean: Gauge
    reward_mean: Gauge
    reflection_rate: Gauge
    pool_workers: Gauge
    pending_items: Gauge


@functools.cache
def reward_metrics() -> RewardMetrics:
    return RewardMetrics(
        requests=counter("eureka_reward_requests_total", "verify requests by front door and outcome", ["door", "outcome"]),
        items=counter("eureka_reward_items_total", "items scored, by status", ["status"]),
        latency=histogram("eureka_reward_request_latency_seconds", "time to answer one request", ["door"]),
        timeouts=counter("eureka_reward_timeouts_total", "items whose verification hit the per-item timeout"),
        errors=counter("eureka_reward_errors_total", "refused requests and failed items, by kind", ["kind"]),
        empty_gold_requests=counter("eureka_reward_empty_gold_requests_total",
                                    "requests in which every gold answer was empty (no labels sent?)", ["door"]),
        worker_restarts=counter("eureka_reward_worker_restarts_total", "scoring worker processes killed and replaced"),
        accuracy_mean=gauge("eureka_reward_accuracy_mean", "mean accuracy of the last request's OK items"),
        format_mean=gauge("eureka_reward_format_mean", "mean format score of the last request's OK items"),
        reward_mean=gauge("eureka_reward_reward_mean", "mean total reward of the last request's items"),
        reflection_rate=gauge("eureka_reward_reflection_rate",
                              "share of the last request's responses with a reflective phrase (wait, re-check, ...)"),
        pool_workers=gauge("eureka_reward_pool_workers", "live scoring worker processes"),
        pending_items=gauge("eureka_reward_pending_items", "items queued or being verified"),
    )
