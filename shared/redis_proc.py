"""Embedded Redis: start a real `redis-server` (AOF on, password, data dir), wait for PING, stop it.

Used by `eureka up`, `eureka buffer serve --redis.embedded-dir`, the tests and the benchmarks: one way
to run Redis locally. Restarting on the same data dir replays the append-only file.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.process import terminate


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisProc:
    port: int
    password: str
    data_dir: Path
    proc: subprocess.Popen
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Connection URL without the password (pass the password separately, never log it)."""
        return f"redis://{self.host}:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF), then SIGKILL when it does not exit in time."""
        terminate(self.proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_redis(
    data_dir: Path,
    port: int | None = None,
    password: str = "test-redis-pw",
    fsync: Literal["everysec", "always"] = "everysec",
    maxmemory_bytes: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 10.0,
) -> RedisProc:
    """A real redis-server with AOF under `data_dir`, returned once it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run `make apt` (it apt-installs redis-server)")
    if fsync not in ("everysec", "always"):
        raise ValueError(f"fsync must be 'everysec' or 'always', not {fsync!r}")
    if not password:
        raise ValueError("an embedded Redis needs a password; pass a non-empty password")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [exe, "--port", str(port), "--bind", host, "--dir", str(data_dir), "--appendonly", "yes",
            "--appendfsync", fsync, "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--maxmemory", str(maxmemory_bytes), "--maxmemory-policy", "noeviction"]
    # The password goes through stdin-free config: argv is visible in `ps`, so use a config file.
    conf = data_dir / "redis-auth.conf"
    conf.write_text(f"requirepass {password}\n")
    conf.chmod(0o600)
    proc = subprocess.Popen([exe, str(conf), *args[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = RedisProc(port, password, data_dir, proc, host)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}; is port {port} in use?")
        try:
            if r.client().ping():
                return r
        except Exception as e:  # noqa: BLE001 - still starting (or loading the AOF)
            last = e
            time.sleep(0.05)
    r.kill()
    raise RuntimeError(f"redis-server did not answer PING within {timeout_s}s (last error: {last})")
