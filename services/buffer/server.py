"""`eureka buffer serve`: a thin gRPC servicer over `core.Buffer`, metrics refreshed from Redis, graceful stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import grpc
import redis
from eureka.v1 import buffer_pb2, buffer_pb2_grpc

from services.buffer import put_wire
from services.buffer.config import BufferConfig
from services.buffer.core import COUNTERS, Buffer
from shared import metrics
from shared.grpc_server import (
    GrpcServer,
    ServiceError,
    add_raw_bytes_service,
    map_errors,
    stop_event_on_signals,
    wait_until_stopped,
)
from shared.logs import get_logger, setup_logging
from shared.malloc import reuse_freed_memory

log = get_logger("buffer")


class BufferServicer(buffer_pb2_grpc.BufferServiceServicer):
    """Converts messages and calls the core; errors become statuses in `map_errors`."""

    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer

    @map_errors
    def EnqueuePrompts(self, request, context):  # noqa: N802 - gRPC names
        return self.buffer.enqueue_prompts(request)

    @map_errors
    def GetCursor(self, request, context):  # noqa: N802
        return buffer_pb2.GetCursorResponse(cursor=self.buffer.get_cursor())

    @map_errors
    def ClaimPrompts(self, request, context):  # noqa: N802
        return self.buffer.claim_prompts(request)

    @map_errors
    def ReleasePrompts(self, request, context):  # noqa: N802
        return buffer_pb2.ReleasePromptsResponse(released=self.buffer.release_prompts(request))

    @map_errors
    def PutGroup(self, request, context):  # noqa: N802
        return self.buffer.put_group(request)

    @map_errors
    def PutGroups(self, request, context):  # noqa: N802 - takes (message, wire bytes), see `add_buffer_service`
        message, raw = request
        return self.buffer.put_groups(message, put_wire.read(raw, message))

    @map_errors
    def SampleGroups(self, request, context):  # noqa: N802 - answers wire bytes, see `add_buffer_service`
        return self.buffer.sample(request).wire()

    @map_errors
    def AckGroups(self, request, context):  # noqa: N802
        return buffer_pb2.AckGroupsResponse(acked=self.buffer.ack_groups(request))

    @map_errors
    def GetStats(self, request, context):  # noqa: N802
        return self.buffer.stats()


class StatsMetrics:
    """Prometheus view of `BufferStats`: gauges set and counters advanced from the values kept in Redis."""

    _GAUGES = {
        "prompt_backlog": "eureka_buffer_prompt_backlog",
        "prompts_pending": "eureka_buffer_prompts_pending",
        "groups_ready": "eureka_buffer_groups_ready",
        "groups_pending": "eureka_buffer_groups_pending",
        "redis_used_memory_bytes": "eureka_buffer_redis_used_memory_bytes",
        "redis_maxmemory_bytes": "eureka_buffer_redis_maxmemory_bytes",
    }

    def __init__(self) -> None:
        self.gauges = {f: metrics.gauge(n, f.replace("_", " ")) for f, n in self._GAUGES.items()}
        self.counters = {f: metrics.counter(f"eureka_buffer_{f}", f.replace("_", " ")) for f in COUNTERS}
        self.up = metrics.gauge("eureka_buffer_redis_up", "1 when the last refresh reached Redis")
        self.seen = dict.fromkeys(COUNTERS, 0)

    def update(self, stats: buffer_pb2.BufferStats) -> None:
        for field, g in self.gauges.items():
            g.set(getattr(stats, field))
        for field, c in self.counters.items():
            value = getattr(stats, field)
            if value > self.seen[field]:  # Redis holds the truth; a process restart catches up at once
                c.inc(value - self.seen[field])
            self.seen[field] = value

    def run(self, buffer: Buffer, every_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.update(buffer.stats())
                self.up.set(1)
            except (ServiceError, redis.RedisError) as e:
                self.up.set(0)
                log.warning("metrics refresh failed", error=str(e))
            stop.wait(every_s)


def start_embedded_redis(cfg: BufferConfig):
    """Starts redis-server (AOF) on the URL's port when `redis.embedded_dir` is set."""
    from shared.redis_proc import start_redis

    if cfg.redis.password is None:
        raise ValueError("redis.embedded_dir needs redis.password: an embedded Redis always has a password")
    url = urlparse(cfg.redis.url)
    return start_redis(Path(cfg.redis.embedded_dir), port=url.port or 6379, password=cfg.redis.password.get_secret_value(),
                       fsync=cfg.redis.appendfsync, maxmemory_bytes=cfg.redis.maxmemory_bytes, host=url.hostname or "127.0.0.1")


def _parse_keeping_wire(raw: bytes) -> tuple[buffer_pb2.PutGroupsRequest, bytes]:
    return buffer_pb2.PutGroupsRequest.FromString(raw), raw


def add_buffer_service(server: grpc.Server, servicer: BufferServicer) -> list[str]:
    """Registers the servicer; SampleGroups answers ready wire bytes and PutGroups gets its request's wire
    bytes beside the message."""
    service = buffer_pb2.DESCRIPTOR.services_by_name["BufferService"]
    return add_raw_bytes_service(server, service, servicer, request_parsers={"PutGroups": _parse_keeping_wire})


def build_server(cfg: BufferConfig) -> tuple[GrpcServer, Buffer]:
    buffer = Buffer(cfg)
    buffer.ensure_groups()

    server = GrpcServer(lambda s: add_buffer_service(s, BufferServicer(buffer)), host=cfg.host, port=cfg.port, grpc_cfg=cfg.grpc, security=cfg.security)
    return server, buffer


def _connect(cfg: BufferConfig, stop: threading.Event, timeout_s: float = 60.0) -> tuple[GrpcServer, Buffer]:
    """Builds the server once Redis answers (it may still be loading its AOF after a restart)."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            return build_server(cfg)
        except Exception as e:  # noqa: BLE001 - redis errors of any kind while Redis starts
            if time.monotonic() > end or stop.is_set():
                raise
            log.warning("waiting for redis", redis=_where(cfg.redis.url), error=type(e).__name__)
            time.sleep(0.5)


def _where(url: str) -> str:
    """host:port of a Redis URL, without any credentials it may carry."""
    u = urlparse(url)
    return f"{u.hostname}:{u.port or 6379}"


def main(cfg: BufferConfig) -> int:
    setup_logging("buffer")
    reuse_freed_memory()  # put and sample messages of hundreds of KB
    stop = stop_event_on_signals()
    embedded = start_embedded_redis(cfg) if cfg.redis.embedded_dir else None
    try:
        server, buffer = _connect(cfg, stop)
        metrics.serve_metrics(cfg.metrics_port)
        refresher = StatsMetrics()
        threading.Thread(target=refresher.run, args=(buffer, cfg.stats_refresh_s, stop), daemon=True).start()
        server.start()
        log.info("buffer serving", port=server.port, redis=_where(cfg.redis.url), lease_s=cfg.lease_s,
                 max_backlog=cfg.max_backlog, embedded_redis=embedded is not None)
        wait_until_stopped(stop)
        server.stop()
        log.info("buffer stopped")
        return 0
    finally:
        if embedded is not None:
            embedded.stop()
