"""Fixtures that start real processes on free loopback ports and always stop them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_proc import RedisProc, free_port, start_redis  # noqa: F401 - re-exported for tests

pytest_plugins = ("tests.random_order",)  # `pytest --random-order SEED`


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProc]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make setup` (it apt-installs redis-server)")
    r = start_redis(tmp_path / "redis")
    yield r
    r.kill()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove EUREKA_* variables so tests see only what they set."""
    for key in list(os.environ):
        if key.startswith("EUREKA_"):
            monkeypatch.delenv(key)
