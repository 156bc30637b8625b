"""With TLS configured, a real reward process serves gRPC over TLS and HTTPS: plaintext clients are refused,
clients that trust the CA get answers (and still need the token)."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator

import grpc
import httpx
import pytest
from eureka.v1 import reward_pb2, reward_pb2_grpc, weights_pb2, weights_pb2_grpc

from eureka_cli.local.supervisor import Supervisor
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.redis_proc import free_port
from tests.security.conftest import SERVERS, TOKEN, base_env, reward_argv, wait_http

ITEM = reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="<answer>1</answer>", gold="1")])


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory, cert) -> Iterator[dict[str, int]]:
    sup = Supervisor(tmp_path_factory.mktemp("tls-run"), base_env())
    ports = {n: free_port() for n in ("reward", "reward_http", "reward_metrics", "status")}
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN, "EUREKA_SECURITY__TLS_CERT": str(cert.cert),
           "EUREKA_SECURITY__TLS_KEY": str(cert.key)}
    try:
        sup.start("reward", reward_argv(ports), env)
        sup.start("status", [sys.executable, str(SERVERS), str(ports["status"])], env)
        ctx = ssl.create_default_context(cafile=str(cert.ca))
        wait_http(f"https://127.0.0.1:{ports['reward_http']}/readyz", sup.procs["reward"].proc, verify=ctx)
        yield ports
    finally:
        sup.stop_all(grace_s=10)


def tls_channel(port: int, cert, token: str | None = TOKEN) -> grpc.Channel:
    security = SecurityConfig(service_token=token, tls_ca=cert.ca)
    return create_channel(f"127.0.0.1:{port}", GrpcConfig(deadline_s=10), security)


@pytest.mark.parametrize("server", ["reward", "status"])
def test_grpc_plaintext_client_is_refused(tls_stack, server) -> None:
    plain = create_channel(f"127.0.0.1:{tls_stack[server]}", GrpcConfig(deadline_s=3, retries=2),
                           SecurityConfig(service_token=TOKEN))
    with pytest.raises(grpc.RpcError) as err:
        if server == "reward":
            reward_pb2_grpc.RewardServiceStub(plain).Verify(ITEM)
        else:
            weights_pb2_grpc.WeightServiceStub(plain).GetVersion(weights_pb2.GetVersionRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(TimeoutError):
        wait_serving(plain, timeout_s=2)  # not even the health check answers in plaintext
    plain.close()


def test_grpc_tls_client_with_the_ca_works_and_still_needs_the_token(tls_stack, cert) -> None:
    channel = tls_channel(tls_stack["reward"], cert)
    wait_serving(channel, timeout_s=10)
    assert reward_pb2_grpc.RewardServiceStub(channel).Verify(ITEM).results[0].accuracy == 1.0
    status = tls_channel(tls_stack["status"], cert)
    assert weights_pb2_grpc.WeightServiceStub(status).GetVersion(weights_pb2.GetVersionRequest()).policy_version == 0
    with pytest.raises(grpc.RpcError) as err:
        reward_pb2_grpc.RewardServiceStub(tls_channel(tls_stack["reward"], cert, token="wrong")).Verify(ITEM)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_tls_client_without_the_ca_is_refused(tls_stack) -> None:
    channel = grpc.secure_channel(f"127.0.0.1:{tls_stack['reward']}", grpc.ssl_channel_credentials())  # system roots
    with pytest.raises(grpc.RpcError) as err:
        auth = [("authorization", f"Bearer {TOKEN}")]
        reward_pb2_grpc.RewardServiceStub(channel).Verify(ITEM, timeout=3, metadata=auth)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_https_refuses_plaintext_and_serves_tls(tls_stack, cert) -> None:
    port = tls_stack["reward_http"]
    with pytest.raises(httpx.HTTPError):  # the TLS server drops a plaintext request
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate refuses it
        httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=3)
    ctx = ssl.create_default_context(cafile=str(cert.ca))
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = {"items": [{"response": "<answer>1</answer>", "gold": "1"}]}
    r = httpx.post(f"https://127.0.0.1:{port}/v1/reward", json=body, headers=headers, verify=ctx, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["accuracy"] == 1.0
    assert httpx.post(f"https://127.0.0.1:{port}/v1/reward", json=body, verify=ctx, timeout=30).status_code == 401
