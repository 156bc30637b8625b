"""Buffer fixtures: a core `Buffer` and an in-process gRPC buffer service over a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from services.buffer.config import BufferConfig
from services.buffer.core import Buffer
from services.buffer.server import build_server
from shared.config import SecurityConfig
from shared.grpc_client import create_channel, wait_serving

TOKEN = "buffer-test-token"


def make_config(redis_server, **overrides) -> BufferConfig:
    base = {"port": 0, "metrics_port": 0, "redis": {"url": redis_server.url, "password": redis_server.password}}
    return BufferConfig(**{**base, **overrides})


def prompt(i: int) -> common_pb2.Prompt:
    return common_pb2.Prompt(prompt_id=f"train:0:{i}", messages_json='[{"role": "user", "content": "1+1?"}]',
                             answer="2", cursor=i)


def enqueue(buf: Buffer, start: int, n: int) -> buffer_pb2.EnqueuePromptsResponse:
    req = buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(i) for i in range(start, start + n)],
                                           cursor_start=start, cursor_end=start + n)
    return buf.enqueue_prompts(req)


def group_for(claim: buffer_pb2.ClaimedPrompt, accuracies=(0.0, 1.0), version: int = 0,
              tokens: int = 4) -> buffer_pb2.TrajectoryGroup:
    pid = claim.prompt.prompt_id
    samples = [buffer_pb2.Sample(response_token_ids=list(range(tokens)), behaviour_logprobs=[-0.5] * tokens,
                                 response_text="<think>x</think><answer>2</answer>", reward=a, accuracy=a,
                                 format=1.0, finish_reason="stop") for a in accuracies]
    return buffer_pb2.TrajectoryGroup(group_id=f"{pid}#{claim.attempt}", prompt_id=pid, attempt=claim.attempt,
                                      prompt=claim.prompt, prompt_token_ids=[1, 2, 3], samples=samples,
                                      policy_version=version, worker_id="w1", created_unix=1.0)


def put(buf: Buffer, claim: buffer_pb2.ClaimedPrompt, **kw) -> buffer_pb2.PutGroupResponse:
    return buf.put_group(buffer_pb2.PutGroupRequest(group=group_for(claim, **kw), claim_id=claim.claim_id, worker_id="w1"))


def claim(buf: Buffer, worker: str = "w1", n: int = 1, wait_ms: int = 0) -> list[buffer_pb2.ClaimedPrompt]:
    return list(buf.claim_prompts(buffer_pb2.ClaimPromptsRequest(worker_id=worker, max_prompts=n, wait_ms=wait_ms)).prompts)


def sample_req(n: int, **kw) -> buffer_pb2.SampleGroupsRequest:
    base = {"consumer": "learner", "num_groups": n, "policy_version": 0, "max_staleness": 4,
            "filter_low": 0.0, "filter_high": 1.0, "wait_ms": 0}
    return buffer_pb2.SampleGroupsRequest(**{**base, **kw})


@pytest.fixture
def buf(redis_server) -> Buffer:
    b = Buffer(make_config(redis_server))
    b.ensure_groups()
    return b


@pytest.fixture
def service(redis_server) -> Iterator[tuple[buffer_pb2_grpc.BufferServiceStub, int]]:
    """A gRPC stub (with the service token) to a buffer server running in this process, and its port."""
    cfg = make_config(redis_server, security={"service_token": TOKEN})
    server, _ = build_server(cfg)
    server.start()
    channel = create_channel(f"127.0.0.1:{server.port}", cfg.grpc, SecurityConfig(service_token=TOKEN))
    wait_serving(channel)
    yield buffer_pb2_grpc.BufferServiceStub(channel), server.port
    channel.close()
    server.stop(0)


@pytest.fixture
def stub(service) -> buffer_pb2_grpc.BufferServiceStub:
    return service[0]
