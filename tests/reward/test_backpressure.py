"""A full queue is refused with RESOURCE_EXHAUSTED / HTTP 429 instead of growing; SIGTERM stops cleanly."""

from __future__ import annotations

import threading
import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eureka.v1 import reward_pb2
from tests.reward.conftest import start_reward, stop_reward

SLOW = reward_pb2.VerifyItem(response="<answer>2^{2^{2^{100}}}</answer>", gold="3")
FAST = reward_pb2.VerifyItem(response="<answer>1</answer>", gold="1")


def _pending_items(client: httpx.Client) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return next(s.value for f in families for s in f.samples if s.name == "eureka_reward_pending_items")


def test_full_pool_refuses_then_recovers_and_stops_on_sigterm() -> None:
    server = start_reward("--workers", "1", "--max-batch-items", "1", "--max-pending-items", "1")
    try:
        slow = threading.Thread(
            target=lambda: server.stub().Verify(reward_pb2.VerifyRequest(items=[SLOW]), timeout=60))
        slow.start()
        with server.http() as client:  # wait until the slow item holds the only pending slot (for about the timeout)
            deadline = time.monotonic() + 30
            while _pending_items(client) < 1:
                assert time.monotonic() < deadline, "the slow item never reached the worker pool"
                time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as err:
            server.stub().Verify(reward_pb2.VerifyRequest(items=[FAST]), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry later" in err.value.details()
        with server.http() as client:
            r = client.post("/v1/reward", json={"items": [{"response": "<answer>1</answer>", "gold": "1"}]})
            assert r.status_code == 429 and r.headers["retry-after"] and "pending" in r.json()["error"]
        slow.join(timeout=60)
        reply = server.stub().Verify(reward_pb2.VerifyRequest(items=[FAST]), timeout=30)
        assert reply.results[0].accuracy == 1.0
    finally:
        assert stop_reward(server) == 0
