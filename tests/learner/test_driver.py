"""The buffer driver against a real buffer process: back-pressure, the cursor compare-and-set, full batches."""

from __future__ import annotations

import threading

import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc

from services.learner.config import LearnerConfig
from services.learner.driver import BufferDriver, Dataset, Stopped
from shared.dataset import read_jsonl


def _driver(buffer_proc, dataset, **cfg) -> BufferDriver:
    settings = LearnerConfig(train_batch_groups=4, sample_wait_ms=200, **cfg)
    d = BufferDriver(buffer_proc.channel(), settings, Dataset(read_jsonl(dataset).records), threading.Event())
    d.start()
    return d


def _put_claimed(buffer_proc, n: int, accuracies: tuple[float, ...], version: int = 0) -> None:
    stub = buffer_pb2_grpc.BufferServiceStub(buffer_proc.channel())
    claims = stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w", max_prompts=n)).prompts
    for c in claims:
        samples = [buffer_pb2.Sample(response_token_ids=[5], behaviour_logprobs=[-1.0], reward=a, accuracy=a,
                                     finish_reason="stop") for a in accuracies]
        group = buffer_pb2.TrajectoryGroup(group_id=f"{c.prompt.prompt_id}#{c.attempt}", prompt_id=c.prompt.prompt_id,
                                           attempt=c.attempt, prompt=c.prompt, prompt_token_ids=[1, 2],
                                           samples=samples, policy_version=version, worker_id="w")
        stub.PutGroup(buffer_pb2.PutGroupRequest(group=group, claim_id=c.claim_id, worker_id="w"))


def test_backlog_bound_and_cursor_compare_and_set(buffer_proc, dataset, clean_env) -> None:
    d = _driver(buffer_proc, dataset, recipe={"max_staleness": 1})
    assert d.top_up() == 8  # (1 + 1) batches of 4
    assert d.top_up() == 0
    _put_claimed(buffer_proc, 3, (0.0, 1.0))  # completed groups still count until the learner samples them
    assert d.top_up() == 0
    assert buffer_proc.stats().cursor == 8
    # a restarted driver continues from the buffer's cursor
    again = _driver(buffer_proc, dataset, recipe={"max_staleness": 2})
    assert again.cursor == 8
    again.cursor = 0  # a stale local cursor: the compare-and-set refuses it and the driver takes the stored one
    assert again.top_up() == 4
    assert buffer_proc.stats().cursor == 12
    stub = buffer_pb2_grpc.BufferServiceStub(buffer_proc.channel())
    ids = [c.prompt.prompt_id for c in stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w", max_prompts=12)).prompts]
    # 0-2 were claimed above; none twice (prompt ids follow the shuffled order of the cursor)
    assert sorted(ids) == sorted(again.dataset.prompt(c).prompt_id for c in range(3, 12))


def test_sample_returns_a_full_filtered_batch_and_reports_drops(buffer_proc, dataset, clean_env) -> None:
    d = _driver(buffer_proc, dataset, recipe={"max_staleness": 1})
    d.top_up()
    _put_claimed(buffer_proc, 2, (1.0, 1.0))  # all correct: filtered out
    _put_claimed(buffer_proc, 4, (0.0, 1.0))
    resp, _ = d.sample(version=0)
    assert len(resp.groups) == 4
    assert len(resp.filtered_entry_ids) == 2
    assert d.last_received == resp.groups[-1].entry_id
    assert d.ack([g.entry_id for g in resp.groups]) == 4
    d.stop.set()
    with pytest.raises(Stopped):
        d.sample(version=0)  # nothing more is produced: one short wait, then the stop is seen
