"""Prompt queue against a real redis-server: cursor CAS, backlog cap, claim, reclaim, release, dead letter."""

from __future__ import annotations

import pytest
from eureka.v1 import buffer_pb2

from services.buffer.core import Buffer
from shared.grpc_server import FailedPrecondition, ResourceExhausted

from tests.waiting import wait_until

from .conftest import claim, enqueue, make_config, put


def test_cursor_is_compare_and_set_and_survives_a_learner_restart(buf: Buffer, redis_server) -> None:
    first = enqueue(buf, 0, 4)
    assert (first.enqueued, first.duplicate, first.cursor, first.backlog) == (4, False, 4, 4)
    # A retry after a lost reply is recorded as a duplicate and changes nothing.
    retry = enqueue(buf, 0, 4)
    assert (retry.enqueued, retry.duplicate, retry.cursor, retry.backlog) == (0, True, 4, 4)
    # A learner that lost track and enqueues from the wrong position is refused.
    with pytest.raises(FailedPrecondition, match="stored cursor is 4"):
        enqueue(buf, 2, 4)
    # A restarted learner (and buffer) reads the cursor and continues without skipping or repeating.
    restarted = Buffer(make_config(redis_server))
    assert restarted.get_cursor() == 4
    assert enqueue(restarted, restarted.get_cursor(), 3).cursor == 7
    ids = [c.prompt.prompt_id for c in claim(restarted, n=10)]
    assert ids == [f"train:0:{i}" for i in range(7)]


def test_backlog_cap_refuses_enqueue_with_the_room_left(redis_server) -> None:
    buf = Buffer(make_config(redis_server, max_backlog=5))
    buf.ensure_groups()
    enqueue(buf, 0, 3)
    with pytest.raises(ResourceExhausted, match="enqueue at most 2 now"):
        enqueue(buf, 3, 3)
    assert buf.get_cursor() == 3 and buf.stats().prompt_backlog == 3
    # Completing a prompt frees its place in the backlog.
    put(buf, claim(buf)[0])
    assert enqueue(buf, 3, 3).backlog == 5


def test_claim_put_completes_prompt_and_backlog_counts_queued_and_claimed(buf: Buffer) -> None:
    enqueue(buf, 0, 3)
    claimed = claim(buf, n=2)
    assert [c.attempt for c in claimed] == [1, 1]
    s = buf.stats()
    assert (s.prompt_backlog, s.prompts_pending) == (3, 2)
    put(buf, claimed[0])
    s = buf.stats()
    assert (s.prompt_backlog, s.prompts_pending, s.groups_ready) == (2, 1, 1)


def test_reclaim_after_a_worker_dies_increments_attempt(redis_server) -> None:
    buf = Buffer(make_config(redis_server, lease_s=2.0))  # a lease no stall of a loaded machine outlasts
    buf.ensure_groups()
    enqueue(buf, 0, 1)
    dead_worker = claim(buf, "w-dead")[0]
    assert claim(buf, "w2") == []  # lease not expired yet: nothing to hand out
    again = wait_until(lambda: claim(buf, "w2"), 30, "the expired lease to be reclaimed")
    assert len(again) == 1
    assert again[0].claim_id == dead_worker.claim_id and again[0].attempt == 2
    assert buf.stats().prompts_reclaimed_total == 1
    # The new attempt's group is accepted; the dead worker's late put of the same prompt is refused.
    assert not put(buf, again[0]).duplicate
    with pytest.raises(FailedPrecondition, match="no longer pending"):
        put(buf, dead_worker)
    assert buf.stats().groups_put_total == 1


def test_dead_letter_after_max_attempts(redis_server) -> None:
    buf = Buffer(make_config(redis_server, lease_s=0.1, max_attempts=2))
    buf.ensure_groups()
    enqueue(buf, 0, 1)
    assert claim(buf, "a")[0].attempt == 1
    assert wait_until(lambda: claim(buf, "b"), 30, "the first lease to expire")[0].attempt == 2
    # The second lease expires with max_attempts spent: the next claim dead-letters it and hands out nothing.
    wait_until(lambda: claim(buf, "c") == [] and buf.stats().prompts_dead_lettered_total == 1, 30,
               "the prompt to be dead-lettered")
    s = buf.stats()
    assert (s.prompts_dead_lettered_total, s.prompt_backlog, s.prompts_pending) == (1, 0, 0)
    dead = redis_server.client().xrange(buf.keys.dead)
    assert len(dead) == 1 and dead[0][1][b"id"] == b"train:0:0"


def test_release_hands_prompts_back_at_once_without_counting_a_failure(redis_server) -> None:
    buf = Buffer(make_config(redis_server, max_attempts=1))
    buf.ensure_groups()
    enqueue(buf, 0, 2)
    mine = claim(buf, "draining", n=2)
    released = buf.release_prompts(buffer_pb2.ReleasePromptsRequest(worker_id="draining", claim_ids=[mine[0].claim_id]))
    assert released == 1
    s = buf.stats()  # a released claim waits in the queue: counted in the backlog, no longer as pending
    assert (s.prompt_backlog, s.prompts_pending) == (2, 1)
    # Another worker's claim id is not released by a stranger.
    assert buf.release_prompts(buffer_pb2.ReleasePromptsRequest(worker_id="stranger", claim_ids=[mine[1].claim_id])) == 0
    got = claim(buf, "w2", n=2)
    assert [(c.claim_id, c.attempt) for c in got] == [(mine[0].claim_id, 2)]
    s = buf.stats()
    assert (s.prompts_reclaimed_total, s.prompts_dead_lettered_total) == (0, 0)
    assert (s.prompt_backlog, s.prompts_pending) == (2, 2)  # claimed again: pending again


def test_redis_down_is_unavailable_and_an_empty_restart_recreates_the_groups(buf: Buffer, redis_server, tmp_path) -> None:
    from shared.grpc_server import Unavailable
    from shared.redis_proc import start_redis

    enqueue(buf, 0, 1)
    redis_server.kill()
    with pytest.raises(Unavailable, match="Redis is unreachable"):
        buf.get_cursor()
    # Redis comes back on the same port with no data (no AOF): the buffer recreates its consumer groups.
    fresh = start_redis(tmp_path / "empty", port=redis_server.port, password=redis_server.password)
    try:
        assert claim(buf) == []
        assert enqueue(buf, 0, 2).enqueued == 2
        assert [c.prompt.prompt_id for c in claim(buf, n=2)] == ["train:0:0", "train:0:1"]
    finally:
        fresh.kill()
