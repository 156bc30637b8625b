"""The run dir's commit record and logs: atomic replace, one trained-ids record per checkpoint, torn tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.learner.state import (
    CHECKPOINT_FILE,
    TRAINED_LOG,
    Checkpoint,
    append_jsonl,
    log_trained,
    read_checkpoint,
    read_jsonl,
    repair_tail,
    write_checkpoint,
)


def test_checkpoint_round_trip_and_replace(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path, Checkpoint(step=5, policy_version=5, cursor=40, tag="step5", world_size=2,
                                          entry_ids=["1-0", "2-0"]))
    write_checkpoint(tmp_path, Checkpoint(step=10, policy_version=10, cursor=80, tag="step10", world_size=2,
                                          entry_ids=["3-0"]))
    ckpt = read_checkpoint(tmp_path)
    assert ckpt == Checkpoint(step=10, policy_version=10, cursor=80, tag="step10", world_size=2, entry_ids=["3-0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]  # no temporary file left


def test_corrupt_checkpoint_record_is_refused_with_a_sentence(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_text('{"step": 3')
    with pytest.raises(ValueError, match="not a learner checkpoint record"):
        read_checkpoint(tmp_path)


def test_trained_log_gets_each_checkpoint_once(tmp_path: Path) -> None:
    first = Checkpoint(step=5, policy_version=5, cursor=0, tag="step5", world_size=2, entry_ids=["1-0"])
    second = Checkpoint(step=10, policy_version=10, cursor=0, tag="step10", world_size=2, entry_ids=["2-0"])
    log_trained(tmp_path, first)
    log_trained(tmp_path, first)  # resume after a crash between the log and the ack: not logged twice
    log_trained(tmp_path, second)
    assert [r["step"] for r in read_jsonl(tmp_path / TRAINED_LOG)] == [5, 10]


def test_a_torn_last_line_is_not_a_record_and_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / TRAINED_LOG
    append_jsonl(path, {"step": 5, "entry_ids": ["1-0"]})
    with path.open("a") as f:
        f.write('{"step": 10, "entry_')  # kill -9 mid-write
    assert [r["step"] for r in read_jsonl(path)] == [5]
    repair_tail(path)
    log_trained(tmp_path, Checkpoint(step=10, policy_version=10, cursor=0, tag="step10", world_size=2,
                                     entry_ids=["2-0"]))
    assert [r["entry_ids"] for r in read_jsonl(path)] == [["1-0"], ["2-0"]]
