"""The launcher's topology from the environment (torchrun's and LeaderWorkerSet's variables) and the
checkpoint-volume check made before a run starts."""

from __future__ import annotations

import shutil

import pytest

from services.learner.checkpoint import count_parameters, estimate_bytes, space_problem
from services.learner.launch import topology


def test_standard_variables() -> None:
    t = topology({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400",
                  "NPROC_PER_NODE": "8"}, world_size=16, gpus=0)
    assert (t.nnodes, t.node_rank, t.nproc_per_node, t.master_addr, t.master_port, t.world_size) == \
        (2, 1, 8, "10.0.0.5", 29400, 16)


def test_leaderworkerset_variables_and_gpu_default() -> None:
    t = topology({"LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "1", "LWS_LEADER_ADDRESS": "learner-0.learner"},
                 world_size=1, gpus=8)
    assert (t.nnodes, t.node_rank, t.master_addr, t.nproc_per_node, t.master_port) == (2, 1, "learner-0.learner", 8, 29500)


def test_one_node_with_nothing_set_is_the_local_world() -> None:
    t = topology({}, world_size=3, gpus=0)
    assert (t.nnodes, t.node_rank, t.nproc_per_node, t.master_addr) == (1, 0, 3, "127.0.0.1")


@pytest.mark.parametrize(("env", "match"), [
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h", "NPROC_PER_NODE": "1"}, "outside 0..NNODES-1"),
    ({"NNODES": "2", "NPROC_PER_NODE": "1"}, "needs MASTER_ADDR"),
    ({"NNODES": "2", "MASTER_ADDR": "h"}, "NPROC_PER_NODE is not set"),
    ({"NNODES": "two"}, "must be integers"),
])
def test_inconsistent_variables_are_refused_with_a_sentence(env: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        topology(env, world_size=1, gpus=0)


def test_checkpoint_volume_check(tmp_path, tiny_model) -> None:
    params, trainable = count_parameters(tiny_model, freeze_vision=True)
    assert 0 < trainable < params  # the frozen tower is not in the optimizer state
    need = estimate_bytes(params, trainable, 4)
    assert need == params * 4 + trainable * 12
    assert space_problem(tmp_path / "run", need, headroom=1.2) == ""
    free = shutil.disk_usage(tmp_path).free
    problem = space_problem(tmp_path / "run", free, headroom=1.2)  # two of them cannot fit
    assert "give the run dir a larger volume" in problem and "GiB free" in problem


def test_a_resume_on_another_world_size_converts_zero_checkpoints_and_needs_room_for_a_third(tmp_path) -> None:
    from services.learner.checkpoint import needs_universal
    from services.learner.config import LearnerConfig
    from services.learner.state import Checkpoint

    ckpt = Checkpoint(step=5, policy_version=5, cursor=20, tag="step5", world_size=2)
    assert needs_universal(LearnerConfig(world_size=1, train_batch_groups=2), ckpt)
    assert not needs_universal(LearnerConfig(world_size=2, train_batch_groups=2), ckpt)
    assert not needs_universal(LearnerConfig(world_size=1, train_batch_groups=2, zero_stage=0), ckpt)  # whole states
    need = int(shutil.disk_usage(tmp_path).free / 2.5)
    assert space_problem(tmp_path / "run", need, headroom=1.0) == ""
    assert "3 of about" in space_problem(tmp_path / "run", need, headroom=1.0, copies=3)
