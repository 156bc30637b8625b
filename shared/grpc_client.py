"""gRPC client factory: default deadlines, message caps, retries with backoff, token metadata, TLS."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig


def _service_config(cfg: GrpcConfig) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": cfg.retries,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class _Defaults(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the default deadline when a call sets none, and the bearer token when configured."""

    def __init__(self, deadline_s: float, token: str | None) -> None:
        self.deadline_s = deadline_s
        self.token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or [])
        if self.token is not None:
            metadata.append(("authorization", f"Bearer {self.token}"))
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else self.deadline_s,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):  # noqa: PLR0913
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def create_channel(target: str, grpc_cfg: GrpcConfig, security: SecurityConfig) -> grpc.Channel:
    """A channel to `host:port` with the project's defaults applied to every call made on it."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", grpc_cfg.max_message_bytes),
        ("grpc.max_send_message_length", grpc_cfg.max_message_bytes),
        ("grpc.enable_retries", 1),
        # Reconnect quickly after a peer restarts (the default backoff grows to two minutes).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.service_config", _service_config(grpc_cfg)),
    ]
    if security.tls_ca is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=security.tls_ca.read_bytes())
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    token = security.service_token.get_secret_value() if security.service_token is not None else None
    return grpc.intercept_channel(channel, _Defaults(grpc_cfg.deadline_s, token))


def wait_serving(channel: grpc.Channel, timeout_s: float = 30.0, service: str = "") -> None:
    """Block until the server's health check answers SERVING, or raise TimeoutError."""
    stub = health_pb2_grpc.HealthStub(channel)
    end = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"gRPC server not SERVING after {timeout_s}s (last error: {last})")
