"""/metrics reflects what a request did: request and item counters, mean accuracy/format, reflection rate
(the pool-size gauge is checked in test_hostile, after workers are killed)."""

from __future__ import annotations

import re


def _value(page: str, series: str, missing: float | None = None) -> float:
    m = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", page, re.MULTILINE)
    if m is None and missing is not None:
        return missing
    assert m, f"{series} missing from /metrics"
    return float(m.group(1))


def test_metrics_follow_a_request(reward_server) -> None:
    items = [
        {"response": "<think>Wait, let me re-check.</think><answer>4</answer>", "gold": "4"},
        {"response": "<think>easy</think><answer>5</answer>", "gold": "4"},
        {"response": "<answer>4</answer>", "gold": "4"},
        {"response": "no tags", "gold": "4"},
    ]
    with reward_server.http() as client:
        before = client.get("/metrics").text
        assert client.post("/v1/reward", json={"items": items}).status_code == 200
        after = client.get("/metrics").text
    ok = 'eureka_reward_requests_total{door="http",outcome="ok"}'
    assert _value(after, ok) == _value(before, ok, missing=0.0) + 1
    items_ok = 'eureka_reward_items_total{status="ok"}'
    assert _value(after, items_ok) == _value(before, items_ok, missing=0.0) + 4
    assert _value(after, "eureka_reward_accuracy_mean") == 0.5
    assert _value(after, "eureka_reward_format_mean") == 0.5
    assert _value(after, "eureka_reward_reflection_rate") == 0.25
    assert 'eureka_reward_request_latency_seconds_count{door="http"}' in after
