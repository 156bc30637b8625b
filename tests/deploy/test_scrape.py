"""A real Prometheus scraping real `eureka reward serve` and `eureka buffer serve` processes answers every
dashboard panel query that is about those two services with data (the full run of every service is the slow
`eureka up` test in test_dashboards.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, reward_pb2, reward_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from tests.conftest import RedisProc, free_port
from tests.deploy.helpers import dashboard_exprs, start_eureka, stop_process
from tests.deploy.prom import prometheus, query

TOKEN = "scrape-test-token"


@pytest.fixture
def services(redis_server: RedisProc, tmp_path: Path, clean_env: None) -> Iterator[dict[str, int]]:
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}
    ports = {name: free_port() for name in ("reward_grpc", "reward_http", "reward_metrics", "buffer", "buffer_metrics")}
    procs = [
        start_eureka(["reward", "serve", "--grpc-port", str(ports["reward_grpc"]),
                      "--http-port", str(ports["reward_http"]), "--metrics-port", str(ports["reward_metrics"]),
                      "--workers", "1"], env, tmp_path / "reward.log"),
        start_eureka(["buffer", "serve", "--port", str(ports["buffer"]), "--metrics-port", str(ports["buffer_metrics"]),
                      "--stats-refresh-s", "0.5", "--redis.url", redis_server.url,
                      "--redis.password", redis_server.password], env, tmp_path / "buffer.log"),
    ]
    try:
        yield ports
    finally:
        for p in procs:
            stop_process(p)


def _metric_services(expr: str) -> set[str]:
    return {m.split("_")[1] for m in re.findall(r"\beureka_[a-z0-9_]+", expr)}


def test_reward_and_buffer_panels_return_data_from_a_real_scrape(services: dict[str, int], tmp_path: Path) -> None:
    cfg, sec = GrpcConfig(), SecurityConfig(service_token=TOKEN)
    reward = create_channel(f"127.0.0.1:{services['reward_grpc']}", cfg, sec)
    buffer = create_channel(f"127.0.0.1:{services['buffer']}", cfg, sec)
    wait_serving(reward, timeout_s=60)
    wait_serving(buffer, timeout_s=60)
    targets = {"eureka-reward": [f"127.0.0.1:{services['reward_metrics']}"],
               "eureka-buffer": [f"127.0.0.1:{services['buffer_metrics']}"]}
    panels = [(n, t, e) for n, t, e in dashboard_exprs()
              if _metric_services(e) and _metric_services(e) <= {"reward", "buffer"}]
    assert len(panels) >= 10
    with prometheus(tmp_path / "prom", targets, interval="500ms") as url:
        items = [reward_pb2.VerifyItem(response="<think>1+1</think><answer>2</answer>", gold="2", item_id="a"),
                 reward_pb2.VerifyItem(response="<answer>3</answer>", gold="2", item_id="b")]
        prompts = [common_pb2.Prompt(prompt_id=f"train:0:{i}", messages_json='[{"role": "user", "content": "1+1?"}]',
                                     answer="2", cursor=i) for i in range(5)]
        buffer_pb2_grpc.BufferServiceStub(buffer).EnqueuePrompts(
            buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=0, cursor_end=5))
        deadline = time.monotonic() + 60
        while True:
            reward_pb2_grpc.RewardServiceStub(reward).Verify(reward_pb2.VerifyRequest(items=items))
            answers = {(n, t, e): query(url, e) for n, t, e in panels}
            empty = [f"{n} / {t}: {e} -> {a.get('error') or 'no data'}" for (n, t, e), a in answers.items()
                     if a["status"] != "success" or not a["data"]["result"]]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not empty, "\n".join(empty)
        backlog = query(url, "sum(eureka_buffer_prompt_backlog)")["data"]["result"][0]["value"][1]
        assert float(backlog) == 5
