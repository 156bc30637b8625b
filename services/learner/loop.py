"""The training loop every rank runs, top to bottom.

One iteration: rank 0 samples a full rollout batch at version v and broadcasts it; every rank trains
its share of each mini-batch (`step.train_step`); every rank takes part in gathering the weights and
rank 0 publishes v+1; every `checkpoint_every` steps a checkpoint is committed and its ids acked.
`--resume` restores the last committed checkpoint, acks what it covers, and replays the buffer's
pending entries first, so each group's effect enters the model exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.learner import checkpoint, metrics, state
from services.learner.config import LearnerConfig
from services.learner.rank0 import Rank0, RolloutBatch, next_batch, publish, start_rank0
from shared.logs import get_logger
from shared.malloc import reuse_freed_memory

if TYPE_CHECKING:
    from services.learner.control import Control
    from services.learner.engine import Engine
    from services.learner.step import StepSums

log = get_logger("learner")


def run(cfg: LearnerConfig) -> int:
    import logging

    import torch.distributed as dist
    from deepspeed.utils import logger as ds_logger

    from services.learner.control import Control
    from services.learner.engine import build_engine, init_distributed
    from shared.grpc_server import stop_event_on_signals

    ds_logger.setLevel(logging.WARNING)
    reuse_freed_memory()  # rank 0 serves every weight version in 4 MiB chunks
    stop = stop_event_on_signals()
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != cfg.world_size:
        raise ValueError(f"started with {world} processes but world_size is {cfg.world_size}; make them agree")
    control = Control()
    if rank == 0:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        model_path = _model_path(cfg)  # rank 0 builds the cached base if missing, the others wait
    control.barrier()
    if rank != 0:
        model_path = _model_path(cfg)
    ckpt = state.read_checkpoint(cfg.run_dir) if cfg.resume else None
    universal = ckpt is not None and checkpoint.needs_universal(cfg, ckpt)
    tag = control.from_rank0(checkpoint.to_universal(cfg, ckpt) if universal and rank == 0 else None)
    eng = build_engine(cfg, model_path, universal)
    step = 0
    if ckpt is not None:
        tag = tag or ckpt.tag
        eng.load(cfg.run_dir / state.CHECKPOINT_DIR, tag)
        step = ckpt.step
        log.info("resumed", step=step, policy_version=ckpt.policy_version, tag=tag, unacked=len(ckpt.entry_ids),
                 checkpoint_world_size=ckpt.world_size, world_size=cfg.world_size)
    r0 = start_rank0(cfg, ckpt, stop) if rank == 0 else None
    publish(eng, r0, step, cfg.broadcast.bucket_bytes)
    if r0 is not None:
        r0.server.start()
        log.info("weight server up", port=r0.server.port, policy_version=step)
    pad_id = _pad_id(model_path)
    try:
        while step < cfg.total_steps:
            batch = control.from_rank0(next_batch(r0, step, stop) if r0 is not None else None)
            if batch is None:
                break
            step = _train(cfg, eng, r0, batch, step, control, pad_id)
            stopping = control.from_rank0(stop.is_set())
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps or stopping:
                checkpoint.save(cfg, eng, r0, step, control)
                if r0 is not None and cfg.save_hf_every and step % cfg.save_hf_every == 0:
                    checkpoint.export_hf(cfg, r0, model_path, cfg.run_dir / checkpoint.HF_DIR / f"step{step}")
            if stopping:
                log.info("stopping on signal", step=step)
                break
        if r0 is not None and step >= cfg.total_steps:
            checkpoint.export_hf(cfg, r0, model_path, cfg.run_dir / checkpoint.FINAL_DIR)
        if cfg.hold_after_done:  # every rank enters the hold: whether a signal came first is rank 0's to say
            if not stop.is_set():
                log.info("training done, serving the final weights until stopped", policy_version=step)
            control.hold(stop)
    finally:
        if r0 is not None:
            r0.server.stop(cfg.grpc.grace_s)
    log.info("learner finished", step=step, rank=rank)
    dist.destroy_process_group()
    return 0


def _model_path(cfg: LearnerConfig) -> Path:
    if cfg.model_path is not None:
        return cfg.model_path
    from shared.model.cache import ensure_base_model

    return ensure_base_model()


def _pad_id(model_path: Path) -> int:
    from shared.model.io import load_tokenizer

    return int(load_tokenizer(model_path).pad_token_id or 0)


def _train(cfg: LearnerConfig, eng: Engine, r0: Rank0 | None, batch: RolloutBatch, step: int, control: Control,
           pad_id: int) -> int:
    """Train one rollout batch (this rank's share of each mini-batch), publish the next version; the new step."""
    from eureka.v1 import buffer_pb2

    from services.learner.step import reduce_sums, train_step

    groups = [buffer_pb2.TrajectoryGroup.FromString(b) for b in batch.groups]
    lr = eng.scheduler.get_last_lr()[0]
    start = time.monotonic()
    sums = train_step(eng, groups, cfg, step, control.rank, cfg.world_size, pad_id)
    reduced = reduce_sums(sums, control.group)
    seconds = time.monotonic() - start
    publish(eng, r0, step + 1, cfg.broadcast.bucket_bytes)
    if r0 is not None:
        r0.unacked += batch.entry_ids
        _record(cfg, groups, step, lr, sums, reduced, seconds, batch)
    return step + 1


def _record(cfg: LearnerConfig, groups: list, step: int, lr: float, sums: StepSums, reduced: dict,
            seconds: float, batch: RolloutBatch) -> None:
    """The step's line in metrics.jsonl, the Prometheus gauges and one log line (rank 0)."""
    stats = metrics.batch_stats(groups, step)
    record = {
        "step": step + 1, "policy_version": step + 1, "time": time.time(), "lr": lr, **reduced, **stats,
        "optimizer_steps": len(sums.grad_norms), "groups": len(groups), "step_seconds": seconds,
        "wait_seconds": batch.wait_seconds, "samples_per_second": stats["samples"] / max(seconds, 1e-9),
        "filtered": batch.filtered, "stale": batch.stale,
    }
    metrics.observe(record)
    state.append_jsonl(cfg.run_dir / state.METRICS_LOG, record, durable=False)
    log.info("step", step=step + 1, loss=f"{record['loss']:.4f}", reward=f"{stats['reward']:.3f}",
             accuracy=f"{stats['accuracy']:.3f}", clip_fraction=f"{record['clip_fraction']:.3f}",
             grad_norm=f"{record['grad_norm']:.3f}", lr=f"{lr:.3g}", staleness_max=max(stats["staleness"]),
             seconds=f"{seconds:.2f}")
