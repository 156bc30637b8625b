"""`eureka learner run` end to end: a real buffer process over real Redis, a producer playing rollout
with the published weights, the learner as real (torchrun) processes; kill -9 and --resume."""

from __future__ import annotations

import pytest


def _trained(run_dir) -> list[str]:
    from services.learner.state import TRAINED_LOG, read_jsonl

    return [i for rec in read_jsonl(run_dir / TRAINED_LOG) for i in rec["entry_ids"]]


def _dropped(run_dir) -> list[str]:
    from services.learner.state import DROPPED_LOG, read_jsonl

    return [i for rec in read_jsonl(run_dir / DROPPED_LOG) for i in rec["filtered"] + rec["stale"]]


def _check_exactly_once(world, learner, producer, steps: int, batch: int = 4) -> None:
    trained = _trained(learner.run_dir)
    dropped = _dropped(learner.run_dir)
    assert len(trained) == steps * batch
    assert len(set(trained)) == len(trained), "a group was trained twice"
    assert not set(trained) & set(dropped)
    produced = set(producer.produced)
    assert set(trained) | set(dropped) <= produced
    stats = world.buffer.stats()
    assert stats.groups_acked_total == len(trained)
    # Every produced group is trained once, dropped by the buffer (filter or staleness), or still in it.
    # (The buffer also drops groups during SampleGroups calls that end in DEADLINE_EXCEEDED: it counts
    # them but cannot report their ids, so the learner's dropped log is a subset of its count.)
    dropped_total = stats.groups_filtered_total + stats.groups_stale_total
    assert len(set(dropped)) <= dropped_total
    assert len(produced) == len(trained) + dropped_total + stats.groups_ready + stats.groups_pending


def _finish(world, learner, producer, steps: int) -> None:
    def done() -> bool:
        producer.check()
        return learner.checkpoint_step() == steps

    world.wait_for(done, 240, f"checkpoint of step {steps}", learner.proc)
    assert world.pull_version(learner.weights_address) == steps
    assert learner.terminate() == 0, learner.log()


def test_one_process_zero0_three_steps(world) -> None:
    learner = world.learner("--world-size", "1", "--zero-stage", "0", "--total-steps", "3", "--checkpoint-every", "2")
    with world.producer() as producer:
        _finish(world, learner, producer, 3)
    records = learner.metrics()
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["groups"] == 4 and r["samples"] == 16 for r in records)
    assert all(r["grad_norm"] > 0 and r["lr"] > 0 for r in records), records
    assert max(producer.versions_seen) >= 2  # the producer generated with published versions
    _check_exactly_once(world, learner, producer, 3)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", ["2", "3"])
def test_two_processes_twenty_steps(world, zero_stage: str) -> None:
    learner = world.learner("--world-size", "2", "--zero-stage", zero_stage, "--total-steps", "20", "--checkpoint-every", "5")
    with world.producer() as producer:
        _finish(world, learner, producer, 20)
    assert [r["policy_version"] for r in learner.metrics()] == list(range(1, 21))
    assert max(producer.versions_seen) >= 15
    _check_exactly_once(world, learner, producer, 20)


@pytest.mark.chaos
def test_kill9_between_checkpoints_then_resume(world) -> None:
    args = ("--world-size", "2", "--zero-stage", "2", "--total-steps", "20", "--checkpoint-every", "5")
    with world.producer() as producer:
        first = world.learner(*args)
        world.wait_for(lambda: producer.check() or len(first.metrics()) >= 7, 240, "step 7", first.proc)
        first.kill9()
        assert first.checkpoint_step() == 5
        second = world.learner(*args, "--resume")
        _finish(world, second, producer, 20)
    steps = [r["step"] for r in second.metrics()]
    assert steps[-1] == 20 and 6 in steps[7:]  # steps after the checkpoint were trained again
    _check_exactly_once(world, second, producer, 20)


@pytest.mark.slow
def test_sync_mode_trains_only_the_latest_version(world) -> None:
    learner = world.learner("--mode", "sync", "--zero-stage", "0", "--total-steps", "4", "--checkpoint-every", "4")
    with world.producer() as producer:
        _finish(world, learner, producer, 4)
    assert [r["staleness"] for r in learner.metrics()] == [[0, 0, 0, 0]] * 4
    _check_exactly_once(world, learner, producer, 4)
