"""Every gRPC method of every service and every HTTP route of the reward app refuses a call without the
service token or with a wrong one (UNAUTHENTICATED / 401); only the documented probes are exempt."""

from __future__ import annotations

import grpc
import httpx
import pytest
from eureka.v1 import buffer_pb2, reward_pb2, rollout_pb2, weights_pb2
from fastapi.routing import APIRoute
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.reward.config import RewardConfig
from services.reward.http_app import create_app
from services.reward.pool import WorkerPool
from services.reward.scoring import Scorer
from tests.security.conftest import TOKEN

EXPECTED = {
    "reward": {"eureka.v1.RewardService"},
    "buffer": {"eureka.v1.BufferService"},
    "status": {"eureka.v1.WeightService", "eureka.v1.RolloutService"},
}
COMMON = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
GRPC_EXEMPT = "grpc.health.v1.Health"
HTTP_EXEMPT = {"/healthz", "/readyz"}
_ = (buffer_pb2, reward_pb2, rollout_pb2, weights_pb2, health_pb2, reflection_pb2)  # descriptors into the pool


def listed_services(channel: grpc.Channel) -> set[str]:
    """The services a server lists over reflection (asked with the token)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    return {s.name for r in replies for s in r.list_services_response.service}


def methods(stack) -> list[tuple[str, str, bool, bool]]:
    """(server, /service/method, client streaming, server streaming) of every method every server lists."""
    pool = descriptor_pool.Default()
    out = []
    for server in EXPECTED:
        names = listed_services(stack.channel(server))
        assert names == EXPECTED[server] | COMMON, f"{server} lists {names}"
        for name in sorted(names):
            for m in pool.FindServiceByName(name).methods:
                out.append((server, f"/{name}/{m.name}", m.client_streaming, m.server_streaming))
    return out


def call(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool,
         metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """Call `path` with an empty request and the given metadata; the status code it ends with."""
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
             (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    kind = kinds[(client_streaming, server_streaming)]
    rpc = kind(path, request_serializer=ident, response_deserializer=ident)
    request = iter([b""]) if client_streaming else b""
    try:
        reply = rpc(request, timeout=10, metadata=metadata)
        if server_streaming:
            next(iter(reply), None)
            reply.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer wrong-token")], [("authorization", TOKEN)],
                                      [("authorization", f"Basic {TOKEN}")]],
                         ids=["none", "wrong", "no-scheme", "basic"])
def test_every_grpc_method_refuses_a_bad_token(stack, metadata) -> None:
    found = methods(stack)
    assert len(found) >= 17, found  # 8 buffer + 1 reward + 2 weights + 2 rollout + health/reflection on 3 servers
    plain = {name: grpc.insecure_channel(target) for name, target in stack.grpc_targets().items()}
    codes = {path: call(plain[server], path, cs, ss, metadata) for server, path, cs, ss in found}
    refused = {p: c for p, c in codes.items() if not p.startswith(f"/{GRPC_EXEMPT}/")}
    assert set(refused.values()) == {grpc.StatusCode.UNAUTHENTICATED}, refused
    health = {p: c for p, c in codes.items() if p.startswith(f"/{GRPC_EXEMPT}/")}
    assert health["/grpc.health.v1.Health/Check"] == grpc.StatusCode.OK  # exempt: kubelet probes send no token
    assert grpc.StatusCode.UNAUTHENTICATED not in health.values(), health
    for ch in plain.values():
        ch.close()


def test_the_right_token_passes_the_interceptor(stack) -> None:
    """The same enumeration with the token gets past authentication everywhere (so the refusals above are real)."""
    plain = {name: grpc.insecure_channel(target) for name, target in stack.grpc_targets().items()}
    skip = {"/eureka.v1.RolloutService/Drain"}  # would stop the worker of servers.py
    codes = {path: call(plain[server], path, cs, ss, [("authorization", f"Bearer {TOKEN}")])
             for server, path, cs, ss in methods(stack) if path not in skip}
    assert grpc.StatusCode.UNAUTHENTICATED not in codes.values(), codes
    assert grpc.StatusCode.INTERNAL not in codes.values(), codes
    assert codes["/eureka.v1.BufferService/GetStats"] == grpc.StatusCode.OK


def reward_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the reward HTTP app, read from FastAPI's route list."""
    cfg = RewardConfig()
    app = create_app(cfg, Scorer(cfg, WorkerPool(cfg)), lambda: True)
    while not hasattr(app, "routes"):
        app = app.app  # through the rate and body-size middlewares
    return sorted((m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods)


BODIES = {"/v1/reward": {"items": [{"response": "<answer>1</answer>", "gold": "1"}]},
          "/get_reward": {"query": ["<|im_start|>assistant\n<answer>1</answer>"], "labels": ["1"]}}


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-token"}, {"authorization": TOKEN},
                                     {"authorization": f"Bearer {TOKEN}x"}, {"authorization": f"Bearer {TOKEN[:-1]}"}],
                         ids=["none", "wrong", "no-scheme", "longer", "prefix"])
def test_every_http_route_refuses_a_bad_token(stack, headers) -> None:
    routes = reward_routes()
    assert {p for _, p in routes} >= {"/v1/reward", "/get_reward", "/metrics", "/healthz", "/readyz"}, routes
    with httpx.Client(base_url=stack.reward_url, headers=headers, timeout=30) as client:
        for method, path in routes:
            r = client.request(method, path, json=BODIES.get(path))
            if path in HTTP_EXEMPT:
                assert r.status_code == 200, (path, r.text)
            else:
                assert r.status_code == 401 and "token" in r.json()["error"], (method, path, r.status_code, r.text)
        right = {"authorization": f"Bearer {TOKEN}"}
        for method, path in routes:
            assert client.request(method, path, json=BODIES.get(path), headers=right).status_code == 200, path
