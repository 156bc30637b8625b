"""The Redis container commands of the chart and of the compose file, run for real with redis-server: AOF on,
maxmemory with noeviction, the password required and taken from the environment, and never on a process's command line."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from shared.process import terminate
from shared.redis_proc import free_port
from tests.deploy.helpers import REPO, one, pod_spec, rendered

PASSWORD = "pw-" + "7" * 40


def _chart_script() -> str:
    container = pod_spec(one(rendered(), "StatefulSet", "eureka-redis"))["containers"][0]
    assert container["command"] == ["sh", "-c"]
    return container["args"][0]


def _compose_script() -> str:
    command = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    return command[2].replace("$$", "$")  # compose's escape for a literal `$`


@pytest.mark.parametrize("script", [_chart_script, _compose_script], ids=["chart", "compose"])
def test_redis_command_requires_the_password_keeps_aof_and_hides_the_password(script, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    text = script()
    assert "--port 6379" in text and "--dir /data" in text
    text = text.replace("--port 6379", f"--port {port} --bind 127.0.0.1").replace("--dir /data", f"--dir {tmp_path}")
    proc = subprocess.Popen(["sh", "-c", text], env={**os.environ, "REDIS_PASSWORD": PASSWORD},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        authed = redis.Redis(port=port, password=PASSWORD, socket_timeout=5)
        for _ in range(100):
            try:
                authed.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        assert authed.config_get("appendonly") == {"appendonly": "yes"}
        assert authed.config_get("dir")["dir"] == str(tmp_path)
        # A memory cap under the container's limit, and writes refused at it instead of keys evicted.
        assert authed.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(authed.config_get("maxmemory")["maxmemory"]) == int(2 * 2**30 * 0.75)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # `exec`: the shell became redis-server
        assert b"redis-server" in cmdline and PASSWORD.encode() not in cmdline
    finally:
        terminate(proc, grace_s=10)
