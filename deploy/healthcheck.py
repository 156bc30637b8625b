"""Exit 0 when a gRPC server answers grpc.health.v1 SERVING, 1 otherwise (compose healthchecks, TLS probes).

The kubelet's own gRPC probe cannot speak TLS, so the chart uses this script as an exec probe when TLS is
on; docker-compose uses it as every service's healthcheck. Health is exempt from the service token.
Usage: python deploy/healthcheck.py --addr 127.0.0.1:50051 [--service NAME] [--ca ca.crt --server-name NAME]
"""

from __future__ import annotations

import argparse
import sys


def check(addr: str, service: str = "", ca: str | None = None, server_name: str | None = None,
          timeout_s: float = 3.0) -> str:
    """The health status name (SERVING, NOT_SERVING, ...) or the gRPC error code name."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca is not None:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(addr)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout_s)
        except grpc.RpcError as e:
            return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="grpc.health.v1 check: exit 0 when SERVING")
    p.add_argument("--addr", required=True, help="host:port")
    p.add_argument("--service", default="", help="service name to check (default: the whole server)")
    p.add_argument("--ca", default=None, help="CA bundle (PEM): use TLS")
    p.add_argument("--server-name", default=None, help="name the server's certificate carries (TLS)")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args(argv)
    status = check(args.addr, args.service, args.ca, args.server_name, args.timeout)
    print(f"{args.addr}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
