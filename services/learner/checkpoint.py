"""Checkpoints: the DeepSpeed state (fsync'd) and its commit record, HF exports, and whether they fit the volume.

Order of a checkpoint: DeepSpeed files on every rank (fsync'd) -> `checkpoint.json` committed -> trained
ids logged -> acked in the buffer -> older tags removed. So two tags exist for a moment: the volume must
hold two checkpoints (plus the HF exports), which `space_problem` checks before the first step.
"""

from __future__ import annotations

import shutil
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


def space_problem(run_dir: Path, need: int, headroom: float) -> str:
    """A sentence when the run dir's volume cannot hold two checkpoints of `need` bytes (with headroom)."""
    existing = sum(f.stat().st_size for f in (run_dir / state.CHECKPOINT_DIR).rglob("*") if f.is_file())
    probe = run_dir if run_dir.exists() else next(p for p in run_dir.parents if p.exists())
    free = shutil.disk_usage(probe).free
    want = int(2 * need * headroom) - existing
    if free >= want:
        return ""
    return (f"the run dir's volume ({probe}) has {free / 2**30:.2f} GiB free, but checkpoints need "
            f"{want / 2**30:.2f} GiB (two of about {need / 2**30:.2f} GiB each, as the old one is removed only "
            "after the new one is durable); give the run dir a larger volume")


def save(cfg: LearnerConfig, eng: Engine, r0: Rank0 | None, step: int, control: Control) -> None:
    """DeepSpeed files (fsync'd) -> commit record -> trained-ids log -> ack; old tags removed after the commit."""
    start = time.monotonic()
    root = cfg.run_dir / state.CHECKPOINT_DIR
    tag = f"step{step}"
    eng.save(root, tag, client_state={"step": step})
    if r0 is not None:
        ckpt = state.Checkpoint(step=step, policy_version=step, cursor=r0.driver.cursor, tag=tag,
                                entry_ids=r0.unacked)
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


def export_hf(cfg: LearnerConfig, r0: Rank0, model_path: Path, dest: Path) -> None:
    """The last published weights as a plain HF checkpoint directory (for `eureka eval`, vLLM)."""
    from shared.model.io import load_model, load_tokenizer, save_model
    from shared.weights import deserialize_state_dict

    version, blob, _ = r0.store.current()
    model = load_model(model_path, freeze_vision=False)
    model.load_state_dict(deserialize_state_dict(blob))
    save_model(model, load_tokenizer(model_path), dest, cfg.recipe.min_pixels, cfg.recipe.max_pixels)
    log.info("HF checkpoint saved", policy_version=version, path=str(dest))
