"""Fault injection: the reward service dies under a working worker; nothing is lost, work resumes."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from shared.grpc_client import wait_serving
from tests.rollout.conftest import channel, wait_for

pytestmark = pytest.mark.chaos


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reward_outage_releases_the_batch_and_recovers(stack, start_in_process):
    start_in_process("chaos-worker")
    reward = next(p for p in stack.procs if "reward" in p.args)
    reward.kill()
    reward.wait()
    stack.procs.remove(reward)
    released0 = metric("eureka_rollout_prompts_released_total", reason="error")
    ids = stack.enqueue(2, tag="chaos")
    wait_for(lambda: metric("eureka_rollout_prompts_released_total", reason="error") > released0, 60,
             "the batch released after Verify failed")
    stack.start_reward()
    wait_serving(channel(stack.reward_port), timeout_s=60)
    groups = stack.take_groups(ids, timeout_s=90)
    assert all(len(g.samples) > 0 for g in groups)
    assert stack.stats().groups_duplicate_total == 0
