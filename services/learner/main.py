"""`eureka learner run`: the training driver, top to bottom.

Every process (one per rank: started here when world_size > 1, or by torchrun) builds the DeepSpeed engine;
rank 0 alone talks to the buffer, serves the weights and writes the run dir, and broadcasts each
batch to the others. One loop iteration: sample a full batch at version v, each rank trains its
share, publish v+1, and every `checkpoint_every` steps: DeepSpeed checkpoint (fsync'd), commit the
checkpoint record, log the trained ids, then ack them in the buffer. `--resume` restores the last
committed checkpoint, acks what it covers, and replays the buffer's pending entries first, so each
group's effect enters the model exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.learner import metrics, state
from services.learner.config import LearnerConfig
from shared.logs import get_logger, setup_logging
from shared.malloc import reuse_freed_memory

log = get_logger("learner")

FINAL_DIR = "final"  # the last version as an HF checkpoint directory
SETTINGS_ENV = "LEARNER_CHILD_SETTINGS"  # no EUREKA_ prefix: not a settings variable itself


def main(settings: LearnerConfig) -> int:
    setup_logging("learner")
    problem = _refusal(settings)
    if problem:
        log.error("refusing to start", reason=problem)
        print(f"eureka learner run: {problem}", file=sys.stderr)
        return 2
    if settings.world_size > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(settings)
    return run(settings)


def _refusal(cfg: LearnerConfig) -> str:
    if cfg.data_path is None:
        return "no training data: pass --data-path FILE.jsonl (MM-Eureka JSONL)"
    if not cfg.data_path.is_file():
        return f"--data-path {cfg.data_path} does not exist; pass an MM-Eureka JSONL file"
    if cfg.image_root is not None and not cfg.image_root.is_dir():
        return f"--image-root {cfg.image_root} is not a folder; pass the folder the image paths start from"
    if cfg.model_path is not None and not (cfg.model_path / "config.json").is_file():
        return f"--model-path {cfg.model_path} is not a model directory (no config.json)"
    if not cfg.resume and (cfg.run_dir / state.CHECKPOINT_FILE).is_file():
        return f"{cfg.run_dir} already holds a checkpoint: pass --resume to continue it, or choose a new --run-dir"
    return ""


def _launch(cfg: LearnerConfig) -> int:
    """Start world_size local processes of this module (what torchrun does for one node, without its agent:
    SIGTERM reaches every rank, rank 0 checkpoints and they exit 0 together). Settings travel in the env."""
    from shared.redis_proc import free_port

    env = os.environ.copy()
    env[SETTINGS_ENV] = cfg.model_dump_json(exclude={"security"})
    sec = cfg.security  # secrets are not in the JSON dump: pass them as the usual variables
    if sec.service_token is not None:
        env["EUREKA_SECURITY__SERVICE_TOKEN"] = sec.service_token.get_secret_value()
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(sec, name) is not None:
            env[f"EUREKA_SECURITY__{name.upper()}"] = str(getattr(sec, name))
    env.update(WORLD_SIZE=str(cfg.world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.setdefault("OMP_NUM_THREADS", "1")
    procs = [
        subprocess.Popen([sys.executable, "-m", "services.learner.main"], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(cfg.world_size)
    ]
    log.info("learner processes started", world_size=cfg.world_size, pids=[p.pid for p in procs])

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:  # one rank failing fails the run: stop the others rather than leave them waiting on it
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            log.error("a learner process failed, stopping the others", codes=codes)
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.5)


@dataclass
class Rank0:
    """What only rank 0 holds: the buffer driver, the weight server and the ids trained since the last ack."""

    driver: Any
    store: Any
    server: Any
    hub: Any = None  # the broadcast sender, when broadcast.enabled
    unacked: list[str] = field(default_factory=list)


def run(cfg: LearnerConfig) -> int:
    import logging

    import torch.distributed as dist
    from deepspeed.utils import logger as ds_logger

    from services.learner.engine import build_engine, init_distributed
    from shared.grpc_server import stop_event_on_signals

    ds_logger.setLevel(logging.WARNING)
    reuse_freed_memory()  # rank 0 serves every weight version in 4 MiB chunks
    stop = stop_event_on_signals()
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != cfg.world_size:
        raise ValueError(f"started with {world} processes but world_size is {cfg.world_size}; make them agree")
    # Control messages (batches, stop) on gloo with a long timeout: rank 1.. wait while rank 0 waits for rollout.
    control = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
    run_dir = cfg.run_dir
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        model_path = _model_path(cfg)
    dist.barrier(group=control)
    if rank != 0:
        model_path = _model_path(cfg)
    ckpt = state.read_checkpoint(run_dir) if cfg.resume else None
    eng = build_engine(cfg, model_path)
    step = 0
    if ckpt is not None:
        eng.load(run_dir / state.CHECKPOINT_DIR, ckpt.tag)
        step = ckpt.step
        log.info("resumed", step=step, policy_version=ckpt.policy_version, tag=ckpt.tag, unacked=len(ckpt.entry_ids))
    r0 = _start_rank0(cfg, ckpt, stop) if rank == 0 else None
    _publish(eng, r0, step)
    if r0 is not None:
        r0.server.start()
        log.info("weight server up", port=r0.server.port, policy_version=step)
    pad_id = _pad_id(model_path)
    try:
        while step < cfg.total_steps:
            batch = _next_batch(r0, step, stop) if rank == 0 else None
            box = [batch]
            dist.broadcast_object_list(box, src=0, group=control)
            batch = box[0]
            if batch is None:
                break
            step = _train(cfg, eng, r0, batch, step, rank, world, control, pad_id)
            box = [stop.is_set()] if rank == 0 else [False]
            dist.broadcast_object_list(box, src=0, group=control)
            stopping = box[0]
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps or stopping:
                _checkpoint(cfg, eng, r0, step, control)
            if stopping:
                log.info("stopping on signal", step=step)
                break
        if r0 is not None and step >= cfg.total_steps:
            _save_final(cfg, r0, model_path)
        if cfg.hold_after_done:  # every rank enters the hold: whether a signal came first is rank 0's to say
            if not stop.is_set():
                log.info("training done, serving the final weights until stopped", policy_version=step)
            _hold(stop, control)
    finally:
        if r0 is not None:
            r0.server.stop(cfg.grpc.grace_s)
    log.info("learner finished", step=step, rank=rank)
    dist.destroy_process_group()
    return 0


def _save_final(cfg: LearnerConfig, r0: Rank0, model_path: Path) -> None:
    """The last published weights as a plain HF checkpoint in `<run_dir>/final` (for `eureka eval`)."""
    from shared.model.io import load_model, load_tokenizer, save_model
    from shared.weights import deserialize_state_dict

    version, blob, _ = r0.store.current()
    model = load_model(model_path, freeze_vision=False)
    model.load_state_dict(deserialize_state_dict(blob))
    save_model(model, load_tokenizer(model_path), cfg.run_dir / FINAL_DIR, cfg.recipe.min_pixels, cfg.recipe.max_pixels)
    log.info("final model saved", policy_version=version, path=str(cfg.run_dir / FINAL_DIR))


def _hold(stop: Any, control: Any) -> None:
    """Rank 0 waits for the stop signal (at once if it came already), then releases the others (they wait in the
    broadcast). Each rank deciding from its own stop event would not do: a SIGTERM that lands while rank 0 saves
    the final model finds rank 1 already holding, and rank 0 would exit without releasing it."""
    import torch.distributed as dist

    from shared.grpc_server import wait_until_stopped

    if dist.get_rank() == 0:
        wait_until_stopped(stop)
    dist.broadcast_object_list([None], src=0, group=control)


def _model_path(cfg: LearnerConfig) -> Path:
    if cfg.model_path is not None:
        return cfg.model_path
    from shared.model.cache import ensure_base_model

    return ensure_base_model()


def _pad_id(model_path: Path) -> int:
    from shared.model.io import load_tokenizer

    return int(load_tokenizer(model_path).pad_token_id or 0)


def _start_rank0(cfg: LearnerConfig, ckpt: state.Checkpoint | None, stop: Any) -> Rank0:
    from services.learner.driver import BufferDriver, Dataset
    from shared.dataset import read_jsonl
    from shared.grpc_client import create_channel
    from shared.grpc_server import GrpcServer
    from shared.metrics import serve_metrics
    from services.learner.engine import VISION_PREFIX
    from shared.weights import WeightStore, add_weight_service
    from shared.weights.hub import BroadcastHub

    data = read_jsonl(cfg.data_path, cfg.image_root)
    for line in data.skipped:
        log.warning("dataset line skipped", detail=line)
    driver = BufferDriver(create_channel(cfg.buffer_address, cfg.grpc, cfg.security), cfg, Dataset(data.records), stop)
    driver.start()
    if ckpt is not None:  # the checkpoint is durable: finish what a crash may have cut short
        state.log_trained(cfg.run_dir, ckpt)
        if ckpt.entry_ids:
            driver.ack(ckpt.entry_ids)
    store = WeightStore()
    server = GrpcServer(lambda s: add_weight_service(s, store), host=cfg.host, port=cfg.weights_port,
                        grpc_cfg=cfg.grpc, security=cfg.security)
    serve_metrics(cfg.metrics_port)
    state.repair_tail(cfg.run_dir / state.DROPPED_LOG)
    state.repair_tail(cfg.run_dir / state.METRICS_LOG)
    frozen = VISION_PREFIX if cfg.recipe.freeze_vision else None  # never broadcast: in every worker's first pull
    return Rank0(driver, store, server, BroadcastHub(cfg.broadcast, frozen) if cfg.broadcast.enabled else None)


def _publish(eng: Any, r0: Rank0 | None, version: int) -> None:
    start = time.monotonic()
    sd = eng.consolidated_state_dict()  # every rank takes part under ZeRO-3
    if r0 is not None:
        if r0.hub is not None:  # the joined workers first, then the gRPC store (what they would pull otherwise)
            r0.hub.send(version, sd)
        r0.store.publish(version, sd)
        metrics.POLICY_VERSION.set(version)
        metrics.PUBLISH_SECONDS.observe(time.monotonic() - start)
        log.info("weights published", policy_version=version, seconds=f"{time.monotonic() - start:.3f}")


def _next_batch(r0: Rank0, version: int, stop: Any) -> dict[str, Any] | None:
    """A full batch from the buffer (None when stopping); dropped ids are logged at once."""
    from services.learner.driver import Stopped

    if stop.is_set():
        return None
    try:
        resp, waited = r0.driver.sample(version)
    except Stopped:
        return None
    dropped = {"filtered": list(resp.filtered_entry_ids), "stale": list(resp.stale_entry_ids)}
    if dropped["filtered"] or dropped["stale"]:
        state.append_jsonl(r0.driver.cfg.run_dir / state.DROPPED_LOG, {"policy_version": version, **dropped})
    return {
        "groups": [g.group.SerializeToString() for g in resp.groups],
        "entry_ids": [g.entry_id for g in resp.groups],
        "wait_seconds": waited,
        "dropped": {k: len(v) for k, v in dropped.items()},
    }


def _train(cfg: LearnerConfig, eng: Any, r0: Rank0 | None, batch: dict[str, Any], step: int, rank: int, world: int,
           control: Any, pad_id: int) -> int:
    """Train one batch (this rank's share), publish the next version; returns the new step."""
    from eureka.v1 import buffer_pb2

    from services.learner.step import reduce_sums, train_step

    groups = [buffer_pb2.TrajectoryGroup.FromString(b) for b in batch["groups"]]
    lr = eng.scheduler.get_last_lr()[0]
    start = time.monotonic()
    sums = train_step(eng, groups[rank::world], cfg.recipe, cfg.micro_batch_groups, pad_id)
    reduced = reduce_sums(sums, control)
    seconds = time.monotonic() - start
    _publish(eng, r0, step + 1)
    if r0 is not None:
        r0.unacked += batch["entry_ids"]
        stats = metrics.batch_stats(groups, step)
        record = {
            "step": step + 1, "policy_version": step + 1, "time": time.time(), "lr": lr,
            "grad_norm": sums.grad_norm, **reduced, **stats,
            "groups": len(groups), "step_seconds": seconds, "wait_seconds": batch["wait_seconds"],
            "samples_per_second": stats["samples"] / max(seconds, 1e-9), **batch["dropped"],
        }
        metrics.observe(record)
        state.append_jsonl(cfg.run_dir / state.METRICS_LOG, record, durable=False)
        log.info("step", step=step + 1, loss=f"{record['loss']:.4f}", reward=f"{stats['reward']:.3f}",
                 accuracy=f"{stats['accuracy']:.3f}", grad_norm=f"{record['grad_norm']:.3f}", lr=f"{lr:.3g}",
                 staleness_max=max(stats["staleness"]), seconds=f"{seconds:.2f}")
    return step + 1


def _checkpoint(cfg: LearnerConfig, eng: Any, r0: Rank0 | None, step: int, control: Any) -> None:
    """DeepSpeed files (fsync'd) -> commit record -> trained-ids log -> ack; old tags removed after the commit."""
    import torch.distributed as dist

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
    dist.barrier(group=control)


def _child() -> int:
    """Entry of each process `_launch` starts: the settings come from its environment."""
    settings = LearnerConfig(**json.loads(os.environ[SETTINGS_ENV]))
    setup_logging("learner")
    return run(settings)


if __name__ == "__main__":
    sys.exit(_child())
