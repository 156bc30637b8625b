"""A real token-protected stack for the security tests: redis-server (password), `eureka reward serve`,
`eureka buffer serve`, and the weight + rollout services (servers.py), started the way `eureka up` starts
them (the Supervisor, secrets in the environment, logs under `<run>/logs/`), and a self-signed certificate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from eureka_cli.local.supervisor import Supervisor, eureka_argv
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.redis_proc import RedisProc, free_port, start_redis

TOKEN = "QzTkWmXvRbNpLhJg7s"
REDIS_PASSWORD = "PwYuKoZiMxVcBn3q"
SECRETS = (TOKEN, REDIS_PASSWORD)
# Every 6-character piece of a secret: a shortened echo ('QzTkWm...Jg7s', as pydantic prints inputs) counts too.
FRAGMENTS = tuple({s[i : i + 6] for s in SECRETS for i in range(len(s) - 5)})
SERVERS = Path(__file__).with_name("servers.py")


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EUREKA_")}


@dataclass
class Stack:
    run_dir: Path
    sup: Supervisor
    redis: RedisProc
    ports: dict[str, int]

    def grpc_targets(self) -> dict[str, str]:
        return {name: f"127.0.0.1:{self.ports[name]}" for name in ("reward", "buffer", "status")}

    @property
    def reward_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['reward_http']}"

    def channel(self, name: str, token: str | None = TOKEN) -> grpc.Channel:
        return create_channel(self.grpc_targets()[name], GrpcConfig(deadline_s=10), SecurityConfig(service_token=token))


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 90, **kw) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, **kw).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def reward_argv(ports: dict[str, int], *extra: str) -> list[str]:
    return eureka_argv("reward", "serve", "--grpc-port", str(ports["reward"]), "--http-port", str(ports["reward_http"]),
                       "--metrics-port", str(ports["reward_metrics"]), "--workers", "1", "--grpc.grace-s", "1", *extra)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("secure-run")
    redis = start_redis(run_dir / "redis", password=REDIS_PASSWORD)
    sup = Supervisor(run_dir, base_env())
    names = ("reward", "reward_http", "reward_metrics", "buffer", "buffer_metrics", "status")
    ports = {n: free_port() for n in names}
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}
    st = Stack(run_dir, sup, redis, ports)
    try:
        sup.start("reward", reward_argv(ports), env)
        sup.start("buffer", eureka_argv("buffer", "serve", "--port", str(ports["buffer"]), "--metrics-port",
                                        str(ports["buffer_metrics"]), "--redis.url", redis.url, "--grpc.grace-s", "1"),
                  {**env, "EUREKA_REDIS__PASSWORD": REDIS_PASSWORD})
        sup.start("status", [sys.executable, str(SERVERS), str(ports["status"])], env)
        for name in ("buffer", "status"):
            wait_serving(st.channel(name), timeout_s=60)
        wait_http(f"{st.reward_url}/readyz", sup.procs["reward"].proc)
        yield st
    finally:
        sup.stop_all(grace_s=10)
        redis.stop()


@dataclass
class Cert:
    cert: Path
    key: Path

    @property
    def ca(self) -> Path:  # self-signed: the certificate is its own CA
        return self.cert


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A fresh self-signed certificate for localhost / 127.0.0.1 (openssl CLI; `cryptography` is not installed)."""
    d = tmp_path_factory.mktemp("tls")
    c = Cert(d / "cert.pem", d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(c.key), "-out", str(c.cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return c
