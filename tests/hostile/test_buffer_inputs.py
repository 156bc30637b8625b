"""Hostile calls to every BufferService method of a real buffer process (random field values, inconsistent
lengths, bad ids, undecodable bytes). Redis is snapshotted (DUMP of every key) around each call: a refused call
leaves it byte-for-byte unchanged; only accepted calls may change it."""

from __future__ import annotations

import grpc
import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import OUTCOMES, TOKEN, count, expect_clear
from tests.hostile.protogen import messages, mutated

SERVICE = buffer_pb2.DESCRIPTOR.services_by_name["BufferService"]
METHODS = {m.name: getattr(buffer_pb2, m.input_type.name) for m in SERVICE.methods}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
AUTH = [("authorization", f"Bearer {TOKEN}")]


def _prompt(i: int) -> common_pb2.Prompt:
    chat = '[{"role": "user", "content": "1+1?"}]'
    return common_pb2.Prompt(prompt_id=f"h:{i}", messages_json=chat, answer="2", cursor=i)


def _sample(acc: float) -> buffer_pb2.Sample:
    return buffer_pb2.Sample(response_token_ids=[1, 2], behaviour_logprobs=[-0.1, -0.2], response_text="x",
                             reward=acc, accuracy=acc, format=1.0, finish_reason="stop")


def templates(claim: buffer_pb2.ClaimedPrompt) -> dict[str, object]:
    """One valid request per method (around the state the fixture made): mutations of these are near misses."""
    pid = claim.prompt.prompt_id
    group = buffer_pb2.TrajectoryGroup(group_id=f"{pid}#{claim.attempt}", prompt_id=pid, attempt=claim.attempt,
                                       prompt=claim.prompt, prompt_token_ids=[1, 2, 3],
                                       samples=[_sample(0.0), _sample(1.0)], worker_id="w1", created_unix=1.0)
    put = buffer_pb2.PutGroupRequest(group=group, claim_id=claim.claim_id, worker_id="w1")
    return {
        "EnqueuePrompts": buffer_pb2.EnqueuePromptsRequest(prompts=[_prompt(6), _prompt(7)], cursor_start=6,
                                                           cursor_end=8),
        "GetCursor": buffer_pb2.GetCursorRequest(),
        "ClaimPrompts": buffer_pb2.ClaimPromptsRequest(worker_id="w2", max_prompts=1, wait_ms=0),
        "ReleasePrompts": buffer_pb2.ReleasePromptsRequest(worker_id="w1", claim_ids=[claim.claim_id]),
        "PutGroup": put,
        "PutGroups": buffer_pb2.PutGroupsRequest(puts=[put]),
        "SampleGroups": buffer_pb2.SampleGroupsRequest(consumer="learner", num_groups=1, max_staleness=4,
                                                       filter_low=0.0, filter_high=1.0, wait_ms=0),
        "AckGroups": buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=["1-0"]),
        "GetStats": buffer_pb2.GetStatsRequest(),
    }


class Tracker:
    """Calls a method and checks Redis: unchanged unless the call was accepted."""

    def __init__(self, procs) -> None:
        self.redis = procs.redis.client()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{procs.ports['buffer']}")
        self.before = self.snapshot()
        self.accepted = 0

    def snapshot(self) -> dict[bytes, tuple[bytes, bytes | None, int]]:
        return {k: (self.redis.type(k), self.redis.dump(k), self.redis.pttl(k)) for k in sorted(self.redis.keys("*"))}

    def call(self, method: str, raw: bytes) -> None:
        rpc = self.channel.unary_unary(f"/{SERVICE.full_name}/{method}")
        try:
            rpc(raw, timeout=30, metadata=AUTH)
        except grpc.RpcError as e:
            expect_clear(e)
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # a short SampleGroups keeps what it read pending
                after = self.snapshot()
                assert after == self.before, f"{method} refused ({e.code().name}: {e.details()}) but changed Redis"
                return
        else:
            OUTCOMES["grpc OK"] += 1
        self.accepted += 1
        self.before = self.snapshot()


@pytest.fixture(scope="module")
def tracker(procs) -> Tracker:
    stub = buffer_pb2_grpc.BufferServiceStub(procs.channel("buffer"))
    prompts = [_prompt(i) for i in range(6)]
    stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=0, cursor_end=6))
    claims = stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w1", max_prompts=3)).prompts
    t = templates(claims[0])
    stub.PutGroup(t["PutGroup"])
    tr = Tracker(procs)
    tr.templates = templates(claims[1])  # type: ignore[attr-defined]
    return tr


@st.composite
def calls(draw, valid: dict[str, object]) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(METHODS)))
    cls = METHODS[method]
    if cls.DESCRIPTOR.fields and draw(st.booleans()):
        msg = draw(mutated(valid[method]))
    else:
        msg = draw(messages(cls))
    return method, msg.SerializeToString()


def test_random_calls_change_nothing_unless_accepted(tracker) -> None:
    accepted = tracker.accepted

    @SETTINGS
    @given(data=st.data())
    def random_calls(data) -> None:
        for method, raw in data.draw(st.lists(calls(tracker.templates), min_size=1, max_size=8)):
            count("buffer gRPC calls")
            tracker.call(method, raw)

    random_calls()
    assert tracker.accepted > accepted  # some generated calls were valid: the checks were not all of refusals


@settings(SETTINGS, max_examples=300)
@given(method=st.sampled_from(sorted(METHODS)),
       raw=st.one_of(st.binary(max_size=120),
                     st.sampled_from([b"\x0a\x02\xff\xfe", b"\x0a\x03\x0a\x01\xc3", b"\xff" * 8])))
def test_undecodable_bytes_change_nothing(tracker, method, raw) -> None:
    count("buffer gRPC raw bytes")
    tracker.call(method, raw)


def test_the_buffer_still_answers(tracker) -> None:
    stats = buffer_pb2.BufferStats.FromString(
        tracker.channel.unary_unary(f"/{SERVICE.full_name}/GetStats")(b"", timeout=10, metadata=AUTH))
    assert stats.cursor >= 6 and stats.groups_put_total >= 1
