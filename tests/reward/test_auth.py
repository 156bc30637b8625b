"""The service token: required on gRPC Verify and every HTTP endpoint except /healthz and /readyz."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eureka.v1 import reward_pb2

ITEM = reward_pb2.VerifyItem(response="<answer>1</answer>", gold="1")


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_grpc_refuses_missing_or_wrong_token(reward_server, token) -> None:
    with pytest.raises(grpc.RpcError) as err:
        reward_server.stub(token=token).Verify(reward_pb2.VerifyRequest(items=[ITEM]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_health_needs_no_token(reward_server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{reward_server.grpc_port}")
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


@pytest.mark.parametrize("token", [None, "wrong-token"])
@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/reward", {"items": [{"response": "<answer>1</answer>", "gold": "1"}]}),
    ("POST", "/get_reward", {"query": ["<|im_start|>assistant\n<answer>1</answer>"], "labels": ["1"]}),
    ("GET", "/metrics", None),
])
def test_http_refuses_missing_or_wrong_token(reward_server, token, method, path, body) -> None:
    with reward_server.http(token=token) as client:
        r = client.request(method, path, json=body)
    assert r.status_code == 401 and "token" in r.json()["error"]


def test_http_probes_need_no_token(reward_server) -> None:
    assert httpx.get(f"{reward_server.url}/healthz").status_code == 200
    assert httpx.get(f"{reward_server.url}/readyz").status_code == 200


def test_right_token_is_accepted_on_both_doors(reward_server) -> None:
    assert reward_server.stub().Verify(reward_pb2.VerifyRequest(items=[ITEM]), timeout=10).results[0].accuracy == 1.0
    with reward_server.http() as client:
        assert client.get("/metrics").status_code == 200
