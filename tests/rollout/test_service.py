"""Two rollout worker processes against real buffer, reward and weight-stream servers on a tiny model."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from eureka.v1 import rollout_pb2
import torch

from shared.model.io import generation_stop_ids, load_model, load_tokenizer
from shared.model.logprobs import response_logprobs
from shared.model.prompts import build_prompt_inputs
from shared.grpc_client import wait_serving
from shared.weights import deserialize_state_dict
from tests.rollout.conftest import MAX_TOKENS, N_SAMPLES, channel, perturbed, wait_for

RUNNING = rollout_pb2.WORKER_STATE_RUNNING


NAMES = ("worker-a", "worker-b")


@pytest.fixture(scope="module")
def pool(stack) -> Iterator[list]:
    """This module's worker processes, stopped at its end so that no other module's prompts go to them."""
    started = [stack.start_worker(name) for name in NAMES]
    yield started
    for proc, _ in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def workers(stack, pool):
    """Two running workers on the published version: a worker an earlier test killed is started again, so
    the tests hold in any order."""
    for i, (proc, _) in enumerate(pool):
        if proc.poll() is not None:
            pool[i] = stack.start_worker(NAMES[i])
    version = stack.store.snapshot().version
    for proc, port in pool:
        wait_for(lambda p=port: stack.status(p).state == RUNNING, 120, "worker RUNNING")
        wait_serving(channel(port), timeout_s=10)  # health turns SERVING once the worker runs
        wait_for(lambda p=port: stack.status(p).policy_version == version, 60, f"worker on version {version}")
    return pool


def max_logprob_diff(groups, model_path, state_dict=None) -> float:
    """Largest |behaviour - teacher-forced| log-prob over every token of the groups, under the given weights."""
    model = load_model(model_path)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    tok = load_tokenizer(model_path)
    worst = 0.0
    with torch.no_grad():
        for g in groups:
            inputs = build_prompt_inputs(g.prompt, tok)
            ref = response_logprobs(model, inputs, [list(s.response_token_ids) for s in g.samples], temperature=1.0)
            for s, r in zip(g.samples, ref, strict=True):
                worst = max(worst, (torch.tensor(list(s.behaviour_logprobs)) - r).abs().max().item())
    return worst


def test_groups_arrive_with_shapes_versions_and_teacher_forced_logprobs(stack, workers):
    version = stack.store.snapshot().version
    ids = stack.enqueue(4)
    groups = stack.take_groups(ids)
    tok = load_tokenizer(stack.model_path)
    stops = set(generation_stop_ids(tok))
    for g in groups:
        assert g.group_id == f"{g.prompt_id}#{g.attempt}" and g.attempt == 1
        assert g.policy_version == version
        assert g.worker_id in ("worker-a", "worker-b")
        assert list(g.prompt_token_ids) == build_prompt_inputs(g.prompt, tok).input_ids
        assert len(g.samples) == N_SAMPLES
        assert g.generate_seconds > 0 and g.created_unix > 0
        for s in g.samples:
            n = len(s.response_token_ids)
            assert 1 <= n <= MAX_TOKENS and len(s.behaviour_logprobs) == n
            assert not stops & set(s.response_token_ids[:-1])
            if s.finish_reason == "stop":
                assert s.response_token_ids[-1] in stops
            else:
                assert s.finish_reason == "length" and n == MAX_TOKENS
            assert s.response_text == tok.decode(list(s.response_token_ids), skip_special_tokens=True)
            assert s.reward == pytest.approx(s.accuracy + 0.5 * s.format)
    published = stack.store.snapshot()
    served = None if version == 0 else deserialize_state_dict(published.blob)
    diff = max_logprob_diff(groups, stack.model_path, served)
    print(f"behaviour vs teacher-forced log-prob max abs diff (float32): {diff:.3e}")
    assert diff < 1e-3


def test_publishing_a_version_switches_both_workers_within_one_batch(stack, workers):
    new = stack.store.snapshot().version + 1
    v1 = perturbed(stack.model_path, seed=7 + new)
    stack.store.publish(new, v1)
    for _, port in workers:  # idle workers pull too, so both serve the new version before their next batch
        wait_for(lambda p=port: stack.status(p).policy_version == new, 30, f"worker on version {new}")
    ids = stack.enqueue(4)
    groups = stack.take_groups(ids)
    assert {g.policy_version for g in groups} == {new}
    diff = max_logprob_diff(groups, stack.model_path, v1)
    print(f"version {new}: behaviour vs teacher-forced max abs diff: {diff:.3e}")
    assert diff < 1e-3
    assert max_logprob_diff(groups[:1], stack.model_path) > 1e-2  # they are not the base model's log-probs


def test_kill9_of_a_worker_loses_no_prompt(stack, workers):
    (victim, victim_port), (survivor, _) = workers
    ids = stack.enqueue(6)
    wait_for(lambda: stack.status(victim_port).prompts_in_flight > 0, 60, "victim holding prompts", every_s=0.01)
    victim.kill()
    victim.wait()
    groups = stack.take_groups(ids, timeout_s=90)
    reclaimed = [g for g in groups if g.attempt >= 2]
    assert reclaimed and all(g.worker_id == "worker-b" for g in reclaimed)
    assert stack.stats().prompts_pending == 0
    assert survivor.poll() is None


def test_sigterm_finishes_the_batch_in_flight_and_exits_zero(stack, workers):
    _, (worker, port) = workers
    stats0 = stack.stats()
    ids = stack.enqueue(4)
    wait_for(lambda: stack.status(port).prompts_in_flight > 0, 60, "worker holding prompts", every_s=0.01)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stats = stack.stats()
    put = stats.groups_put_total - stats0.groups_put_total
    assert put >= 1  # the batch in flight was finished, not dropped
    assert stats.prompts_pending == 0  # nothing left claimed by the drained worker
    assert put + stats.prompt_backlog == len(ids)  # every other prompt is still queued
