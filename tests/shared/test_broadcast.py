"""The broadcast weight path with real processes: a gRPC weight server and a broadcast hub here (learner rank 0),
rollout workers as processes of their own (WeightSync + BroadcastReceiver over the hf backend), gloo groups
on 127.0.0.1. Workers are killed (SIGKILL) and stopped (SIGSTOP) for real."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.redis_proc import free_port
from shared.weights import WeightStore, add_weight_service
from shared.weights.group import BroadcastConfig, Layout, dtype_name
from shared.weights.stream import stream_bytes
from shared.weights.hub import BroadcastHub

WORKER = Path(__file__).with_name("broadcast_worker.py")
VISION = "model.visual."


class Worker:
    def __init__(self, worker_id: str, weights_port: int, cfg: BroadcastConfig, model: Path) -> None:
        self.worker_id = worker_id
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(WORKER), f"127.0.0.1:{weights_port}", cfg.model_dump_json(),
                                      str(model), worker_id], stdout=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(json.loads(line))

    def serving(self, version: int, timeout_s: float = 90.0) -> dict:
        """The worker's report once it serves `version`."""
        end = time.monotonic() + timeout_s
        while not self.seen or self.seen[-1]["version"] != version:
            assert self.proc.poll() is None, f"{self.worker_id} exited"
            self.seen.append(self.lines.get(timeout=max(end - time.monotonic(), 0.01)))
        return self.seen[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def learner(tiny_model_dir: Path) -> Iterator[tuple]:
    """The learner's side: a weight store served over gRPC, a broadcast hub, and the base state dict."""
    from shared.model.io import load_model

    sd = {k: v.clone() for k, v in load_model(tiny_model_dir).state_dict().items()}
    store = WeightStore(frozen_prefix=VISION)
    server = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(),
                        security=SecurityConfig())
    server.start()
    cfg = BroadcastConfig(enabled=True, address=f"127.0.0.1:{free_port()}", bucket_bytes=256 << 10,
                          join_timeout_s=3.0, op_timeout_s=20.0, retries=1)
    hub = BroadcastHub(cfg, frozen_prefix=VISION)
    _publish(hub, store, 0, sd)  # no worker has joined yet: the round has no members
    yield store, server, hub, cfg, sd
    server.stop(0)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.io import make_random_tiny

    return make_random_tiny(tmp_path_factory.mktemp("model") / "tiny", seed=0)


def _version(sd: dict, v: int) -> dict:
    """Version v: every trainable tensor moved by v (tied tensors stay equal), the vision tower as it was."""
    return {k: t if k.startswith(VISION) else t + 0.001 * v for k, t in sd.items()}


def _wait_joined(hub: BroadcastHub, workers: set[str], timeout_s: float = 90.0) -> None:
    end = time.monotonic() + timeout_s
    while not hub.joined() >= workers:
        assert time.monotonic() < end, f"{workers - hub.joined()} did not join"
        time.sleep(0.02)


def _digest(port: int) -> str:
    stub = weights_pb2_grpc.WeightServiceStub(create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig()))
    return stub.GetVersion(weights_pb2.GetVersionRequest()).digest


def _publish(hub: BroadcastHub, store: WeightStore, v: int, sd: dict, **kw):
    """Rank 0's publish: the broadcast first, then the gRPC store (what the learner does)."""
    result = hub.send(v, sd, **kw)
    store.publish(v, sd)
    return result


@pytest.mark.slow  # four worker processes start transformers
def test_broadcast_kill_join_and_miss(learner, tiny_model_dir: Path) -> None:
    store, server, hub, cfg, base = learner
    workers = {w: Worker(w, server.port, cfg, tiny_model_dir) for w in ("w1", "w2", "w3")}
    try:
        for w in workers.values():  # a new worker's first version comes over gRPC, frozen tensors included
            assert w.serving(0, timeout_s=300)["grpc_updates"] == 1  # three processes start transformers
        _wait_joined(hub, {"w1", "w2", "w3"})

        # Three workers receive version 1 by broadcast and serve it with the gRPC path's digest.
        sd1 = _version(base, 1)
        r1 = _publish(hub, store, 1, sd1)
        assert r1.members == ["w1", "w2", "w3"] and r1.rounds == 1 and not r1.dropped
        for w in workers.values():
            got = w.serving(1)
            assert (got["digest"], got["broadcast_updates"], got["grpc_updates"]) == (_digest(server.port), 1, 1)
        # Frozen tensors are not in the stream: it carries the trainable bytes only, once per round.
        trainable = Layout(1, [(n, dtype_name(t), list(t.shape), t.numel() * t.element_size())
                               for n, t in sd1.items() if not n.startswith(VISION)], "")
        frozen_bytes = sum(t.numel() * t.element_size() for n, t in sd1.items() if n.startswith(VISION))
        assert frozen_bytes > 0 and r1.bytes_sent == stream_bytes(trainable, cfg.bucket_bytes)

        # w2 is killed mid-broadcast: the others finish (in a second round), its replacement catches up over gRPC.
        _wait_joined(hub, {"w1", "w2", "w3"})
        killed = workers["w2"]

        def kill_at(bucket: int) -> None:
            if bucket == 2 and killed.proc.poll() is None:
                killed.proc.send_signal(signal.SIGKILL)
                killed.proc.wait()

        sd2 = _version(base, 2)
        r2 = _publish(hub, store, 2, sd2, on_bucket=kill_at)
        assert r2.members == ["w1", "w3"] and r2.dropped == ["w2"] and r2.rounds == 2, r2
        for name in ("w1", "w3"):
            got = workers[name].serving(2)
            assert got["digest"] == _digest(server.port) and got["missed"] == 0
        workers["w2"] = Worker("w2", server.port, cfg, tiny_model_dir)
        got = workers["w2"].serving(2)
        assert (got["digest"], got["grpc_updates"], got["broadcast_updates"]) == (_digest(server.port), 1, 0)

        # The replacement joined between versions: version 3 reaches all three by broadcast.
        _wait_joined(hub, {"w1", "w2", "w3"})
        r3 = _publish(hub, store, 3, _version(base, 3))
        assert r3.members == ["w1", "w2", "w3"] and r3.rounds == 1
        for w in workers.values():
            assert w.serving(3)["digest"] == _digest(server.port)

        # A worker that misses a broadcast (stopped past the join timeout) pulls it over gRPC and counts it; it holds
        # the frozen tensors, so the pull carries the trainable bytes only.
        _wait_joined(hub, {"w1", "w2", "w3"})
        os.kill(workers["w3"].proc.pid, signal.SIGSTOP)
        r4 = _publish(hub, store, 4, _version(base, 4))
        os.kill(workers["w3"].proc.pid, signal.SIGCONT)
        assert "w3" not in r4.members and "w3" in r4.dropped
        got = workers["w3"].serving(4)
        assert (got["digest"], got["missed"], got["trainable_pulls"]) == (_digest(server.port), 1, 1)
        assert got["trainable_pull_bytes"] == store.snapshot().total_bytes - frozen_bytes
        assert workers["w1"].serving(4)["missed"] == 0
    finally:
        for w in workers.values():
            w.stop()
