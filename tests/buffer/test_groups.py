"""Trajectory groups against a real redis-server: idempotent put, filter, staleness, exact count, replay, memory."""

from __future__ import annotations

import pytest
from eureka.v1 import buffer_pb2

from services.buffer.core import Buffer
from shared.grpc_server import DeadlineExceeded, FailedPrecondition, ResourceExhausted

from .conftest import claim, enqueue, group_for, make_config, put, sample_req


def _ready(buf: Buffer, n: int, **kw) -> list[str]:
    """Enqueues n prompts, claims them and puts one group each; returns the entry ids in put order."""
    start = buf.get_cursor()
    enqueue(buf, start, n)
    return [put(buf, c, **kw).entry_id for c in claim(buf, n=n)]


def test_put_is_idempotent_on_group_id(buf: Buffer) -> None:
    enqueue(buf, 0, 1)
    c = claim(buf)[0]
    first = put(buf, c)
    retry = put(buf, c)  # the reply of the first was lost; the worker retries
    assert not first.duplicate and retry.duplicate and retry.entry_id == first.entry_id
    s = buf.stats()
    assert (s.groups_put_total, s.groups_duplicate_total, s.groups_ready, s.prompt_backlog) == (1, 1, 1, 0)


def test_put_with_another_prompts_claim_is_refused(buf: Buffer) -> None:
    enqueue(buf, 0, 2)
    a, b = claim(buf, n=2)
    req = buffer_pb2.PutGroupRequest(group=group_for(a), claim_id=b.claim_id, worker_id="w1")
    with pytest.raises(FailedPrecondition, match="is for prompt 'train:0:1'"):
        buf.put_group(req)
    assert buf.stats().groups_put_total == 0


def test_put_with_an_attempt_the_claim_never_had_is_refused(buf: Buffer) -> None:
    enqueue(buf, 0, 1)
    c = claim(buf)[0]
    c.attempt = 2
    with pytest.raises(FailedPrecondition, match="delivered 1 time"):
        put(buf, c)
    assert buf.stats().groups_put_total == 0


def test_filter_and_staleness_drop_ack_count_and_report(buf: Buffer) -> None:
    enqueue(buf, 0, 4)
    cs = claim(buf, n=4)
    kept = put(buf, cs[0], accuracies=(0.0, 1.0), version=5).entry_id
    too_easy = put(buf, cs[1], accuracies=(1.0, 1.0), version=5).entry_id
    stale = put(buf, cs[2], accuracies=(0.0, 1.0), version=1).entry_id
    kept2 = put(buf, cs[3], accuracies=(0.5, 0.5), version=2).entry_id  # exactly max_staleness behind: kept
    resp = buf.sample_groups(sample_req(2, policy_version=6, max_staleness=4, filter_low=0.1, filter_high=0.9))
    assert [g.entry_id for g in resp.groups] == [kept, kept2]
    assert list(resp.filtered_entry_ids) == [too_easy] and list(resp.stale_entry_ids) == [stale]
    s = buf.stats()
    assert (s.groups_filtered_total, s.groups_stale_total, s.groups_pending, s.groups_ready) == (1, 1, 2, 0)


def test_sample_returns_exact_count_or_deadline_and_keeps_partial_reads(buf: Buffer) -> None:
    first = _ready(buf, 2)
    with pytest.raises(DeadlineExceeded, match="only 2 of 3"):
        buf.sample_groups(sample_req(3, wait_ms=100))
    third = _ready(buf, 1)
    resp = buf.sample_groups(sample_req(3, wait_ms=100))
    assert [g.entry_id for g in resp.groups] == first + third
    assert resp.groups[0].group.samples[0].behaviour_logprobs == [-0.5] * 4


def test_unacked_entries_replay_in_order_after_a_learner_restart(buf: Buffer) -> None:
    ids = _ready(buf, 5)
    got = [g.entry_id for g in buf.sample_groups(sample_req(2)).groups]
    got += [g.entry_id for g in buf.sample_groups(sample_req(2)).groups]
    assert got == ids[:4]
    assert buf.ack_groups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=ids[:1])) == 1
    # The learner crashed after checkpointing only the first; it comes back with replay_pending.
    replay = buf.sample_groups(sample_req(4, replay_pending=True))
    assert [g.entry_id for g in replay.groups] == ids[1:5]
    assert buf.ack_groups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=ids)) == 4
    s = buf.stats()
    assert (s.groups_acked_total, s.groups_pending, s.groups_ready) == (5, 0, 0)
    with pytest.raises(DeadlineExceeded):
        buf.sample_groups(sample_req(1, replay_pending=True))


def test_a_lost_sample_reply_is_delivered_again_with_after_entry_id(buf: Buffer) -> None:
    ids = _ready(buf, 4)
    received = buf.sample_groups(sample_req(2)).groups
    buf.sample_groups(sample_req(2))  # this reply never reached the learner
    again = buf.sample_groups(sample_req(2, after_entry_id=received[-1].entry_id, wait_ms=50))
    assert [g.entry_id for g in again.groups] == ids[2:]


def test_put_refused_when_redis_memory_is_near_maxmemory(buf: Buffer, redis_server) -> None:
    enqueue(buf, 0, 1)
    c = claim(buf)[0]
    r = redis_server.client()
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(used + 1024))
    try:
        with pytest.raises(ResourceExhausted, match="put refused"):
            put(Buffer(make_config(redis_server)), c)
    finally:
        r.config_set("maxmemory", "0")
    assert buf.stats().groups_put_total == 0
    assert not put(buf, c).duplicate  # room again (after the one-second memory check window)


def test_dropped_groups_are_recorded_even_when_the_sample_runs_out_of_time(buf: Buffer) -> None:
    enqueue(buf, 0, 2)
    cs = claim(buf, n=2)
    too_easy = put(buf, cs[0], accuracies=(1.0, 1.0)).entry_id
    kept = put(buf, cs[1], accuracies=(0.0, 1.0)).entry_id
    with pytest.raises(DeadlineExceeded):  # the reply never names the drop: the dropped hash does
        buf.sample_groups(sample_req(2, wait_ms=100, filter_low=0.1, filter_high=0.9))
    dropped = {k.decode(): v.decode() for k, v in buf.r.hgetall(buf.keys.dropped).items()}
    assert dropped == {too_easy: "groups_filtered_total"}
    assert kept not in dropped


def test_put_groups_stores_a_batch_and_reports_each_put(buf: Buffer) -> None:
    enqueue(buf, 0, 4)
    a, b, c, d = claim(buf, n=4)
    first = put(buf, a)  # already stored: the batch's put of it is a duplicate
    stolen = buffer_pb2.PutGroupRequest(group=group_for(d), claim_id=c.claim_id, worker_id="w1")  # c's claim, d's group
    reqs = [buffer_pb2.PutGroupRequest(group=group_for(x), claim_id=x.claim_id, worker_id="w1") for x in (a, b)]
    reply = buf.put_groups(buffer_pb2.PutGroupsRequest(puts=[*reqs, stolen]))
    dup, stored, rejected = reply.results
    assert dup.duplicate and dup.entry_id == first.entry_id and not dup.rejected
    assert stored.entry_id and not stored.duplicate and not stored.rejected
    assert not rejected.entry_id and "is for prompt 'train:0:2', not 'train:0:3'" in rejected.rejected
    again = buf.put_groups(buffer_pb2.PutGroupsRequest(puts=reqs))  # the whole call retried after a lost reply
    assert [(r.entry_id, r.duplicate) for r in again.results] == [(first.entry_id, True), (stored.entry_id, True)]
    s = buf.stats()
    assert (s.groups_put_total, s.groups_duplicate_total, s.groups_ready, s.prompt_backlog) == (2, 3, 2, 2)
    got = buf.sample_groups(sample_req(2))
    assert [g.group.group_id for g in got.groups] == [f"{a.prompt.prompt_id}#1", f"{b.prompt.prompt_id}#1"]


def test_put_after_redis_lost_its_script_cache(buf: Buffer) -> None:
    """A restarted Redis (AOF keeps data, not scripts) answers NOSCRIPT: the put loads the script and goes on."""
    enqueue(buf, 0, 2)
    a, b = claim(buf, n=2)
    first = put(buf, a)
    buf.r.script_flush()
    second = put(buf, b)
    assert not first.duplicate and not second.duplicate and second.entry_id > first.entry_id
    assert buf.stats().groups_put_total == 2
