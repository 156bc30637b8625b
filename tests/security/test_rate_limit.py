"""The reward HTTP door's per-client rate limit (`http_rate_per_s`, off by default): over it, 429 with a
sentence and Retry-After; probes are never limited; with the default config nothing is limited."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from eureka_cli.local.supervisor import Supervisor
from services.reward.config import RewardConfig
from shared.redis_proc import free_port
from tests.security.conftest import TOKEN, base_env, reward_argv, wait_http

BURST = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[str]:
    sup = Supervisor(tmp_path_factory.mktemp("rate-run"), base_env())
    ports = {n: free_port() for n in ("reward", "reward_http", "reward_metrics")}
    try:
        sup.start("reward", reward_argv(ports, "--http-rate-per-s", "0.2", "--http-rate-burst", str(BURST)),
                  {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN})
        url = f"http://127.0.0.1:{ports['reward_http']}"
        wait_http(f"{url}/readyz", sup.procs["reward"].proc)
        yield url
    finally:
        sup.stop_all(grace_s=10)


def test_over_the_rate_gets_429_with_a_sentence(limited) -> None:
    body = {"items": [{"response": "<answer>1</answer>", "gold": "1"}]}
    with httpx.Client(base_url=limited, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        codes = [client.post("/v1/reward", json=body).status_code for _ in range(3 * BURST)]
        refused = client.get("/metrics")
        for _ in range(3):
            assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert codes[:BURST] == [200] * BURST  # the burst is served
    assert codes.count(429) >= 2 * BURST - 1 and set(codes) == {200, 429}, codes
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "too many requests" in refused.json()["error"] and "slow down" in refused.json()["error"]


def test_off_by_default() -> None:
    assert RewardConfig().http_rate_per_s == 0
