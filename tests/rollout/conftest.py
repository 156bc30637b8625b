"""Rollout fixtures: a tiny model, and a real stack (redis, buffer and reward processes, a weight stream)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, rollout_pb2, rollout_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.grpc_server import GrpcServer
from shared.redis_proc import free_port, start_redis
from shared.weights import WeightStore, add_weight_service
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
EUREKA = [sys.executable, "-m", "eureka_cli"]
N_SAMPLES = 3
MAX_TOKENS = 12


def channel(port: int) -> grpc.Channel:
    return create_channel(f"127.0.0.1:{port}", GrpcConfig(deadline_s=30), SecurityConfig())


def prompt(i: int, tag: str = "train") -> common_pb2.Prompt:
    msgs = [{"role": "user", "content": f"What is {i} + {i}?"}]
    return common_pb2.Prompt(prompt_id=f"{tag}:0:{i}", messages_json=json.dumps(msgs), answer=str(2 * i), cursor=i)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Two shared cores: one intra-op thread per process avoids spin-waiting threads fighting each other."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.io import make_random_tiny

    return make_random_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=1)


def perturbed(model_path: Path, seed: int) -> dict:
    """A different policy of the same shape (a new 'version'); tied weights stay tied."""
    import torch

    from shared.model.io import load_model

    model = load_model(model_path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.state_dict()


@dataclass
class Stack:
    """Real services on loopback: redis, buffer and reward processes, an in-process weight stream."""

    tmp: Path
    model_path: Path
    buffer_port: int
    reward_port: int
    weights_port: int
    store: WeightStore
    procs: list[subprocess.Popen] = field(default_factory=list)
    cursor: int = 0

    @property
    def buffer(self) -> buffer_pb2_grpc.BufferServiceStub:
        return buffer_pb2_grpc.BufferServiceStub(channel(self.buffer_port))

    def enqueue(self, n: int, tag: str = "train") -> list[str]:
        prompts = [prompt(self.cursor + i, tag) for i in range(n)]
        self.buffer.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(
            prompts=prompts, cursor_start=self.cursor, cursor_end=self.cursor + n))
        self.cursor += n
        return [p.prompt_id for p in prompts]

    def take_groups(self, prompt_ids: list[str], timeout_s: float = 60.0) -> list[buffer_pb2.TrajectoryGroup]:
        """The groups of `prompt_ids`, read and acked as the learner would (no filter, no staleness bound).

        Groups of other prompts (left by an earlier test) are acked and skipped; a second group of the same
        prompt would be a duplicate and fails the test.
        """
        found: dict[str, buffer_pb2.TrajectoryGroup] = {}
        end = time.monotonic() + timeout_s
        while set(found) != set(prompt_ids):
            left_ms = int((end - time.monotonic()) * 1000)
            assert left_ms > 0, f"groups of {sorted(set(prompt_ids) - set(found))} did not arrive in {timeout_s}s"
            reply = self.buffer.SampleGroups(buffer_pb2.SampleGroupsRequest(
                consumer="test-learner", num_groups=1, policy_version=0, max_staleness=1000, filter_low=0.0,
                filter_high=1.0, wait_ms=min(left_ms, 60_000)), timeout=timeout_s + 10)
            for sampled in reply.groups:
                ack = buffer_pb2.AckGroupsRequest(consumer="test-learner", entry_ids=[sampled.entry_id])
                self.buffer.AckGroups(ack)
                g = sampled.group
                if g.prompt_id in prompt_ids:
                    assert g.prompt_id not in found, f"prompt {g.prompt_id} produced two groups"
                    found[g.prompt_id] = g
        return [found[p] for p in prompt_ids]

    def stats(self) -> buffer_pb2.BufferStats:
        return self.buffer.GetStats(buffer_pb2.GetStatsRequest())

    def worker_args(self, status_port: int, worker_id: str, **extra: object) -> list[str]:
        args = {
            "port": status_port, "metrics-port": 0, "buffer-address": f"127.0.0.1:{self.buffer_port}",
            "reward-address": f"127.0.0.1:{self.reward_port}", "learner-address": f"127.0.0.1:{self.weights_port}",
            "model-path": str(self.model_path), "worker-id": worker_id, "claim-batch-prompts": 2,
            "claim-wait-ms": 200, "weight-retry-s": 0.2, "recipe.n-samples": N_SAMPLES,
            "recipe.max-response-tokens": MAX_TOKENS, "cpu-threads": 1, **extra,
        }
        return [*EUREKA, "rollout", "serve", *[x for k, v in args.items() for x in (f"--{k}", str(v))]]

    def start_worker(self, worker_id: str, **extra: object) -> tuple[subprocess.Popen, int]:
        port = free_port()
        log = open(self.tmp / f"{worker_id}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(self.worker_args(port, worker_id, **extra), cwd=REPO, stdout=log, stderr=log,
                                env={**os.environ, "EUREKA_LOG_LEVEL": "INFO"})
        self.procs.append(proc)
        return proc, port

    def start_reward(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [*EUREKA, "reward", "serve", "--grpc-port", str(self.reward_port), "--http-port", str(free_port()),
             "--metrics-port", "0", "--workers", "1"],
            cwd=REPO, stdout=open(self.tmp / "reward.log", "a"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.procs.append(proc)
        return proc

    def status(self, port: int) -> rollout_pb2.RolloutStatus:
        return rollout_pb2_grpc.RolloutServiceStub(channel(port)).GetStatus(rollout_pb2.GetStatusRequest(), timeout=5)


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.1):
    """`wait_until`, with an RPC error counting as not yet."""
    return wait_until(predicate, timeout_s, what, every_s, ignore=(grpc.RpcError,))


def stop_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), tiny_path, lease_s=3) as st:
        yield st


@contextmanager
def running_stack(tmp: Path, tiny_path: Path, lease_s: float) -> Iterator[Stack]:
    """Start the stack's processes and servers (buffer with this lease); stop them all on exit."""
    from shared.model.io import load_model

    redis = start_redis(tmp / "redis")
    store = WeightStore()
    store.publish(0, load_model(tiny_path).state_dict())
    weights = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0,
                         grpc_cfg=GrpcConfig(), security=SecurityConfig()).start()
    st = Stack(tmp, tiny_path, free_port(), free_port(), weights.port, store)
    env = {**os.environ, "EUREKA_REDIS__PASSWORD": redis.password}
    st.procs.append(subprocess.Popen(
        [*EUREKA, "buffer", "serve", "--port", str(st.buffer_port), "--metrics-port", "0", "--redis.url", redis.url,
         "--lease-s", str(lease_s), "--max-attempts", "5"],
        cwd=REPO, env=env,
        stdout=open(tmp / "buffer.log", "w"), stderr=subprocess.STDOUT))  # noqa: SIM115
    st.start_reward()
    try:
        wait_serving(channel(st.buffer_port), timeout_s=60)
        wait_serving(channel(st.reward_port), timeout_s=60)
        yield st
    finally:
        for proc in reversed(st.procs):
            stop_proc(proc)
        weights.stop(grace=0)
        redis.stop()


@dataclass
class InProcessWorker:
    worker: object
    server: GrpcServer
    thread: object

    @property
    def control(self) -> rollout_pb2_grpc.RolloutServiceStub:
        return rollout_pb2_grpc.RolloutServiceStub(channel(self.server.port))


@pytest.fixture
def start_in_process(stack: Stack) -> Iterator:
    """Starts Worker objects in threads of the test process (to reach their state) with a status server each."""
    import threading

    from services.rollout.config import RolloutConfig
    from services.rollout.server import add_rollout_service, build_worker

    started: list[InProcessWorker] = []

    def start(worker_id: str, max_tokens: int = MAX_TOKENS, **overrides: object) -> InProcessWorker:
        cfg = RolloutConfig(
            port=0, metrics_port=0, buffer_address=f"127.0.0.1:{stack.buffer_port}",
            reward_address=f"127.0.0.1:{stack.reward_port}", learner_address=f"127.0.0.1:{stack.weights_port}",
            model_path=stack.model_path, worker_id=worker_id, claim_batch_prompts=2, claim_wait_ms=200,
            weight_retry_s=0.2, rpc_backoff_s=0.2, recipe={"n_samples": N_SAMPLES, "max_response_tokens": max_tokens}, **overrides,
        )
        worker = build_worker(cfg)
        server = GrpcServer(lambda s: add_rollout_service(s, worker, cfg.drain_timeout_s), host="127.0.0.1", port=0,
                            grpc_cfg=cfg.grpc, security=cfg.security).start()
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append(InProcessWorker(worker, server, thread))
        wait_for(lambda: worker.state == RUNNING_STATE, 60, f"{worker_id} RUNNING")
        return started[-1]

    yield start
    for w in started:
        w.worker.drain(release_now=True)
        w.thread.join(30)
        w.server.stop(grace=0)


RUNNING_STATE = rollout_pb2.WORKER_STATE_RUNNING
