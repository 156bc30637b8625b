"""`eureka autoscaler run` as a real process: it reads a real buffer's backlog (`eureka buffer serve` over a real
redis-server, with the service token) and patches the scale of the rollout Deployment on the local API server."""

from __future__ import annotations

from pathlib import Path

from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from tests.autoscaler.scale_api import FakeApiServer
from tests.conftest import RedisProc, free_port
from tests.deploy.helpers import start_eureka, stop_process
from tests.waiting import wait_until

TOKEN = "autoscaler-test-token"


def test_autoscaler_scales_rollout_from_the_real_buffer_backlog(redis_server: RedisProc, api: FakeApiServer,
                                                                tmp_path: Path, clean_env: None) -> None:
    port = free_port()
    buffer = start_eureka(["buffer", "serve", "--port", str(port), "--metrics-port", "0",
                           "--redis.url", redis_server.url, "--redis.password", redis_server.password],
                          {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}, tmp_path / "buffer.log")
    scaler = None
    try:
        channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig(service_token=TOKEN))
        wait_serving(channel, timeout_s=60)
        prompts = [common_pb2.Prompt(prompt_id=f"train:0:{i}", messages_json='[{"role": "user", "content": "1+1?"}]',
                                     answer="2", cursor=i) for i in range(45)]
        buffer_pb2_grpc.BufferServiceStub(channel).EnqueuePrompts(
            buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=0, cursor_end=45))
        scaler = start_eureka(["autoscaler", "run"], {
            "EUREKA_SECURITY__SERVICE_TOKEN": TOKEN, "EUREKA_BUFFER_ADDRESS": f"127.0.0.1:{port}",
            "EUREKA_KUBE_API_URL": api.url, "EUREKA_NAMESPACE": "eureka", "EUREKA_DEPLOYMENT": "eureka-rollout",
            "EUREKA_TARGET_BACKLOG_PER_REPLICA": "10", "EUREKA_MAX_STEP_UP": "2", "EUREKA_INTERVAL_S": "0.2",
            "EUREKA_COOLDOWN_S": "0", "EUREKA_MAX_REPLICAS": "8"}, tmp_path / "autoscaler.log")
        # Backlog 45 at 10 per replica wants 5 replicas: 2 -> 4 -> 5 in steps of at most 2, then steady.
        def at_five() -> bool:
            assert scaler.poll() is None, (tmp_path / "autoscaler.log").read_text()
            return api.replicas[("eureka", "eureka-rollout")] == 5

        wait_until(at_five, 60, "5 replicas")
        patches = [r["body"]["spec"]["replicas"] for r in api.requests if r["verb"] == "patch"]
        assert patches[:2] == [4, 5]
        reads = len(api.requests)
        wait_until(lambda: len(api.requests) >= reads + 5, 30, "five more decisions (each reads the scale)")
        assert [r["body"]["spec"]["replicas"] for r in api.requests if r["verb"] == "patch"] == patches
        assert stop_process(scaler) == 0  # SIGTERM: clean stop
        assert "rollout scaled" in (tmp_path / "autoscaler.log").read_text()
    finally:
        if scaler is not None:
            stop_process(scaler)
        stop_process(buffer)
