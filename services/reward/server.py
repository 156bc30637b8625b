"""`eureka reward serve`: the worker pool, the gRPC `RewardService`, and the HTTP app in one process.

On SIGTERM/SIGINT: readiness goes false (gRPC health NOT_SERVING, /readyz 503), in-flight calls finish
within the grace period, then the HTTP server and the worker processes stop.
"""

from __future__ import annotations

import threading
import time

import grpc

from eureka.v1 import reward_pb2, reward_pb2_grpc
from services.reward.config import RewardConfig
from services.reward.core import INSTRUCT, PRETRAINED, Status
from services.reward.http_app import create_app
from services.reward.pool import PoolBusy, PoolClosed, WorkerPool
from services.reward.scoring import BadRequest, Item, Result, Scorer
from shared.grpc_server import (
    GrpcServer,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    map_errors,
    stop_event_on_signals,
    wait_until_stopped,
)
from shared.logs import setup_logging
from shared.metrics import serve_metrics

_MODES = {reward_pb2.REWARD_MODE_UNSPECIFIED: INSTRUCT, reward_pb2.REWARD_MODE_INSTRUCT: INSTRUCT,
          reward_pb2.REWARD_MODE_PRETRAINED: PRETRAINED}
_STATUS = {Status.OK: reward_pb2.ITEM_STATUS_OK, Status.GOLD_UNPARSEABLE: reward_pb2.ITEM_STATUS_GOLD_UNPARSEABLE,
           Status.TIMEOUT: reward_pb2.ITEM_STATUS_TIMEOUT, Status.INVALID: reward_pb2.ITEM_STATUS_INVALID}


def _item(i: int, msg: reward_pb2.VerifyItem) -> Item:
    if msg.mode not in _MODES:
        raise InvalidArgument(f"item {i}: mode {msg.mode} is not a RewardMode; use REWARD_MODE_INSTRUCT or _PRETRAINED")
    return Item(msg.response, msg.gold, _MODES[msg.mode], tuple(msg.options), msg.item_id)


def _result(r: Result) -> reward_pb2.VerifyResult:
    return reward_pb2.VerifyResult(item_id=r.item_id, accuracy=r.accuracy, format=r.format, total=r.total,
                                   extracted=r.extracted, status=_STATUS[r.status], detail=r.detail)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    """Thin: converts messages, calls the scorer, maps its errors to status codes."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    @map_errors
    def Verify(self, request: reward_pb2.VerifyRequest, context: grpc.ServicerContext) -> reward_pb2.VerifyResponse:
        items = [_item(i, m) for i, m in enumerate(request.items)]
        weight = request.format_weight if request.HasField("format_weight") else None
        try:
            results = self.scorer.score(items, weight, door="grpc")
        except BadRequest as e:
            raise InvalidArgument(str(e)) from e
        except PoolBusy as e:
            raise ResourceExhausted(str(e)) from e
        except PoolClosed as e:
            raise Unavailable(str(e)) from e
        return reward_pb2.VerifyResponse(results=[_result(r) for r in results])


def _add_servicers(scorer: Scorer):
    def add(server: grpc.Server) -> list[str]:
        reward_pb2_grpc.add_RewardServiceServicer_to_server(RewardServicer(scorer), server)
        return [reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name]

    return add


def _http_server(cfg: RewardConfig, scorer: Scorer, is_ready) -> "uvicorn.Server":  # noqa: F821
    import uvicorn

    tls = cfg.security
    config = uvicorn.Config(
        create_app(cfg, scorer, is_ready), host=cfg.host, port=cfg.http_port, log_level="warning",
        access_log=False, ssl_certfile=str(tls.tls_cert) if tls.tls_cert else None,
        ssl_keyfile=str(tls.tls_key) if tls.tls_key else None,
    )
    return uvicorn.Server(config)


def main(cfg: RewardConfig) -> int:
    log = setup_logging("reward")
    stop = stop_event_on_signals()
    pool = WorkerPool(cfg).start()
    if not pool.all_started():
        log.error("scoring workers did not start", workers=cfg.workers)
        pool.close()
        return 1
    scorer = Scorer(cfg, pool)
    stopping = threading.Event()
    grpc_server = GrpcServer(
        _add_servicers(scorer), host=cfg.host, port=cfg.grpc_port, grpc_cfg=cfg.grpc, security=cfg.security,
    ).start()
    http = _http_server(cfg, scorer, lambda: pool.ready() and not stopping.is_set())
    http_thread = threading.Thread(target=http.run, name="reward-http", daemon=True)
    http_thread.start()
    while not http.started and http_thread.is_alive():
        time.sleep(0.05)
    if not http.started:
        log.error("HTTP server did not start; is the port in use?", http_port=cfg.http_port)
        grpc_server.stop(0)
        pool.close()
        return 1
    serve_metrics(cfg.metrics_port, cfg.host)
    log.info("serving", grpc_port=grpc_server.port, http_port=cfg.http_port, metrics_port=cfg.metrics_port,
             workers=cfg.workers, item_timeout_s=cfg.item_timeout_s)
    wait_until_stopped(stop)
    stopping.set()
    grpc_server.stop()
    http.should_exit = True
    http_thread.join(timeout=cfg.grpc.grace_s + 5)
    pool.close()
    log.info("stopped")
    return 0
