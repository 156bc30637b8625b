"""`python tests/security/servers.py PORT`: the learner's WeightService and the rollout's RolloutService on one
real GrpcServer, registered with their own `add_*` functions and configured from `EUREKA_*` like a service.

Starting the real learner and rollout (DeepSpeed, a model) costs minutes on a CPU; what the security tests
check (token, TLS, request decoding) lives in `GrpcServer`, which every service shares, so this process
serves the same methods through the same server. The rollout servicer gets an idle worker that reports status.
"""

from __future__ import annotations

import sys

from eureka.v1 import rollout_pb2

from services.rollout.server import add_rollout_service
from shared.config import ServiceSettings
from shared.grpc_server import GrpcServer, stop_event_on_signals, wait_until_stopped
from shared.logs import setup_logging
from shared.weights import WeightStore, add_weight_service


class IdleWorker:
    """What RolloutServicer reads of a worker, for a worker that has nothing in flight."""

    worker_id = "security-test"
    released_total = 0

    def __init__(self) -> None:
        import threading

        self.stopped = threading.Event()

    def status(self) -> rollout_pb2.RolloutStatus:
        return rollout_pb2.RolloutStatus(worker_id=self.worker_id, state=rollout_pb2.WORKER_STATE_RUNNING)

    def drain(self, release_now: bool) -> None:
        self.stopped.set()


def main() -> int:
    port = int(sys.argv[1])
    cfg = ServiceSettings()
    log = setup_logging("learner")
    stop = stop_event_on_signals()
    store, worker = WeightStore(), IdleWorker()

    def add(server) -> list[str]:
        return [*add_weight_service(server, store), *add_rollout_service(server, worker, 1.0)]

    server = GrpcServer(add, host="127.0.0.1", port=port, grpc_cfg=cfg.grpc, security=cfg.security).start()
    log.info("serving", port=server.port)
    wait_until_stopped(stop)
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
