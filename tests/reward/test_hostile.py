"""Hostile inputs cost at most the per-item timeout (+1 s), score 0 or get a clear 4xx/INVALID_ARGUMENT,
and the service still answers the next request. The time bound is the issue's acceptance criterion."""

from __future__ import annotations

import re
import time

import grpc
import pytest

from eureka.v1 import reward_pb2
from tests.reward.conftest import ITEM_TIMEOUT_S

HUGE_POWER = "2^{2^{2^{100}}}"
# Uncut, these items run for hours; the bound leaves room for a loaded machine and a worker respawn.
CUT_BOUND_S = 2 * ITEM_TIMEOUT_S + 2
NESTED = "{" * 10_000 + "1" + "}" * 10_000
HOSTILE_ITEMS = [
    (f"<think>t</think><answer>{HUGE_POWER}</answer>", "3", "instruct"),
    ("<answer>3</answer>", HUGE_POWER, "instruct"),
    (f"<answer>{NESTED}</answer>", "1", "instruct"),
    (f"\\boxed{{{NESTED}}}", "1", "pretrained"),
    ("\\boxed{" * 10_000, "1", "pretrained"),
    ("<answer>\\frac{1}{</answer>", "\\frac{1}{2}", "instruct"),
    ("<answer>\\frac</answer>", "2", "instruct"),
    ("<answer>" + "\\sqrt{" * 3000 + "</answer>", "2", "instruct"),
    ("<answer>" + "(" * 5000 + "</answer>", "2", "instruct"),
]
MODES = {"instruct": reward_pb2.REWARD_MODE_INSTRUCT, "pretrained": reward_pb2.REWARD_MODE_PRETRAINED}


def _still_answers(server) -> None:
    reply = server.stub().Verify(reward_pb2.VerifyRequest(items=[
        reward_pb2.VerifyItem(response="<think>t</think><answer>\\frac{1}{2}</answer>", gold="0.5")]), timeout=30)
    assert reply.results[0].accuracy == 1.0 and reply.results[0].status == reward_pb2.ITEM_STATUS_OK


@pytest.mark.parametrize("response,gold,mode", HOSTILE_ITEMS, ids=[f"hostile{i}" for i in range(len(HOSTILE_ITEMS))])
def test_hostile_item_over_grpc_scores_zero_within_timeout(reward_server, response, gold, mode) -> None:
    start = time.monotonic()
    reply = reward_server.stub().Verify(
        reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response=response, gold=gold, mode=MODES[mode])]), timeout=60)
    elapsed = time.monotonic() - start
    r = reply.results[0]
    assert r.accuracy == 0.0 and r.total == 0.0
    assert r.status in (reward_pb2.ITEM_STATUS_OK, reward_pb2.ITEM_STATUS_TIMEOUT, reward_pb2.ITEM_STATUS_INVALID)
    assert elapsed < CUT_BOUND_S, f"took {elapsed:.1f}s: the item was not cut at the item timeout"
    _still_answers(reward_server)


def test_timeout_kills_and_replaces_the_worker(reward_server) -> None:
    """A batch of huge powers: each item is cut at the timeout, workers are replaced, the pool stays full."""
    with reward_server.http() as client:
        before = _metric(client.get("/metrics").text, "eureka_reward_worker_restarts_total")
        body = {"items": [{"response": f"<answer>{HUGE_POWER}</answer>", "gold": "3"}] * 2}
        start = time.monotonic()
        reply = client.post("/v1/reward", json=body)
        elapsed = time.monotonic() - start
        assert reply.status_code == 200
        assert all(r["total"] == 0.0 for r in reply.json()["results"])
        assert elapsed < CUT_BOUND_S, f"two items on two workers took {elapsed:.1f}s: not cut at the item timeout"
        statuses = {r["status"] for r in reply.json()["results"]}
        page = client.get("/metrics").text
        if "timeout" in statuses:
            assert _metric(page, "eureka_reward_worker_restarts_total") > before
            assert _metric(page, "eureka_reward_timeouts_total") >= 1
        deadline = time.monotonic() + 60  # replacements start right after the answer goes out
        while _metric(client.get("/metrics").text, "eureka_reward_pool_workers") < 2:
            assert time.monotonic() < deadline, "killed scoring workers were not replaced"
            time.sleep(0.1)
    _still_answers(reward_server)


def _metric(page: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", page, re.MULTILINE)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def test_one_megabyte_response_is_invalid_not_verified(reward_server) -> None:
    big = "<think>" + "x" * (1 << 20) + "</think><answer>1</answer>"
    reply = reward_server.stub().Verify(reward_pb2.VerifyRequest(items=[
        reward_pb2.VerifyItem(response=big, gold="1", item_id="big"),
        reward_pb2.VerifyItem(response="<answer>1</answer>", gold="1", item_id="small")]), timeout=30)
    big_r, small_r = reply.results
    assert big_r.status == reward_pb2.ITEM_STATUS_INVALID and big_r.total == 0.0 and "cap" in big_r.detail
    assert small_r.status == reward_pb2.ITEM_STATUS_OK and small_r.accuracy == 1.0
    with reward_server.http() as client:
        r = client.post("/v1/reward", json={"items": [{"response": big, "gold": "1"}]})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "invalid"


@pytest.mark.parametrize("body", [
    b"\xff\xfe\x00{not utf-8",
    b'{"items": [{"response": null, "gold": "1"}]}',
    b'{"items": [{"response": "<answer>1</answer>", "gold": null}]}',
    b'{"items": [{"response": 5, "gold": "1"}]}',
    b'{"items": [{"response": "a", "gold": ["1"]}]}',
    b'{"items": "all of them"}',
    b'{"items": [{"response": "a", "gold": "1", "mode": "creative"}]}',
    b'{"items": [{"response": "a", "gold": "1", "extra": 1}]}',
    b'{"items": [{"response": "a", "gold": "1"}], "format_weight": -1}',
    b'{"items": []}',
    b"null",
    b"[]",
    b"",
], ids=lambda b: b[:30].decode("latin-1"))
def test_bad_http_bodies_get_422_with_a_sentence(reward_server, body) -> None:
    with reward_server.http() as client:
        r = client.post("/v1/reward", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert len(r.json()["error"]) > 20
        ok = client.post("/v1/reward", json={"items": [{"response": "<answer>2</answer>", "gold": "2"}]})
        assert ok.status_code == 200 and ok.json()["results"][0]["accuracy"] == 1.0


@pytest.mark.parametrize("body", [
    {"query": None, "labels": ["1"]},
    {"query": ["<|im_start|>assistant\n1"], "prompts": ["a prompt with no answer"]},
    {"query": ["<|im_start|>assistant\n1", "x"], "labels": ["1"]},
    {"query": ["<|im_start|>assistant\n1"]},
])
def test_bad_get_reward_bodies_get_422(reward_server, body) -> None:
    with reward_server.http() as client:
        r = client.post("/get_reward", json=body)
    assert r.status_code == 422 and r.json()["error"]


def test_oversized_http_body_gets_413(reward_server) -> None:
    with reward_server.http() as client:
        r = client.post("/v1/reward", content=b"x" * (16 * 1024 * 1024 + 1))
        assert r.status_code == 413 and "larger than" in r.json()["error"]
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("request_, fragment", [
    (reward_pb2.VerifyRequest(), "no items"),
    (reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="a", gold="1", mode=7)]), "mode"),
    (reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="a", gold="1")], format_weight=-0.5), "format_weight"),
    (reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="a", gold="1")] * 1025), "batch cap"),
])
def test_bad_grpc_requests_get_invalid_argument(reward_server, request_, fragment) -> None:
    with pytest.raises(grpc.RpcError) as err:
        reward_server.stub().Verify(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()
    _still_answers(reward_server)
