"""Every corpus case holds through the real gRPC server and the real HTTP server (one process, both doors)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eureka.v1 import reward_pb2

from tests.reward.conftest import RewardProc, start_reward, stop_reward
from tests.reward.corpus import CORPUS, Case

_MODE = {"instruct": reward_pb2.REWARD_MODE_INSTRUCT, "pretrained": reward_pb2.REWARD_MODE_PRETRAINED}
_STATUS = {"ok": reward_pb2.ITEM_STATUS_OK, "gold_unparseable": reward_pb2.ITEM_STATUS_GOLD_UNPARSEABLE}
BATCH = 64


def _weight(case: Case) -> float:
    return 1.0 if case.mode == "pretrained" else 0.5


def _expected(case: Case) -> tuple:
    return (case.accuracy, case.format, case.accuracy + _weight(case) * case.format, case.status)


def _batches() -> list[list[tuple[int, Case]]]:
    indexed = list(enumerate(CORPUS))
    return [indexed[i: i + BATCH] for i in range(0, len(indexed), BATCH)]


def _describe(i: int, case: Case, got: tuple) -> str:
    return f"case {i} ({case.note}): response={case.response[-80:]!r} gold={case.gold!r} expected {_expected(case)} got {got}"


@pytest.fixture(scope="module")
def reward_server() -> Iterator[RewardProc]:
    """The corpus checks correctness, not the timeout: a generous per-item limit keeps it true on a loaded machine."""
    r = start_reward("--item-timeout-s", "60")
    yield r
    stop_reward(r)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 150
    assert any(c.mode == "pretrained" for c in CORPUS) and any(c.status != "ok" for c in CORPUS)


def test_corpus_over_grpc(reward_server) -> None:
    stub = reward_server.stub()
    failures = []
    for batch in _batches():
        request = reward_pb2.VerifyRequest(items=[
            reward_pb2.VerifyItem(response=c.response, gold=c.gold, mode=_MODE[c.mode], options=c.options, item_id=str(i))
            for i, c in batch
        ])
        reply = stub.Verify(request, timeout=120)
        assert [r.item_id for r in reply.results] == [str(i) for i, _ in batch]
        for (i, case), r in zip(batch, reply.results):
            status = {v: k for k, v in _STATUS.items()}.get(r.status, str(r.status))
            got = (r.accuracy, r.format, round(r.total, 4), status)
            if got != _expected(case):
                failures.append(_describe(i, case, got))
    assert not failures, "\n".join(failures)


def test_corpus_over_http(reward_server) -> None:
    failures = []
    with reward_server.http() as client:
        for batch in _batches():
            body = {"items": [{"response": c.response, "gold": c.gold, "mode": c.mode, "options": list(c.options),
                               "item_id": str(i)} for i, c in batch]}
            reply = client.post("/v1/reward", json=body)
            assert reply.status_code == 200, reply.text
            results = reply.json()["results"]
            assert [r["item_id"] for r in results] == [str(i) for i, _ in batch]
            for (i, case), r in zip(batch, results):
                got = (r["accuracy"], r["format"], round(r["total"], 4), r["status"])
                if got != _expected(case):
                    failures.append(_describe(i, case, got))
    assert not failures, "\n".join(failures)


def test_corpus_over_openrlhf_get_reward(reward_server) -> None:
    """The instruct cases through `/get_reward` as MM-Eureka's OpenRLHF job sends them (full decoded text)."""
    cases = [c for c in CORPUS if c.mode == "instruct" and not c.options]
    prompt = "<|im_start|>system\nthink in <think></think> and answer in <answer></answer><|im_end|>\n" \
             "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n"
    queries = [f"{prompt}<|im_start|>assistant\n{c.response}<|im_end|><|endoftext|>" for c in cases]
    with reward_server.http() as client:
        reply = client.post("/get_reward", json={"query": queries, "prompts": [prompt] * len(cases),
                                                 "labels": [c.gold for c in cases]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["rewards"]) == len(cases)
    for case, reward, acc, fmt in zip(cases, body["rewards"], body["accuracy_rewards"], body["format_rewards"]):
        assert (acc, fmt, round(reward, 4)) == _expected(case)[:3], case
