"""`eureka rollout serve`: the worker thread plus a small status server (RolloutService + health).

Health answers SERVING once the first weights are loaded and the worker claims. SIGTERM: stop
claiming, finish the batch in flight (or release it after `drain_timeout_s`), exit 0; while the backend is still
loading (a vLLM engine start), exit 0 at once: nothing is claimed yet. The Drain RPC
releases the batch in flight at once and answers how many prompts it handed back; the process then
exits 0. A `kill -9` loses nothing: the buffer reclaims the claims after their lease.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

import grpc
from eureka.v1 import rollout_pb2, rollout_pb2_grpc

from services.rollout.config import RolloutConfig
from services.rollout.core import Worker
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer, map_errors, stop_event_on_signals
from shared.logs import EventLogger, setup_logging
from shared.malloc import reuse_freed_memory
from shared.metrics import serve_metrics


class RolloutServicer(rollout_pb2_grpc.RolloutServiceServicer):
    """GetStatus and Drain over a Worker."""

    def __init__(self, worker: Worker, drain_timeout_s: float) -> None:
        self.worker = worker
        self.drain_timeout_s = drain_timeout_s

    @map_errors
    def GetStatus(self, request, context):  # noqa: N802
        return self.worker.status()

    @map_errors
    def Drain(self, request, context):  # noqa: N802
        before = self.worker.released_total
        self.worker.drain(release_now=True)
        self.worker.stopped.wait(self.drain_timeout_s)
        return rollout_pb2.DrainResponse(released=self.worker.released_total - before)


def add_rollout_service(server: grpc.Server, worker: Worker, drain_timeout_s: float) -> list[str]:
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(RolloutServicer(worker, drain_timeout_s), server)
    return [rollout_pb2.DESCRIPTOR.services_by_name["RolloutService"].full_name]


def build_worker(cfg: RolloutConfig) -> Worker:
    """Load the backend and connect to the buffer, reward and weight services."""
    from services.rollout.backends import make_backend

    import torch

    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    if cfg.model_path is not None:
        model_path = cfg.model_path
    else:
        from shared.model.cache import ensure_base_model

        model_path = ensure_base_model()
    backend = make_backend(cfg, str(model_path))
    channels = [create_channel(t, cfg.grpc, cfg.security) for t in (cfg.buffer_address, cfg.reward_address, cfg.learner_address)]
    worker_id = cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    return Worker(cfg, backend, *channels, worker_id=worker_id)


def _exit_on_signals_while_starting(log: EventLogger) -> None:
    """Until the worker is built, SIGTERM or SIGINT ends the process at once with code 0: it holds no claim and has
    put nothing, and loading a backend (a vLLM engine start) can outlast a pod's grace period."""

    def _exit(signum: int, frame: object) -> None:
        log.info("signal received while starting: nothing claimed, exiting", signal=signal.Signals(signum).name)
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)


def main(cfg: RolloutConfig) -> int:
    log = setup_logging("rollout")
    reuse_freed_memory()  # weight pulls in 4 MiB chunks, group batches of hundreds of KB
    _exit_on_signals_while_starting(log)
    log.info("rollout starting: loading the backend", backend=cfg.backend)
    worker = build_worker(cfg)
    stop = stop_event_on_signals()  # from here a SIGTERM drains the worker
    serve_metrics(cfg.metrics_port, host=cfg.host)
    server = GrpcServer(
        lambda s: add_rollout_service(s, worker, cfg.drain_timeout_s),
        host=cfg.host, port=cfg.port, grpc_cfg=cfg.grpc, security=cfg.security,
    ).start()
    server.set_serving(False)
    log.info("rollout status server listening", port=server.port, worker_id=worker.worker_id, backend=cfg.backend)
    thread = threading.Thread(target=worker.run, name="rollout-worker", daemon=True)
    thread.start()
    serving = False
    abort_timer: threading.Timer | None = None
    while not worker.stopped.wait(0.2):
        if stop.is_set() and abort_timer is None:
            log.info("draining: finishing the batch in flight", timeout_s=cfg.drain_timeout_s)
            worker.drain(release_now=False)
            abort_timer = threading.Timer(cfg.drain_timeout_s, worker.abort.set)
            abort_timer.daemon = True
            abort_timer.start()
        if not serving and worker.state == rollout_pb2.WORKER_STATE_RUNNING:
            server.set_serving(True)
            serving = True
    thread.join()
    if abort_timer is not None:
        abort_timer.cancel()
    server.stop(grace=1.0)
    log.info("rollout exited", worker_id=worker.worker_id, groups_done=worker.groups_done, failed=worker.failed)
    return 1 if worker.failed else 0
