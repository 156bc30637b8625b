"""Fixtures that start real processes on free loopback ports and always stop them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisProc:
    port: int
    password: str
    data_dir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)


def start_redis(data_dir: Path, port: int | None = None, password: str = "test-redis-pw", fsync: str = "everysec") -> RedisProc:
    """A real redis-server with AOF under `data_dir`, waiting until it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make setup` (it apt-installs redis-server)")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes",
         "--appendfsync", fsync, "--requirepass", password, "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    r = RedisProc(port, password, data_dir, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if r.client().ping():
                return r
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProc]:
    r = start_redis(tmp_path / "redis")
    yield r
    r.proc.kill()
    r.proc.wait()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove EUREKA_* variables so tests see only what they set."""
    for key in list(os.environ):
        if key.startswith("EUREKA_"):
            monkeypatch.delenv(key)
