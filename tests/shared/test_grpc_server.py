"""The gRPC server/client factories against a real server on 127.0.0.1 built from the contracts."""

from __future__ import annotations

import time

import grpc
import pytest
from eureka.v1 import reward_pb2, reward_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.grpc_server import GrpcServer, InvalidArgument, map_errors


class _EchoReward(reward_pb2_grpc.RewardServiceServicer):
    """Echoes item ids; sleeps when asked so deadlines can be tested; refuses empty batches."""

    @map_errors
    def Verify(self, request, context):  # noqa: N802
        if not request.items:
            raise InvalidArgument("items is empty; send at least one item")
        if request.items[0].gold == "sleep":
            time.sleep(1.5)
        return reward_pb2.VerifyResponse(results=[reward_pb2.VerifyResult(item_id=i.item_id) for i in request.items])


def _serve(token: str | None = None, max_bytes: int = 64 * 1024) -> GrpcServer:
    security = SecurityConfig(service_token=SecretStr(token) if token else None)

    def add(server: grpc.Server) -> list[str]:
        reward_pb2_grpc.add_RewardServiceServicer_to_server(_EchoReward(), server)
        return [reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name]

    return GrpcServer(add, host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(max_message_bytes=max_bytes, grace_s=0),
                      security=security).start()


@pytest.fixture
def server():
    s = _serve(token="s3cret")
    yield s
    s.stop(0)


def _stub(port: int, token: str | None, deadline_s: float = 5.0):
    security = SecurityConfig(service_token=SecretStr(token) if token else None)
    channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(deadline_s=deadline_s), security)
    return channel, reward_pb2_grpc.RewardServiceStub(channel)


def _item(gold: str = "1", item_id: str = "a") -> reward_pb2.VerifyRequest:
    return reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="x", gold=gold, item_id=item_id)])


def test_health_serving_without_token(server: GrpcServer) -> None:
    channel, _ = _stub(server.port, token=None)
    wait_serving(channel, timeout_s=5)
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="eureka.v1.RewardService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_call_without_token_is_unauthenticated(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token=None)
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(_item())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "service token" in e.value.details()


def test_call_with_wrong_token_is_unauthenticated(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token="wrong")
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(_item())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_call_with_token_succeeds(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token="s3cret")
    assert stub.Verify(_item(item_id="z")).results[0].item_id == "z"


def test_no_token_configured_means_open() -> None:
    s = _serve(token=None)
    try:
        _, stub = _stub(s.port, token=None)
        assert stub.Verify(_item(item_id="q")).results[0].item_id == "q"
    finally:
        s.stop(0)


def test_oversize_message_is_refused_clearly(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token="s3cret")
    big = reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="x" * 200_000, gold="1")])
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(big)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in e.value.details()


def test_default_deadline_is_honoured(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token="s3cret", deadline_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(_item(gold="sleep"))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.4  # gave up at the deadline, not when the server finished


def test_service_error_maps_to_status(server: GrpcServer) -> None:
    _, stub = _stub(server.port, token="s3cret")
    with pytest.raises(grpc.RpcError) as e:
        stub.Verify(reward_pb2.VerifyRequest())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one item" in e.value.details()


def test_stop_flips_health_to_not_serving() -> None:
    s = _serve()
    s.set_serving(False)
    channel, _ = _stub(s.port, token=None)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    s.stop(0)


def test_reflection_lists_services(server: GrpcServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel, _ = _stub(server.port, token="s3cret")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"eureka.v1.RewardService", "grpc.health.v1.Health"} <= names
