"""The gRPC edge: validation (INVALID_ARGUMENT, nothing changed), token, status codes, stats and metrics."""

from __future__ import annotations

import grpc
import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc
from prometheus_client import REGISTRY

from services.buffer.server import StatsMetrics
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel

from .conftest import group_for, prompt, sample_req


def _code(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(request)
    return e.value.code(), e.value.details()


def _snapshot(redis_server) -> dict:
    r = redis_server.client()
    return {k: (r.type(k), r.xlen(k) if r.type(k) == b"stream" else r.dump(k)) for k in sorted(r.keys("*"))}


def _setup(stub) -> buffer_pb2.ClaimedPrompt:
    stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(0), prompt(1)], cursor_start=0, cursor_end=2))
    return stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w1", max_prompts=1)).prompts[0]


def _bad_puts(c: buffer_pb2.ClaimedPrompt) -> list[tuple[str, buffer_pb2.PutGroupRequest]]:
    def req(**mutate) -> buffer_pb2.PutGroupRequest:
        r = buffer_pb2.PutGroupRequest(group=group_for(c), claim_id=c.claim_id, worker_id="w1")
        for path, value in mutate.items():
            if path == "claim_id":
                r.claim_id = value
            elif path == "worker_id":
                r.worker_id = value
            elif path == "sample0":
                value(r.group.samples[0])
            elif isinstance(value, list):
                r.group.ClearField(path)
                getattr(r.group, path).extend(value)
            else:
                setattr(r.group, path, value)
        return r

    return [
        ("one per token", req(sample0=lambda s: s.behaviour_logprobs.append(-1.0))),
        ("accuracy", req(sample0=lambda s: setattr(s, "accuracy", 1.5))),
        ("finish_reason", req(sample0=lambda s: setattr(s, "finish_reason", "tired"))),
        ("not finite", req(sample0=lambda s: s.behaviour_logprobs.__setitem__(0, float("nan")))),
        ("negative token id", req(sample0=lambda s: s.response_token_ids.__setitem__(0, -3))),
        ("prompt_id#attempt", req(group_id="other#1")),
        ("no samples", req(samples=[])),
        ("worker_id is empty", req(worker_id="")),
        ("not a stream entry id", req(claim_id="abc")),
        ("prompt_token_ids", req(prompt_token_ids=[])),
    ]


def test_invalid_requests_are_refused_with_a_sentence_and_change_nothing(stub, redis_server) -> None:
    c = _setup(stub)
    before = _snapshot(redis_server)
    for expected, request in _bad_puts(c):
        code, details = _code(stub.PutGroup, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in details, (expected, details)
    good = buffer_pb2.PutGroupRequest(group=group_for(c), claim_id=c.claim_id, worker_id="w1")
    for expected, request in _bad_puts(c)[:3]:  # a batch with one bad put is refused whole, naming the put
        code, details = _code(stub.PutGroups, buffer_pb2.PutGroupsRequest(puts=[good, request]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("puts[1]: ") and expected in details
    code, details = _code(stub.PutGroups, buffer_pb2.PutGroupsRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "len(puts) is 0" in details
    bad_enqueues = [
        buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(2)], cursor_start=3, cursor_end=3),
        buffer_pb2.EnqueuePromptsRequest(prompts=[], cursor_start=2, cursor_end=3),
        buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(2), prompt(2)], cursor_start=2, cursor_end=4),
        buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(9)], cursor_start=2, cursor_end=3),
    ]
    for request in bad_enqueues:
        assert _code(stub.EnqueuePrompts, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    for request in (sample_req(0), sample_req(1, filter_low=0.9, filter_high=0.1), sample_req(1, consumer=""),
                    sample_req(1, after_entry_id="x"), sample_req(1, wait_ms=10**9)):
        assert _code(stub.SampleGroups, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(stub.AckGroups, buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=["1-0", "nope"]))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT)
    assert _code(stub.ClaimPrompts, buffer_pb2.ClaimPromptsRequest(worker_id="w1", max_prompts=0))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT)
    assert _snapshot(redis_server) == before


def test_status_codes_and_stats_over_grpc(stub) -> None:
    c = _setup(stub)
    put = buffer_pb2.PutGroupRequest(group=group_for(c), claim_id=c.claim_id, worker_id="w1")
    first = stub.PutGroup(put)
    assert stub.PutGroup(put) == buffer_pb2.PutGroupResponse(entry_id=first.entry_id, duplicate=True)
    code, details = _code(stub.EnqueuePrompts, buffer_pb2.EnqueuePromptsRequest(prompts=[prompt(5)], cursor_start=5, cursor_end=6))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "GetCursor" in details
    assert stub.GetCursor(buffer_pb2.GetCursorRequest()).cursor == 2
    assert _code(stub.SampleGroups, sample_req(2, wait_ms=50))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    got = stub.SampleGroups(sample_req(1))
    assert got.groups[0].entry_id == first.entry_id
    assert stub.AckGroups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=[first.entry_id])).acked == 1
    s = stub.GetStats(buffer_pb2.GetStatsRequest())
    assert (s.cursor, s.prompt_backlog, s.groups_put_total, s.groups_duplicate_total, s.groups_acked_total) == (2, 1, 1, 1, 1)
    assert s.redis_used_memory_bytes > 0


def test_calls_without_the_service_token_are_refused(service) -> None:
    _, port = service
    for token in (None, "wrong-token"):
        channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig(service_token=token))
        code, details = _code(buffer_pb2_grpc.BufferServiceStub(channel).GetCursor, buffer_pb2.GetCursorRequest())
        channel.close()
        assert code == grpc.StatusCode.UNAUTHENTICATED and "service token" in details


def test_metrics_follow_the_counters_kept_in_redis(stub) -> None:
    c = _setup(stub)
    stub.PutGroup(buffer_pb2.PutGroupRequest(group=group_for(c), claim_id=c.claim_id, worker_id="w1"))
    m = StatsMetrics()
    before = REGISTRY.get_sample_value("eureka_buffer_groups_put_total") or 0.0
    m.update(stub.GetStats(buffer_pb2.GetStatsRequest()))
    m.update(stub.GetStats(buffer_pb2.GetStatsRequest()))  # a second refresh adds nothing new
    assert REGISTRY.get_sample_value("eureka_buffer_groups_put_total") == before + 1
    assert REGISTRY.get_sample_value("eureka_buffer_prompt_backlog") == 1
    assert REGISTRY.get_sample_value("eureka_buffer_redis_used_memory_bytes") > 0
