"""Prometheus metrics helper: names are checked against `eureka_<service>_<what>_<unit>`."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

_NAME = re.compile(r"^eureka_(reward|buffer|rollout|learner|autoscaler|up)_[a-z0-9_]+$")

# Buckets for durations from a millisecond to ten minutes.
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _check(name: str, kind: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r} must look like eureka_<service>_<what>_<unit>")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")


def _existing(name: str):
    # Re-registering (tests that build a service twice in one process) returns the same collector.
    base = name[: -len("_total")] if name.endswith("_total") else name
    return REGISTRY._names_to_collectors.get(base) or REGISTRY._names_to_collectors.get(name)  # noqa: SLF001


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    _check(name, "counter")
    return _existing(name) or Counter(name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    _check(name, "gauge")
    return _existing(name) or Gauge(name, doc, labels)


def histogram(name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = SECONDS_BUCKETS) -> Histogram:
    _check(name, "histogram")
    return _existing(name) or Histogram(name, doc, labels, buckets=buckets)


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics on its own port (0 = off)."""
    if port:
        start_http_server(port, addr=host)
