"""gRPC server factory: message caps, the service-token interceptor, health, reflection, TLS, graceful stop.

A servicer raises `ServiceError` (or a subclass) with a gRPC code and a sentence; `map_errors`
turns it into the status once, at the edge. Health checks (`grpc.health.v1`) are exempt from the
token so kubelet gRPC probes work; every other method requires it when a token is configured.
Requests that do not decode (e.g. invalid UTF-8 in a string field) get INVALID_ARGUMENT, not INTERNAL.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.auth import bearer_ok
from shared.config import GrpcConfig, SecurityConfig
from shared.logs import get_logger

log = get_logger("grpc")

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class ServiceError(Exception):
    """An error with a gRPC status code and a sentence that tells the caller what to fix."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def map_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for servicer methods: ServiceError -> its status; anything else -> INTERNAL, logged."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ServiceError as e:
            context.abort(e.code, str(e))
        except Exception:  # the edge: log with traceback, answer INTERNAL without internals
            log.exception("unhandled error", method=method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the server log")

    return wrapper


# grpc method handler factories by (request streaming, response streaming)
_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>` with UNAUTHENTICATED (health exempt)."""

    def __init__(self, security: SecurityConfig) -> None:
        self.token = security.service_token

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong service token: send metadata 'authorization: Bearer <EUREKA_SECURITY__SERVICE_TOKEN>'",
            )

        self._deny = {kind: make(deny) for kind, make in _HANDLER_KINDS.items()}  # request: a message or an iterator

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        if self.token is None or handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        header = dict(handler_call_details.invocation_metadata or ()).get("authorization")
        if bearer_ok(header, self.token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._deny[(handler.request_streaming, handler.response_streaming)]


class DecodeInterceptor(grpc.ServerInterceptor):
    """Decodes requests inside the handler so undecodable bytes answer INVALID_ARGUMENT with a sentence.

    grpc-python otherwise answers INTERNAL ("Exception deserializing request") before any servicer runs.
    """

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode, method = handler.request_deserializer, handler_call_details.method

        def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                return decode(raw)
            except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError, custom deserializers anything
                sentence = f"request to {method} is not a valid message ({type(e).__name__}); send the documented proto"
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, sentence)

        def parse_all(raws: Iterable[bytes], context: grpc.ServicerContext) -> Iterable[Any]:
            for raw in raws:
                yield parse(raw, context)

        if handler.request_streaming:
            inner = handler.stream_stream or handler.stream_unary
            behaviour = lambda raws, context: inner(parse_all(raws, context), context)  # noqa: E731
        else:
            inner = handler.unary_unary or handler.unary_stream
            behaviour = lambda raw, context: inner(parse(raw, context), context)  # noqa: E731
        make = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        return make(behaviour, request_deserializer=None, response_serializer=handler.response_serializer)


def _serialize(response: Any) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_raw_bytes_service(
    server: grpc.Server,
    service: ServiceDescriptor,
    servicer: Any,
    request_parsers: Mapping[str, Callable[[bytes], Any]] | None = None,
) -> list[str]:
    """Register `servicer`'s methods of `service` as the generated `add_*_to_server` does, except that a
    method may answer (or stream) bytes already serialized, which are sent as they are, and
    `request_parsers` may replace a method's request parsing (to keep its wire bytes, say)."""
    parsers = request_parsers or {}
    handlers = {
        m.name: _HANDLER_KINDS[(m.client_streaming, m.server_streaming)](
            getattr(servicer, m.name),
            request_deserializer=parsers.get(m.name, GetMessageClass(m.input_type).FromString),
            response_serializer=_serialize,
        )
        for m in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
    return [service.full_name]


def server_options(cfg: GrpcConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


class GrpcServer:
    """A started gRPC server with health + reflection; `stop()` flips health to NOT_SERVING first."""

    def __init__(
        self,
        add_servicers: Callable[[grpc.Server], Iterable[str]],
        *,
        host: str,
        port: int,
        grpc_cfg: GrpcConfig,
        security: SecurityConfig,
    ) -> None:
        self.cfg = grpc_cfg
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=grpc_cfg.workers),
            interceptors=[TokenInterceptor(security), DecodeInterceptor()],
            options=server_options(grpc_cfg),
        )
        names = list(add_servicers(self.server))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.service_names = names
        address = f"{host}:{port}"
        if security.tls_cert is not None and security.tls_key is not None:
            creds = grpc.ssl_server_credentials([(security.tls_key.read_bytes(), security.tls_cert.read_bytes())])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC server to {address}; is the port in use?")

    def start(self) -> "GrpcServer":
        self.server.start()
        self.set_serving(True)
        return self

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace: float | None = None) -> None:
        self.set_serving(False)
        self.server.stop(self.cfg.grace_s if grace is None else grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread)."""
    stop = threading.Event()

    def _set(signum: int, frame: object) -> None:
        log.info("signal received, stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _set)
    signal.signal(signal.SIGINT, _set)
    return stop


def wait_until_stopped(stop: threading.Event, poll_s: float = 0.5) -> None:
    """Block the main thread until `stop` is set; timed waits let the SIGTERM handler run promptly."""
    while not stop.wait(poll_s):
        pass
