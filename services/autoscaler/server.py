"""`eureka autoscaler run`: every interval, read the buffer's stats and the rollout scale, decide, patch.

A failed read (buffer or API server down) changes nothing and is retried at the next interval.
"""

from __future__ import annotations

import time

from services.autoscaler.config import AutoscalerConfig
from services.autoscaler.core import Autoscaler, Decision, Observation, Policy
from services.autoscaler.kube import ScaleClient, ScaleError
from shared.logs import get_logger, setup_logging
from shared.metrics import counter, gauge, serve_metrics

log = get_logger("autoscaler")

_DESIRED = gauge("eureka_autoscaler_desired_replicas", "rollout replicas the autoscaler last asked for")
_BACKLOG = gauge("eureka_autoscaler_prompt_backlog_prompts", "prompt backlog seen at the last decision")
_CHANGES = counter("eureka_autoscaler_scale_changes_total", "scale patches sent", ["reason"])
_ERRORS = counter("eureka_autoscaler_errors_total", "decisions skipped because a read or patch failed", ["source"])


def policy_of(s: AutoscalerConfig) -> Policy:
    return Policy(
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        target_backlog_per_replica=s.target_backlog_per_replica,
        max_step_up=s.max_step_up,
        max_step_down=s.max_step_down,
        cooldown_s=s.cooldown_s,
        max_stale_fraction=s.max_stale_fraction,
    )


def observe(stub) -> Observation:  # noqa: ANN001 - a BufferServiceStub
    from eureka.v1 import buffer_pb2

    stats = stub.GetStats(buffer_pb2.GetStatsRequest())
    return Observation(stats.prompt_backlog, stats.groups_put_total, stats.groups_stale_total)


def step(scaler: Autoscaler, kube: ScaleClient, obs: Observation, now: float) -> Decision:
    """One decision against the live scale; patches only when the replica count changes."""
    current = kube.get_replicas()
    decision = scaler.decide(current, obs, now)
    _BACKLOG.set(obs.prompt_backlog)
    _DESIRED.set(decision.replicas)
    if decision.changes(current):
        kube.set_replicas(decision.replicas)
        _CHANGES.labels(decision.reason).inc()
        log.info("rollout scaled", deployment=kube.deployment, replicas_from=current, replicas_to=decision.replicas,
                 reason=decision.reason, prompt_backlog=obs.prompt_backlog)
    return decision


def main(settings: AutoscalerConfig) -> int:
    import grpc

    from eureka.v1 import buffer_pb2_grpc
    from shared.grpc_client import create_channel
    from shared.grpc_server import stop_event_on_signals

    setup_logging("autoscaler")
    serve_metrics(settings.metrics_port, settings.host)
    stop = stop_event_on_signals()
    kube = ScaleClient(settings.namespace, settings.deployment, settings.kube_api_url)
    stub = buffer_pb2_grpc.BufferServiceStub(create_channel(settings.buffer_address, settings.grpc, settings.security))
    scaler = Autoscaler(policy_of(settings))
    log.info("autoscaler started", deployment=settings.deployment, namespace=settings.namespace,
             min_replicas=settings.min_replicas, max_replicas=settings.max_replicas)
    while not stop.is_set():
        try:
            step(scaler, kube, observe(stub), time.monotonic())
        except grpc.RpcError as e:
            _ERRORS.labels("buffer").inc()
            log.warning("buffer stats unavailable, no change", code=e.code().name, buffer_address=settings.buffer_address)
        except ScaleError as e:
            _ERRORS.labels("kubernetes").inc()
            log.warning("scale call failed, no change", error=str(e))
        stop.wait(settings.interval_s)
    log.info("autoscaler stopped")
    return 0
