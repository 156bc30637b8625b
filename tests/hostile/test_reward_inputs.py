"""Hostile reward batches over both doors of a real reward process: gRPC Verify (random items, unknown modes,
odd floats, undecodable bytes) and HTTP /v1/reward and /get_reward (random JSON, wrong types, nulls, huge and
non-UTF-8 bodies). Every answer is a result per item or a clear 4xx / INVALID_ARGUMENT; never 5xx / INTERNAL."""

from __future__ import annotations

import json
import math

import grpc
import httpx
import pytest
from eureka.v1 import reward_pb2, reward_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import OUTCOMES, TOKEN, count, expect_clear
from tests.hostile.protogen import TEXT, build, fields_of

BATCH = 64
BIG = 100  # items per well-formed batch (these reach the scoring workers)
WELL_FORMED = 10  # well-formed batches per door (/get_reward, cheaper: three times as many)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

item_values = fields_of(reward_pb2.VerifyItem.DESCRIPTOR, 1)
RESPONSES = st.one_of(TEXT, st.tuples(TEXT, TEXT).map(lambda t: f"<think>{t[0]}</think><answer>{t[1]}</answer>"),
                      TEXT.map(lambda t: f"\\boxed{{{t}}}"))
# Well-formed items with hostile content: these reach the scoring workers (math-verify) item by item.
# Answers and golds: in the default run random text surrounds short answers math-verify parses fast; the slow
# run puts random text inside <answer> and the gold (it can take math-verify past the item timeout, and each
# such item costs a worker restart: minutes on a loaded 2-core machine).
GOLDS = st.one_of(st.integers(-1000, 1000).map(str),
                  st.sampled_from(["\\frac{1}{2}", "A", "3.5", "x+1", "\\sqrt{2}", "{1,2}"]))
HOSTILE_GOLDS = TEXT
CHEAP_RESPONSES = st.one_of(TEXT, st.tuples(TEXT, GOLDS, TEXT).map(
    lambda t: f"<think>{t[0]}</think><answer>{t[1]}</answer>{t[2]}"))


def scored_items(golds: st.SearchStrategy[str]) -> st.SearchStrategy[dict]:
    responses = CHEAP_RESPONSES if golds is GOLDS else RESPONSES
    return st.fixed_dictionaries({"response": responses, "gold": golds, "mode": st.sampled_from([0, 1, 2])},
                                 optional={"options": st.lists(TEXT, max_size=3), "item_id": TEXT})
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), TEXT)
json_values = st.recursive(
    JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8)


@pytest.fixture(scope="module")
def stub(procs) -> reward_pb2_grpc.RewardServiceStub:
    return reward_pb2_grpc.RewardServiceStub(procs.channel("reward"))


@pytest.fixture(scope="module")
def http(procs):
    with httpx.Client(base_url=procs.reward_url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
        yield c


@SETTINGS
@given(items=st.lists(item_values, max_size=BATCH), weight=st.one_of(st.none(), st.floats()))
def test_grpc_verify_malformed_batches(stub, items, weight) -> None:
    verify(stub, items, weight)


@settings(SETTINGS, max_examples=WELL_FORMED)
@given(items=st.lists(scored_items(GOLDS), min_size=BIG, max_size=BIG), weight=st.one_of(st.none(), st.floats(0, 2)))
def test_grpc_verify_scored_batches(stub, items, weight) -> None:
    verify(stub, items, weight)


@pytest.mark.slow
@settings(SETTINGS, max_examples=5 * WELL_FORMED)
@given(items=st.lists(scored_items(HOSTILE_GOLDS), min_size=BIG, max_size=BIG), weight=st.floats(0, 2))
def test_grpc_verify_scored_batches_random_golds(stub, items, weight) -> None:
    verify(stub, items, weight)


def verify(stub, items, weight) -> None:
    request = reward_pb2.VerifyRequest(items=[build(reward_pb2.VerifyItem, v) for v in items])
    if weight is not None:
        request.format_weight = weight
    count("reward gRPC Verify items", max(1, len(items)))
    try:
        reply = stub.Verify(request)
    except grpc.RpcError as e:
        expect_clear(e)
        return
    OUTCOMES["grpc OK"] += 1
    for r in reply.results:
        OUTCOMES[f"reward item {reward_pb2.ItemStatus.Name(r.status)}"] += 1
    assert [r.item_id for r in reply.results] == [i.item_id for i in request.items]
    assert all(math.isfinite(r.total) and 0 <= r.accuracy <= 1 for r in reply.results)


@settings(SETTINGS, max_examples=150)
@given(raw=st.one_of(st.binary(max_size=200), st.sampled_from([b"\x0a\x04\x0a\x02\xff\xfe", b"\x0a\x02\x12\x01\xc3",
                                                                b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f"])))
def test_grpc_verify_undecodable_bytes(procs, raw) -> None:
    """Raw bytes (invalid UTF-8 in string fields, truncated varints): INVALID_ARGUMENT, not INTERNAL."""
    channel = grpc.insecure_channel(f"127.0.0.1:{procs.ports['reward']}")
    call = channel.unary_unary("/eureka.v1.RewardService/Verify")
    count("reward gRPC raw bytes")
    try:
        call(raw, timeout=60, metadata=[("authorization", f"Bearer {TOKEN}")])
        OUTCOMES["grpc OK"] += 1
    except grpc.RpcError as e:
        expect_clear(e)
    finally:
        channel.close()


def check_http(r: httpx.Response) -> None:
    OUTCOMES[f"http {r.status_code}"] += 1
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.status_code in (413, 422, 429) and len(r.json()["error"]) > 10, (r.status_code, r.text)


def well_formed(golds: st.SearchStrategy[str]) -> st.SearchStrategy[dict]:
    responses = CHEAP_RESPONSES if golds is GOLDS else RESPONSES
    return st.fixed_dictionaries({"response": responses, "gold": golds}, optional={
        "mode": st.sampled_from(["instruct", "pretrained"]), "options": st.lists(TEXT, max_size=3), "item_id": TEXT})



http_items = st.lists(st.one_of(
    st.fixed_dictionaries({"response": TEXT, "gold": TEXT},
                          optional={"mode": st.sampled_from(["instruct", "pretrained", "x"]),
                                    "options": st.lists(TEXT, max_size=3), "item_id": TEXT}),
    st.dictionaries(st.sampled_from(["response", "gold", "mode", "options", "item_id", "extra"]), json_values,
                    max_size=5),
    json_values), max_size=BATCH)


@SETTINGS
@given(items=http_items, weight=st.one_of(st.none(), JSON_SCALARS),
       extra=st.dictionaries(TEXT, json_values, max_size=2))
def test_http_v1_reward_malformed(http, items, weight, extra) -> None:
    v1_reward(http, {"items": items, **({"format_weight": weight} if weight is not None else {}), **extra})


@settings(SETTINGS, max_examples=WELL_FORMED)
@given(items=st.lists(well_formed(GOLDS), min_size=BIG, max_size=BIG), weight=st.one_of(st.none(), st.floats(0, 2)))
def test_http_v1_reward_scored(http, items, weight) -> None:
    v1_reward(http, {"items": items, **({"format_weight": weight} if weight is not None else {})})


@pytest.mark.slow
@settings(SETTINGS, max_examples=5 * WELL_FORMED)
@given(items=st.lists(well_formed(HOSTILE_GOLDS), min_size=BIG, max_size=BIG))
def test_http_v1_reward_scored_random_golds(http, items) -> None:
    v1_reward(http, {"items": items})


def v1_reward(http, body: dict) -> None:
    items = body["items"]
    count("reward HTTP /v1/reward items", max(1, len(items)))
    r = http.post("/v1/reward", content=json.dumps(body, allow_nan=True))
    check_http(r)
    if r.status_code == 200:
        assert len(r.json()["results"]) == len(items)


QUERY = RESPONSES.map(lambda s: f"<|im_start|>assistant\n{s}<|im_end|>")


def paired(golds: st.SearchStrategy[str]) -> st.SearchStrategy[dict]:
    query = CHEAP_RESPONSES.map(lambda s: f"<|im_start|>assistant\n{s}<|im_end|>") if golds is GOLDS else QUERY
    return st.lists(st.tuples(query, golds), min_size=BIG, max_size=BIG).map(
        lambda pairs: {"query": [q for q, _ in pairs], "labels": [g for _, g in pairs]})



in_prompts = st.lists(st.tuples(QUERY, TEXT), max_size=BATCH).map(
    lambda pairs: {"query": [q for q, _ in pairs], "prompts": [{"answer": g} for _, g in pairs]})
loose = st.fixed_dictionaries({}, optional={"query": st.one_of(st.lists(QUERY, max_size=BATCH), json_values),
                                            "labels": st.one_of(st.lists(TEXT, max_size=BATCH), json_values),
                                            "prompts": json_values})


MODES = st.sampled_from([None, "instruct", "pretrained", "bogus"])


@SETTINGS
@given(body=st.one_of(in_prompts, loose), mode=MODES)
def test_http_get_reward_malformed(http, body, mode) -> None:
    get_reward(http, body, mode)


@settings(SETTINGS, max_examples=4 * WELL_FORMED)
@given(body=paired(GOLDS), mode=MODES)
def test_http_get_reward_scored(http, body, mode) -> None:
    get_reward(http, body, mode)


@pytest.mark.slow
@settings(SETTINGS, max_examples=5 * WELL_FORMED)
@given(body=paired(HOSTILE_GOLDS))
def test_http_get_reward_scored_random_golds(http, body) -> None:
    get_reward(http, body, None)


def get_reward(http, body: dict, mode: str | None) -> None:
    query = body.get("query")
    count("reward HTTP /get_reward queries", max(1, len(query) if isinstance(query, list) else 1))
    r = http.post("/get_reward", params={"mode": mode} if mode else None, content=json.dumps(body, allow_nan=True))
    check_http(r)
    if r.status_code == 200:
        assert len(r.json()["rewards"]) == len(query)


@settings(SETTINGS, max_examples=150)
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode),
                     st.sampled_from([b'{"items": [{"response": "\xff\xfe", "gold": "1"}]}', b'{"query": ["\xc3"]}',
                                      b"[" * 5000 + b"]" * 5000, b'{"items": ' + b"[" * 100_000, b"\x00" * 1000,
                                      b'{"items": null}', b'{"query": null, "labels": null}'])),
       path=st.sampled_from(["/v1/reward", "/get_reward"]))
def test_http_raw_bodies(http, raw, path) -> None:
    count("reward HTTP raw bodies")
    check_http(http.post(path, content=raw))


def test_http_body_over_the_cap_is_413(http) -> None:
    count("reward HTTP raw bodies")
    r = http.post("/v1/reward", content=b"x" * (16 * 1024 * 1024 + 1))
    assert r.status_code == 413 and "smaller batches" in r.json()["error"]
