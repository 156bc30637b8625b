"""A real `eureka reward serve` process on free loopback ports (token on), shared by the reward tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from eureka.v1 import reward_pb2_grpc
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from tests.conftest import free_port

TOKEN = "reward-test-token"
ITEM_TIMEOUT_S = 4.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RewardProc:
    proc: subprocess.Popen
    grpc_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stub(self, token: str | None = TOKEN) -> reward_pb2_grpc.RewardServiceStub:
        security = SecurityConfig(service_token=token)
        return reward_pb2_grpc.RewardServiceStub(create_channel(f"127.0.0.1:{self.grpc_port}", GrpcConfig(), security))

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def start_reward(*extra: str, token: str | None = TOKEN, log: Path | None = None) -> RewardProc:
    """A reward server process; its output goes to `log` when given."""
    grpc_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUREKA_")}
    if token is not None:
        env["EUREKA_SECURITY__SERVICE_TOKEN"] = token
    cmd = [sys.executable, "-m", "eureka_cli", "reward", "serve", "--grpc-port", str(grpc_port),
           "--http-port", str(http_port), "--metrics-port", "0", "--workers", "2",
           "--item-timeout-s", str(ITEM_TIMEOUT_S), "--grpc.grace-s", "1", *extra]
    out = log.open("ab") if log is not None else None
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    if out is not None:
        out.close()  # the child holds its own descriptor
    r = RewardProc(proc, grpc_port, http_port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"reward server exited with {proc.returncode}")
        try:
            if httpx.get(f"{r.url}/readyz", timeout=1).status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_reward(r)
    raise RuntimeError("reward server not ready after 90 s")


def stop_reward(r: RewardProc) -> int:
    if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
    return r.proc.returncode


@pytest.fixture(scope="session")
def reward_server() -> Iterator[RewardProc]:
    r = start_reward()
    yield r
    stop_reward(r)
