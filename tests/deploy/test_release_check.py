"""deploy/release_check.py (the `helm test` hook) against a real `eureka reward serve` and a second gRPC server:
it passes on a healthy release and fails on a wrong token or a server that is not serving."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.grpc_server import GrpcServer
from tests.conftest import free_port
from tests.deploy.helpers import REPO
from tests.deploy.helpers import start_eureka, stop_process

SCRIPT = REPO / "deploy" / "release_check.py"
TOKEN = "release-check-token"


@pytest.fixture(scope="module")
def reward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    proc = start_eureka(["reward", "serve", "--grpc-port", str(port), "--http-port", str(free_port()),
                         "--metrics-port", "0", "--workers", "1"],
                        {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}, tmp_path_factory.mktemp("reward") / "reward.log")
    try:
        wait_serving(create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig()), timeout_s=90)
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
def other() -> Iterator[GrpcServer]:
    server = GrpcServer(lambda s: [], host="127.0.0.1", port=free_port(), grpc_cfg=GrpcConfig(grace_s=0),
                        security=SecurityConfig(service_token=TOKEN)).start()
    yield server
    server.stop(0)


def check(reward_port: int, other_port: int, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EUREKA_SECURITY__SERVICE_TOKEN": token}
    return subprocess.run([sys.executable, str(SCRIPT), "--health", f"reward=127.0.0.1:{reward_port}",
                           "--health", f"buffer=127.0.0.1:{other_port}", "--reward", f"127.0.0.1:{reward_port}"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_healthy_release_passes(reward: int, other: GrpcServer) -> None:
    out = check(reward, other.port, TOKEN)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"reward Verify 127.0.0.1:{reward}: scored 1" in out.stdout and "buffer" in out.stdout


def test_a_wrong_token_fails_the_reward_call(reward: int, other: GrpcServer) -> None:
    out = check(reward, other.port, "wrong")
    assert out.returncode == 1 and "Verify failed: UNAUTHENTICATED" in out.stdout


def test_a_service_not_serving_fails(reward: int, other: GrpcServer) -> None:
    other.set_serving(False)
    out = check(reward, other.port, TOKEN)
    assert out.returncode == 1 and "NOT_SERVING" in out.stdout
