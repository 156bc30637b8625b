"""The run dir: the committed checkpoint record and the append-only logs, all written durably.

`checkpoint.json` is the commit point of a checkpoint: it names the DeepSpeed tag and carries the
step, policy version, dataset cursor, world size and the buffer entry ids trained since the previous checkpoint.
It is replaced atomically (write, fsync, rename, fsync dir) only after the DeepSpeed files are fsync'd.
`trained_ids.jsonl` gets one line per committed checkpoint with those ids, before they are acked, so
each id whose effect is in the model appears exactly once. `dropped_ids.jsonl` records the ids the
buffer dropped (online filter or staleness) and `metrics.jsonl` one line per step.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_DIR = "checkpoints"
TRAINED_LOG = "trained_ids.jsonl"
DROPPED_LOG = "dropped_ids.jsonl"
METRICS_LOG = "metrics.jsonl"


@dataclass
class Checkpoint:
    step: int
    policy_version: int
    cursor: int
    tag: str
    world_size: int  # of the run that wrote it: a resume with another one loads it as a universal checkpoint
    entry_ids: list[str] = field(default_factory=list)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under `path`, the directories themselves and the parent (a DeepSpeed tag dir)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
    fsync_dir(path.parent)


def write_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    path = run_dir / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(asdict(ckpt), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(run_dir)


def read_checkpoint(run_dir: Path) -> Checkpoint | None:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return Checkpoint(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path} is not a learner checkpoint record ({e}); restore it or start a new run dir") from e


def append_jsonl(path: Path, record: dict[str, Any], durable: bool = True) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        if durable:
            os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a log (a line cut short by a crash is not a record)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def repair_tail(path: Path) -> None:
    """Drop a last line cut short by a crash, so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            os.fsync(f.fileno())


def log_trained(run_dir: Path, ckpt: Checkpoint) -> None:
    """Append the checkpoint's ids to the trained log unless that step is there already (resume after a crash)."""
    path = run_dir / TRAINED_LOG
    repair_tail(path)
    records = read_jsonl(path)
    if records and records[-1]["step"] >= ckpt.step:
        return
    append_jsonl(path, {"step": ckpt.step, "entry_ids": ckpt.entry_ids})
