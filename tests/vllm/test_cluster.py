"""vLLM rollout workers as processes on the real stack (redis, buffer, reward, a weight stream): versions switch in
place, and a `kill -9` of a vLLM worker loses no prompt. One engine runs at a time."""

from __future__ import annotations

import pytest
from eureka.v1 import rollout_pb2

from shared.grpc_client import wait_serving
from tests.rollout.conftest import channel, perturbed, wait_for
from tests.rollout.test_service import max_logprob_diff

pytestmark = pytest.mark.vllm
VLLM_ARGS = {"backend": "vllm", "vllm.gpu-memory-utilization": 0.1, "vllm.enforce-eager": "true", "seed": 0}


def start_vllm_worker(stack, worker_id: str):
    proc, port = stack.start_worker(worker_id, **VLLM_ARGS)
    wait_for(lambda: stack.status(port).state == rollout_pb2.WORKER_STATE_RUNNING or proc.poll() is not None, 240,
             f"{worker_id} RUNNING")
    assert proc.poll() is None, (stack.tmp / f"{worker_id}.log").read_text()[-3000:]
    wait_serving(channel(port), timeout_s=10)
    return proc, port


def test_vllm_workers_switch_versions_and_a_kill9_loses_no_prompt(stack):
    victim, port = start_vllm_worker(stack, "vllm-a")
    groups = stack.take_groups(stack.enqueue(2), timeout_s=120)
    assert {g.policy_version for g in groups} == {0} and {g.worker_id for g in groups} == {"vllm-a"}
    assert max_logprob_diff(groups, stack.model_path) < 1e-3

    v1 = perturbed(stack.model_path, seed=13)
    stack.store.publish(1, v1)
    wait_for(lambda: stack.status(port).policy_version == 1, 60, "vllm-a on version 1")
    groups = stack.take_groups(stack.enqueue(2), timeout_s=120)
    assert {g.policy_version for g in groups} == {1}
    assert max_logprob_diff(groups, stack.model_path, v1) < 1e-3

    ids = stack.enqueue(6)
    wait_for(lambda: stack.status(port).prompts_in_flight > 0, 60, "vllm-a holding prompts", every_s=0.01)
    victim.kill()
    victim.wait()
    start_vllm_worker(stack, "vllm-b")  # one engine at a time: the replacement starts after the kill
    groups = stack.take_groups(ids, timeout_s=180)  # fails on a missing or a duplicated group
    reclaimed = [g for g in groups if g.attempt >= 2]
    assert reclaimed and all(g.worker_id == "vllm-b" for g in reclaimed)
    assert {g.policy_version for g in groups} == {1}
    assert stack.stats().prompts_pending == 0
