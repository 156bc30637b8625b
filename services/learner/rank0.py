"""What only global rank 0 does: drive the buffer (sample, ack), serve and publish the weights, write the run dir.

Two paths kept small on purpose: `next_batch` (the sample path: one SampleGroups round through the
driver) and `publish` (a new weights version to the broadcast and into the store).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.learner import metrics, state
from services.learner.config import LearnerConfig
from shared.logs import get_logger

if TYPE_CHECKING:
    from services.learner.driver import BufferDriver
    from services.learner.engine import Engine
    from shared.grpc_server import GrpcServer
    from shared.weights import WeightStore
    from shared.weights.hub import BroadcastHub

log = get_logger("learner")


@dataclass(frozen=True)
class RolloutBatch:
    """One policy version's groups as rank 0 sampled them (broadcast to every rank)."""

    groups: list[bytes]  # serialized TrajectoryGroup messages
    entry_ids: list[str]
    wait_seconds: float
    filtered: int  # groups the buffer dropped by the online filter while sampling
    stale: int  # ... and by the staleness bound


@dataclass
class Rank0:
    """The buffer driver, the weight store and server, the broadcast sender, and the ids trained since the last ack."""

    driver: BufferDriver
    store: WeightStore
    server: GrpcServer
    weights_dir: Path  # the version files (ZeRO-3): the store keeps the latest one only
    hub: BroadcastHub | None = None  # when broadcast.enabled
    unacked: list[str] = field(default_factory=list)


def start_rank0(cfg: LearnerConfig, ckpt: state.Checkpoint | None, stop: threading.Event) -> Rank0:
    from services.learner.driver import BufferDriver, Dataset
    from services.learner.engine import VISION_PREFIX
    from shared.dataset import read_jsonl
    from shared.grpc_client import create_channel
    from shared.grpc_server import GrpcServer
    from shared.metrics import serve_metrics
    from shared.weights import WeightStore, add_weight_service
    from shared.weights.hub import BroadcastHub

    data = read_jsonl(cfg.data_path, cfg.image_root)
    for line in data.skipped:
        log.warning("dataset line skipped", detail=line)
    channel = create_channel(cfg.buffer_address, cfg.grpc, cfg.security)
    driver = BufferDriver(channel, cfg, Dataset(data.records, cfg.seed), stop)
    driver.start()
    if ckpt is not None:  # the checkpoint is durable: finish what a crash may have cut short
        state.log_trained(cfg.run_dir, ckpt)
        if ckpt.entry_ids:
            driver.ack(ckpt.entry_ids)
    frozen = VISION_PREFIX if cfg.recipe.freeze_vision else None  # in every worker's first pull only
    store = WeightStore(frozen)
    server = GrpcServer(lambda s: add_weight_service(s, store), host=cfg.host, port=cfg.weights_port,
                        grpc_cfg=cfg.grpc, security=cfg.security)
    serve_metrics(cfg.metrics_port)
    state.repair_tail(cfg.run_dir / state.DROPPED_LOG)
    state.repair_tail(cfg.run_dir / state.METRICS_LOG)
    weights_dir = cfg.run_dir / "weights"
    shutil.rmtree(weights_dir, ignore_errors=True)  # a previous run's files: never served again
    weights_dir.mkdir(parents=True)
    return Rank0(driver, store, server, weights_dir,
                 BroadcastHub(cfg.broadcast, frozen) if cfg.broadcast.enabled else None)


def publish(eng: Engine, r0: Rank0 | None, version: int, bucket_bytes: int) -> None:
    """Every rank takes part in the gather; rank 0 broadcasts the version, then stores it for its server.

    Under ZeRO-3 the version is gathered `bucket_bytes` at a time into its file (`gather.py`), and the broadcast
    and the store read it from the file's mapping: no full state dict on one host."""
    start = time.monotonic()
    if eng.zero_stage == 3:
        from services.learner.gather import write_version
        from shared.weights.safetensors_io import state_dict_from_buffer
        from shared.weights.version_file import map_version

        path = r0.weights_dir / f"v{version}.safetensors" if r0 is not None else None
        digest = write_version(eng, path, version, bucket_bytes)
        if r0 is None or path is None or digest is None:
            return
        sd = state_dict_from_buffer(map_version(path))  # views of the file's pages
    else:
        sd = eng.consolidated_state_dict()
        if r0 is None:
            return
    if r0.hub is not None:  # the joined workers first, then the gRPC store (what they would pull otherwise)
        r0.hub.send(version, sd)
    if eng.zero_stage == 3:
        r0.store.publish_file(version, path, digest)
    else:
        r0.store.publish(version, sd)
    metrics.POLICY_VERSION.set(version)
    metrics.PUBLISH_SECONDS.observe(time.monotonic() - start)
    log.info("weights published", policy_version=version, seconds=f"{time.monotonic() - start:.3f}")


def next_batch(r0: Rank0, version: int, stop: threading.Event) -> RolloutBatch | None:
    """A full batch from the buffer (None when stopping); dropped ids are logged at once."""
    from services.learner.driver import Stopped

    if stop.is_set():
        return None
    try:
        resp, waited = r0.driver.sample(version)
    except Stopped:
        return None
    filtered, stale = list(resp.filtered_entry_ids), list(resp.stale_entry_ids)
    if filtered or stale:
        state.append_jsonl(r0.driver.cfg.run_dir / state.DROPPED_LOG,
                           {"policy_version": version, "filtered": filtered, "stale": stale})
    return RolloutBatch(groups=[g.group.SerializeToString() for g in resp.groups],
                        entry_ids=[g.entry_id for g in resp.groups], wait_seconds=waited,
                        filtered=len(filtered), stale=len(stale))
