"""deploy/healthcheck.py (compose healthchecks, TLS exec probes) against real gRPC servers from shared/grpc_server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_server import GrpcServer
from tests.conftest import free_port
from tests.deploy.helpers import REPO

SCRIPT = REPO / "deploy" / "healthcheck.py"


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--timeout", "5"], capture_output=True, text=True,
                          timeout=60, check=False)


def serve(security: SecurityConfig) -> GrpcServer:
    return GrpcServer(lambda server: [], host="127.0.0.1", port=free_port(), grpc_cfg=GrpcConfig(grace_s=0),
                      security=security).start()


@pytest.fixture
def token_server() -> Iterator[GrpcServer]:
    server = serve(SecurityConfig(service_token="s3cret-token"))
    yield server
    server.stop(0)


def test_serving_server_exits_zero_without_the_token(token_server: GrpcServer) -> None:
    out = probe("--addr", f"127.0.0.1:{token_server.port}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SERVING" in out.stdout


def test_not_serving_exits_one(token_server: GrpcServer) -> None:
    token_server.set_serving(False)
    out = probe("--addr", f"127.0.0.1:{token_server.port}")
    assert out.returncode == 1 and "NOT_SERVING" in out.stdout


def test_nothing_listening_exits_one() -> None:
    out = probe("--addr", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "UNAVAILABLE" in out.stdout


def _certs(d: Path, name: str) -> None:
    """A CA and a server certificate for `name`, made with the openssl CLI."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=eureka-test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / "tls.key"),
        "-out", str(d / "tls.csr"))
    (d / "san.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    run("x509", "-req", "-in", str(d / "tls.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "1", "-extfile", str(d / "san.cnf"), "-out", str(d / "tls.crt"))


def test_tls_probe_checks_the_certificate_name(tmp_path: Path) -> None:
    if subprocess.run(["which", "openssl"], capture_output=True).returncode != 0:
        pytest.skip("openssl CLI not installed")
    _certs(tmp_path, "eureka-reward")
    server = serve(SecurityConfig(tls_cert=tmp_path / "tls.crt", tls_key=tmp_path / "tls.key"))
    try:
        addr = f"127.0.0.1:{server.port}"
        ok = probe("--addr", addr, "--ca", str(tmp_path / "ca.crt"), "--server-name", "eureka-reward")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        wrong_name = probe("--addr", addr, "--ca", str(tmp_path / "ca.crt"), "--server-name", "eureka-buffer")
        assert wrong_name.returncode == 1
        plaintext = probe("--addr", addr)
        assert plaintext.returncode == 1
    finally:
        server.stop(0)
