"""Hostile-input fixtures: a real `eureka reward serve` and `eureka buffer serve` (token on, over a real
redis-server), and the tally of generated inputs printed at the end of the run (the issue asks >= 10,000)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from eureka_cli.local.supervisor import Supervisor, eureka_argv
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.redis_proc import RedisProc, free_port, start_redis
from tests.security.conftest import base_env, reward_argv, wait_http

TOKEN = "hostile-test-token"
# Codes a hostile input may get: anything that says "your request" or "not now", never INTERNAL/UNKNOWN.
CLEAR_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
               grpc.StatusCode.DEADLINE_EXCEEDED}
TALLY: collections.Counter[str] = collections.Counter()  # endpoint -> generated inputs sent
OUTCOMES: collections.Counter[str] = collections.Counter()  # answer kind -> count (5xx / INTERNAL must stay 0)


def count(endpoint: str, n: int = 1) -> None:
    TALLY[endpoint] += n


def pytest_terminal_summary(terminalreporter) -> None:
    if TALLY:
        total = sum(TALLY.values())
        terminalreporter.write_line(f"hostile inputs: {total} generated ({dict(sorted(TALLY.items()))})")
        bad = sum(n for k, n in OUTCOMES.items() if "INTERNAL" in k or "UNKNOWN" in k or k.startswith("http 5"))
        terminalreporter.write_line(f"hostile answers: {dict(sorted(OUTCOMES.items()))}; 5xx/INTERNAL: {bad}")


@dataclass
class Procs:
    sup: Supervisor
    redis: RedisProc
    ports: dict[str, int]

    @property
    def reward_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['reward_http']}"

    def channel(self, name: str) -> grpc.Channel:
        return create_channel(f"127.0.0.1:{self.ports[name]}", GrpcConfig(deadline_s=30, retries=2),
                              SecurityConfig(service_token=TOKEN))

    def alive(self) -> bool:
        return all(m.alive for m in self.sup.procs.values())


@pytest.fixture(scope="session")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    run_dir = tmp_path_factory.mktemp("hostile-run")
    redis = start_redis(run_dir / "redis")
    sup = Supervisor(run_dir, base_env())
    ports = {n: free_port() for n in ("reward", "reward_http", "reward_metrics", "buffer")}
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}
    p = Procs(sup, redis, ports)
    try:
        sup.start("reward", reward_argv(ports, "--item-timeout-s", "2", "--workers", "2"), env)
        sup.start("buffer", eureka_argv("buffer", "serve", "--port", str(ports["buffer"]), "--metrics-port", "0",
                                        "--redis.url", redis.url, "--max-wait-ms", "20", "--lease-s", "3600",
                                        "--grpc.grace-s", "1"), {**env, "EUREKA_REDIS__PASSWORD": redis.password})
        wait_serving(p.channel("buffer"), timeout_s=60)
        wait_http(f"{p.reward_url}/readyz", sup.procs["reward"].proc)
        yield p
        for name, m in sup.procs.items():  # the services stayed up through everything
            assert m.alive, f"{name} died: {m.tail()}"
            assert "Traceback" not in m.log_path.read_text(errors="replace"), f"{name} logged a traceback: {m.tail(40)}"
    finally:
        sup.stop_all(grace_s=10)
        redis.stop()


def expect_clear(err: grpc.RpcError) -> None:
    """A refused hostile call: a clear status with a sentence, never INTERNAL / UNKNOWN / UNAVAILABLE."""
    OUTCOMES[f"grpc {err.code().name}"] += 1
    assert err.code() in CLEAR_CODES, (err.code(), err.details())
    assert err.details() and len(err.details()) > 10, err.details()


