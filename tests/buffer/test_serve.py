"""`eureka buffer serve` as a real process with its embedded Redis: counters and cursor survive restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from eureka.v1 import buffer_pb2, buffer_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.redis_proc import free_port

from .conftest import group_for, prompt


def _serve(tmp: Path, port: int, redis_port: int) -> subprocess.Popen:
    env = {**os.environ, "EUREKA_REDIS__PASSWORD": "serve-pw"}
    args = [str(Path(sys.executable).with_name("eureka")), "buffer", "serve", "--port", str(port), "--metrics-port", "0",
            "--redis.url", f"redis://127.0.0.1:{redis_port}/0", "--redis.embedded-dir", str(tmp / "redis"),
            "--redis.appendfsync", "always"]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)


def _stub(port: int) -> buffer_pb2_grpc.BufferServiceStub:
    channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig())
    wait_serving(channel, timeout_s=60)
    return buffer_pb2_grpc.BufferServiceStub(channel)


def test_serve_with_embedded_redis_keeps_cursor_and_counters_across_restarts(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    proc = _serve(tmp_path, port, redis_port)
    try:
        stub = _stub(port)
        stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(0), prompt(1)], cursor_start=0, cursor_end=2))
        c = stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w1", max_prompts=1)).prompts[0]
        stub.PutGroup(buffer_pb2.PutGroupRequest(group=group_for(c), claim_id=c.claim_id, worker_id="w1"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "buffer stopped" in err and "serve-pw" not in err
    proc = _serve(tmp_path, port, redis_port)  # buffer and its Redis come back from the AOF
    try:
        s = _stub(port).GetStats(buffer_pb2.GetStatsRequest())
        assert (s.cursor, s.prompt_backlog, s.groups_put_total, s.groups_ready) == (2, 1, 1, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
