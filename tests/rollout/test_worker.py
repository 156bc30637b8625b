"""In-process workers (their state is reachable) against the real stack: Drain RPC, sync mode, failed pulls."""

from __future__ import annotations

import threading

import torch
from eureka.v1 import rollout_pb2
from prometheus_client import REGISTRY

from tests.rollout.conftest import perturbed, wait_for


def test_drain_rpc_releases_the_batch_in_flight_and_stops(stack, start_in_process):
    w = start_in_process("drain-me", max_tokens=4000)
    backend = w.worker.backend
    backend.suppress = torch.cat([backend.suppress, torch.tensor(backend.stop_ids)])  # never stops early: stays busy
    stack.enqueue(2, tag="drain")
    wait_for(lambda: w.worker.status().prompts_in_flight == 2, 60, "a batch of 2 in flight", every_s=0.01)
    held = [c.prompt.prompt_id for c in list(w.worker.held.values())]
    reply = w.control.Drain(rollout_pb2.DrainRequest(), timeout=30)
    assert reply.released == 2
    assert w.worker.stopped.is_set()
    status = w.control.GetStatus(rollout_pb2.GetStatusRequest())
    assert status.state == rollout_pb2.WORKER_STATE_STOPPED and status.prompts_in_flight == 0
    # Released, not lost: another worker completes them without waiting for their lease.
    start_in_process("after-drain")
    groups = stack.take_groups(held)
    assert all(g.worker_id == "after-drain" for g in groups)


def test_sync_mode_claims_only_at_the_published_version(stack, start_in_process):
    w = start_in_process("sync-worker", mode="sync")
    # Let it finish whatever earlier tests left queued, so that every later put would be ours.
    wait_for(lambda: stack.stats().prompt_backlog == 0 and not w.worker.held, 60, "an empty backlog")
    served = w.worker.weights.version
    w.worker.weights.timeout_s = 1e-4  # every pull now misses its deadline
    put_before = stack.stats().groups_put_total
    stack.store.publish(served + 1, perturbed(stack.model_path, seed=served + 11))
    ids = stack.enqueue(2, tag="sync")
    wait_for(lambda: w.worker.weights.failures >= 2, 30, "failed pulls")
    # Three more turns of the worker's loop, each a failed pull and no claim: an async worker would have
    # claimed and generated on its first turn instead.
    failures = w.worker.weights.failures
    wait_for(lambda: w.worker.weights.failures >= failures + 3, 30, "three more sync-mode turns", every_s=0.01)
    assert w.worker.status().prompts_in_flight == 0 and stack.stats().groups_put_total == put_before
    assert w.worker.weights.version == served
    w.worker.weights.timeout_s = 30.0
    groups = stack.take_groups(ids)
    assert {g.policy_version for g in groups} == {served + 1}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_async_failed_pull_keeps_the_old_version_and_is_counted(stack, start_in_process):
    failures0 = metric("eureka_rollout_weight_pull_failures_total", reason="pull")
    tokens0 = metric("eureka_rollout_tokens_total")
    missing0 = metric("eureka_rollout_reward_item_errors_total", status="ITEM_STATUS_UNSPECIFIED")
    w = start_in_process("async-worker", reward_batch_items=2)  # also: a batch's Verify split in calls of 2
    served = w.worker.weights.version
    w.worker.weights.timeout_s = 1e-4
    stack.store.publish(served + 1, perturbed(stack.model_path, seed=served + 21))
    ids = stack.enqueue(2, tag="async")
    groups = stack.take_groups(ids)
    assert {g.policy_version for g in groups} == {served}  # generated on, and labelled with, the old version
    status = w.control.GetStatus(rollout_pb2.GetStatusRequest())
    assert status.weight_pull_failures_total >= 1 and status.policy_version == served
    assert metric("eureka_rollout_weight_pull_failures_total", reason="pull") > failures0
    assert metric("eureka_rollout_reward_item_errors_total", status="ITEM_STATUS_UNSPECIFIED") == missing0
    tokens = sum(len(s.response_token_ids) for g in groups for s in g.samples)
    assert metric("eureka_rollout_tokens_total") - tokens0 >= tokens
    w.worker.weights.timeout_s = 30.0
    wait_for(lambda: w.worker.status().policy_version == served + 1, 30, "the new version after the deadline is lifted")


def test_the_next_batch_generates_while_the_previous_one_is_scored_and_put(stack, start_in_process):
    w = start_in_process("pipelined")
    worker = w.worker
    wait_for(lambda: stack.stats().prompt_backlog == 0 and not worker.held, 60, "an empty backlog")
    generating_next = threading.Event()
    overlapped: list[bool] = []
    generate, put, calls = worker.backend.generate, worker._put, []

    def counting_generate(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            generating_next.set()
        return generate(*args, **kwargs)

    def gated_put(jobs, groups):  # a sequential worker would never start the next generate while this waits
        overlapped.append(generating_next.wait(30))
        return put(jobs, groups)

    worker.backend.generate, worker._put = counting_generate, gated_put
    ids = stack.enqueue(4, tag="pipelined")  # two claims of 2
    groups = stack.take_groups(ids)
    assert overlapped[0] is True and len(calls) >= 2
    assert {g.worker_id for g in groups} == {"pipelined"}


def test_a_failure_while_finishing_releases_the_batch_and_stops_the_worker(stack, start_in_process):
    w = start_in_process("broken-finisher")
    worker = w.worker
    wait_for(lambda: stack.stats().prompt_backlog == 0 and not worker.held, 60, "an empty backlog")

    def broken_decode(completion):
        raise RuntimeError("a broken tokenizer")

    worker._text = broken_decode
    released0 = worker.released_total
    ids = stack.enqueue(2, tag="broken")
    wait_for(lambda: worker.stopped.is_set(), 60, "the worker stopped")
    assert worker.failed and worker.released_total - released0 == 2 and not worker.held
    start_in_process("after-broken")
    groups = stack.take_groups(ids)
    assert {g.worker_id for g in groups} == {"after-broken"}
