"""Checkpoints: the DeepSpeed state (fsync'd) and its commit record, HF exports, and whether they fit the volume.

Order of a checkpoint: DeepSpeed files on every rank (fsync'd) -> `checkpoint.json` committed -> trained
ids logged -> acked in the buffer -> older tags removed. So two tags exist for a moment: the volume must
hold two checkpoints (plus the HF exports), which `space_problem` checks before the first step.

A resume with another world size than the checkpoint's converts the tag once into DeepSpeed's universal
format (`<tag>-universal`, written aside and renamed when whole; the next commit removes it) and loads that:
ZeRO's partitioned optimizer state is cut per rank, so it cannot be read by a different number of ranks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.learner import metrics, state
from services.learner.config import LearnerConfig
from shared.logs import get_logger

if TYPE_CHECKING:
    from services.learner.control import Control
    from services.learner.engine import Engine
    from services.learner.rank0 import Rank0

log = get_logger("learner")

FINAL_DIR = "final"  # the last version as an HF checkpoint directory
HF_DIR = "hf"  # periodic HF exports: hf/step<N>
ADAM_BYTES = 12  # fp32 master weight + Adam's two moments per trainable parameter
UNIVERSAL_SUFFIX = "-universal"


def estimate_bytes(params: int, trainable: int, weight_bytes: int) -> int:
    """Size of one DeepSpeed checkpoint over all ranks: the weights, plus master weights and Adam state."""
    return params * weight_bytes + trainable * ADAM_BYTES


def count_parameters(model_path: Path, freeze_vision: bool) -> tuple[int, int]:
    """(all, trainable) parameters of the checkpoint's architecture, built on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(str(model_path)))
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    return total, total - vision if freeze_vision else total


def space_problem(run_dir: Path, need: int, headroom: float, copies: int = 2) -> str:
    """A sentence when the run dir's volume cannot hold `copies` checkpoints of `need` bytes (with headroom):
    two (the old one is removed only after the new one is durable), three while a universal one is written."""
    existing = sum(f.stat().st_size for f in (run_dir / state.CHECKPOINT_DIR).rglob("*") if f.is_file())
    probe = run_dir if run_dir.exists() else next(p for p in run_dir.parents if p.exists())
    free = shutil.disk_usage(probe).free
    want = int(copies * need * headroom) - existing
    if free >= want:
        return ""
    return (f"the run dir's volume ({probe}) has {free / 2**30:.2f} GiB free, but checkpoints need "
            f"{want / 2**30:.2f} GiB ({copies} of about {need / 2**30:.2f} GiB each, as the old one is removed only "
            "after the new one is durable); give the run dir a larger volume")


def save(cfg: LearnerConfig, eng: Engine, r0: Rank0 | None, step: int, control: Control) -> None:
    """DeepSpeed files (fsync'd) -> commit record -> trained-ids log -> ack; old tags removed after the commit."""
    start = time.monotonic()
    root = cfg.run_dir / state.CHECKPOINT_DIR
    tag = f"step{step}"
    eng.save(root, tag, client_state={"step": step, **_universal_info()})
    if r0 is not None:
        ckpt = state.Checkpoint(step=step, policy_version=step, cursor=r0.driver.cursor, tag=tag,
                                world_size=cfg.world_size, entry_ids=r0.unacked)
        state.write_checkpoint(cfg.run_dir, ckpt)
        state.log_trained(cfg.run_dir, ckpt)
        acked = r0.driver.ack(r0.unacked) if r0.unacked else 0
        r0.unacked = []
        for old in root.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - start)
        log.info("checkpoint committed", step=step, tag=tag, acked=acked, seconds=f"{time.monotonic() - start:.2f}")
    control.barrier()


def _universal_info() -> dict[str, dict[str, float]]:
    """What DeepSpeed's universal conversion asks of a checkpoint's client state (no tensor or pipeline parallelism)."""
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    return {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def needs_universal(cfg: LearnerConfig, ckpt: state.Checkpoint) -> bool:
    """A ZeRO checkpoint written by another number of ranks (ZeRO-0 keeps whole states: any world reads it)."""
    return cfg.zero_stage > 0 and ckpt.world_size != cfg.world_size


def to_universal(cfg: LearnerConfig, ckpt: state.Checkpoint) -> str:
    """Convert the committed tag to the universal format (rank 0, once); the tag to load."""
    root = cfg.run_dir / state.CHECKPOINT_DIR
    tag = ckpt.tag + UNIVERSAL_SUFFIX
    if (root / tag).is_dir():  # converted by an earlier attempt (renamed only when whole)
        return tag
    start = time.monotonic()
    partial = root / f"{tag}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(root / ckpt.tag), "--output_folder", str(partial)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"converting checkpoint {ckpt.tag} (world size {ckpt.world_size}) to the universal "
                           f"format for world size {cfg.world_size} failed; resume with world_size "
                           f"{ckpt.world_size}, or fix the cause:\n{done.stderr[-2000:]}")
    state.fsync_tree(partial)
    partial.rename(root / tag)
    (root / "latest_universal").unlink(missing_ok=True)  # the converter's pointer names the partial dir
    state.fsync_dir(root)
    log.info("universal checkpoint written", tag=tag, from_world_size=ckpt.world_size, world_size=cfg.world_size,
             seconds=f"{time.monotonic() - start:.1f}")
    return tag


def export_hf(cfg: LearnerConfig, r0: Rank0, model_path: Path, dest: Path) -> None:
    """The last published weights as a plain HF checkpoint directory (for `eureka eval`, vLLM)."""
    from shared.model.io import load_model, load_tokenizer, save_model
    from shared.weights import deserialize_state_dict

    version, blob, _ = r0.store.current()
    model = load_model(model_path, freeze_vision=False)
    model.load_state_dict(deserialize_state_dict(blob))
    save_model(model, load_tokenizer(model_path), dest, cfg.recipe.min_pixels, cfg.recipe.max_pixels)
    log.info("HF checkpoint saved", policy_version=version, path=str(dest))
