"""Multi-node on loopback, real processes: two launchers (`python -m services.learner.launch`, one process each,
c10d rendezvous on 127.0.0.1) end with the same weights as one launcher with two processes; a kill -9 of the
second node fails the job with a sentence and `--resume` continues it exactly once (same weights, every prompt
of every epoch trained once, in the shuffled order); a resume on another world size loads the checkpoint as a
universal one. The rollout is deterministic: a producer whose responses and rewards depend on the prompt alone."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from shared.process import terminate
from shared.redis_proc import free_port, start_redis

REPO = Path(__file__).resolve().parents[2]
EUREKA = [sys.executable, "-c", "import sys; from eureka_cli.main import main; sys.exit(main())"]
STEPS, BATCH, SEED = 10, 4, 3
KILL_AFTER = 7  # steps done when a node is killed; the checkpoint before it is step 5
LOST_NODE = "a learner node or process failed"  # the launcher's sentence


@dataclass
class Pipeline:
    """redis-server, `eureka buffer serve` and the producer; what the producer put, entry id -> prompt id."""

    address: str
    prompts: dict[str, str] = field(default_factory=dict)

    def acked(self) -> int:
        from eureka.v1 import buffer_pb2, buffer_pb2_grpc

        from shared.config import GrpcConfig, SecurityConfig
        from shared.grpc_client import create_channel

        channel = create_channel(self.address, GrpcConfig(deadline_s=10), SecurityConfig())
        return buffer_pb2_grpc.BufferServiceStub(channel).GetStats(buffer_pb2.GetStatsRequest()).groups_acked_total


def _produce(pipe: Pipeline, model: Path, stop: threading.Event) -> None:
    """Plays rollout without weights: each prompt's responses and rewards from a hash of its id (fixed behaviour
    log-probs), one claim at a time, so the buffer's stream order is the dataset cursor's order."""
    from eureka.v1 import buffer_pb2, buffer_pb2_grpc

    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel
    from shared.model.io import load_tokenizer
    from shared.model.prompts import build_prompt_inputs

    tok = load_tokenizer(model)
    stub = buffer_pb2_grpc.BufferServiceStub(create_channel(pipe.address, GrpcConfig(deadline_s=10), SecurityConfig()))
    while not stop.is_set():
        for c in stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="p", max_prompts=1, wait_ms=200)).prompts:
            h = hashlib.sha256(c.prompt.prompt_id.encode()).digest()
            samples = [buffer_pb2.Sample(response_token_ids=[20 + h[i] % 50, 21 + h[i + 4] % 50, 22],
                                         behaviour_logprobs=[-5.0, -5.0, -5.0], reward=float(i % 2),
                                         accuracy=float(i % 2), finish_reason="stop") for i in range(4)]
            group = buffer_pb2.TrajectoryGroup(
                group_id=f"{c.prompt.prompt_id}#{c.attempt}", prompt_id=c.prompt.prompt_id, attempt=c.attempt,
                prompt=c.prompt, prompt_token_ids=build_prompt_inputs(c.prompt, tok).input_ids, samples=samples,
                policy_version=0, worker_id="p")
            resp = stub.PutGroup(buffer_pb2.PutGroupRequest(group=group, claim_id=c.claim_id, worker_id="p"))
            pipe.prompts[resp.entry_id] = c.prompt.prompt_id


@contextmanager
def _pipeline(tmp: Path, model: Path) -> Iterator[Pipeline]:
    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel, wait_serving

    redis = start_redis(tmp / "redis")
    port = free_port()
    with (tmp / "buffer.log").open("w") as log:
        buffer = subprocess.Popen([*EUREKA, "buffer", "serve", "--port", str(port), "--metrics-port", "0",
                                   "--redis.url", redis.url, "--redis.password", redis.password],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    pipe = Pipeline(f"127.0.0.1:{port}")
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(pipe, model, stop), daemon=True)
    try:
        wait_serving(create_channel(pipe.address, GrpcConfig(deadline_s=10), SecurityConfig()), timeout_s=60)
        producer.start()
        yield pipe
    finally:
        stop.set()
        producer.join(30)
        terminate(buffer, grace_s=10)
        redis.stop()


@dataclass
class Job:
    """The launchers of one learner job (each in its own process group, as a node is) and their logs."""

    procs: list[subprocess.Popen]
    logs: list[Path]

    def log(self, node: int) -> str:
        return self.logs[node].read_text()[-4000:]

    def wait(self, timeout_s: float = 600) -> list[int]:
        return [p.wait(timeout_s) for p in self.procs]

    def kill9(self, node: int) -> None:
        """What a lost machine does to a node: all of its processes killed at once (torchrun starts its workers
        in sessions of their own, so the launcher's process group is not all of them)."""
        import psutil

        try:
            root = psutil.Process(self.procs[node].pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.procs[node].wait(30)

    def stop(self) -> None:
        for node in range(len(self.procs)):
            self.kill9(node)


def _start(tmp: Path, pipe: Pipeline, model: Path, data: Path, nodes: int, world_size: int = 2,
           resume: bool = False) -> Job:
    """`nodes` launchers over one YAML config (run dir tmp/run), world_size processes in all."""
    name = f"{time.monotonic_ns()}"
    config = tmp / f"learner-{name}.yaml"
    config.write_text(yaml.safe_dump({"learner": {
        "model_path": str(model), "data_path": str(data), "run_dir": str(tmp / "run"), "buffer_address": pipe.address,
        "weights_port": free_port(), "metrics_port": 0, "zero_stage": 2, "world_size": world_size,
        "total_steps": STEPS, "checkpoint_every": 5, "train_batch_groups": BATCH, "sample_wait_ms": 1000,
        "seed": SEED, "resume": resume, "recipe": {"n_samples": 4, "lr": 1e-3, "max_staleness": 100, "mini_batches": 2},
    }}))
    master = str(free_port())
    job = Job([], [])
    for node in range(nodes):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NNODES": str(nodes), "NODE_RANK": str(node),
               "NPROC_PER_NODE": str(world_size // nodes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": master}
        job.logs.append(tmp / f"{name}-node{node}.log")
        cmd = [sys.executable, "-m", "services.learner.launch", "--config", str(config)]
        with job.logs[-1].open("w") as log:
            job.procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        if node == 0 and nodes > 1:
            _wait_listening(job, int(master))
    return job


def _wait_listening(job: Job, port: int, timeout_s: float = 120) -> None:
    """Node 0's torchrun hosts the rendezvous store, as at MASTER_ADDR in a cluster (on loopback every node
    could: the first to bind the port does)."""
    end = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        assert job.procs[0].poll() is None, f"node 0 exited with {job.procs[0].returncode}:\n{job.log(0)}"
        assert time.monotonic() < end, f"node 0 did not host the rendezvous on port {port} within {timeout_s}s"
        time.sleep(0.2)


@contextmanager
def _job(*args: object, **kw: object) -> Iterator[Job]:
    """`_start`'s launchers, every process of them gone at the end."""
    job = _start(*args, **kw)
    try:
        yield job
    finally:
        job.stop()


def _run(*args: object, **kw: object) -> Job:
    """A job to the end: every launcher exits 0."""
    with _job(*args, **kw) as job:
        for node, code in enumerate(job.wait()):
            assert code == 0, job.log(node)
    return job


def _wait_steps(job: Job, run_dir: Path, steps: int, timeout_s: float = 300) -> None:
    from services.learner.state import METRICS_LOG, read_jsonl

    end = time.monotonic() + timeout_s
    while len(read_jsonl(run_dir / METRICS_LOG)) < steps:
        for node, p in enumerate(job.procs):
            assert p.poll() is None, f"node {node} exited with {p.returncode} before step {steps}:\n{job.log(node)}"
        assert time.monotonic() < end, f"no step {steps} within {timeout_s}s"
        time.sleep(0.2)


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _check_exactly_once(run_dir: Path, pipe: Pipeline, data: Path) -> None:
    """Every step's batch trained once in the model's history, in the dataset's shuffled order: each epoch reads
    every prompt once, and what the run trained is the cursor's order from 0 on, no prompt skipped or repeated."""
    from services.learner.driver import Dataset
    from services.learner.state import TRAINED_LOG, read_jsonl
    from shared.dataset import read_jsonl as read_dataset

    trained = [i for rec in read_jsonl(run_dir / TRAINED_LOG) for i in rec["entry_ids"]]
    assert len(trained) == STEPS * BATCH and len(set(trained)) == len(trained), "a group lost or trained twice"
    assert pipe.acked() == len(trained)
    dataset = Dataset(read_dataset(data).records, seed=SEED)
    assert [pipe.prompts[e] for e in trained] == [dataset.prompt(c).prompt_id for c in range(len(trained))]


@pytest.fixture(scope="module")
def reference(tiny_model: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One launcher with two processes, uninterrupted: the final weights every other run must reach."""
    tmp = tmp_path_factory.mktemp("reference")
    with _pipeline(tmp, tiny_model) as pipe:
        _run(tmp, pipe, tiny_model, dataset, nodes=1)
        _check_exactly_once(tmp / "run", pipe, dataset)
    weights = _weights(tmp / "run")
    from safetensors.torch import load_file

    assert _max_diff(weights, load_file(str(tiny_model / "model.safetensors"))) > 1e-4  # it trained
    return weights


@pytest.mark.slow
def test_two_launchers_equal_one_launcher_with_two_processes(reference: dict, tiny_model: Path, dataset: Path,
                                                               tmp_path: Path) -> None:
    with _pipeline(tmp_path, tiny_model) as pipe:
        _run(tmp_path, pipe, tiny_model, dataset, nodes=2)
    assert _max_diff(_weights(tmp_path / "run"), reference) <= 1e-6


@pytest.mark.slow
def test_kill9_of_the_second_node_fails_the_job_and_resume_continues_exactly_once(
        reference: dict, tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    from services.learner.state import METRICS_LOG, read_checkpoint, read_jsonl

    run_dir = tmp_path / "run"
    with _pipeline(tmp_path, tiny_model) as pipe:
        with _job(tmp_path, pipe, tiny_model, dataset, nodes=2) as job:
            _wait_steps(job, run_dir, KILL_AFTER)
            job.kill9(1)
            code = job.procs[0].wait(180)  # the surviving node fails the job, it does not hang
            assert code != 0 and LOST_NODE in job.log(0), job.log(0)
        assert read_checkpoint(run_dir).step == 5
        _run(tmp_path, pipe, tiny_model, dataset, nodes=2, resume=True)
        _check_exactly_once(run_dir, pipe, dataset)
    steps = [r["step"] for r in read_jsonl(run_dir / METRICS_LOG)]
    assert steps.count(6) == 2 and steps[-1] == STEPS  # the steps after the checkpoint were trained again
    assert _max_diff(_weights(run_dir), reference) <= 1e-6  # as if never interrupted


@pytest.mark.slow
def test_resume_on_another_world_size_loads_a_universal_checkpoint(reference: dict, tiny_model: Path, dataset: Path,
                                                                    tmp_path: Path) -> None:
    from services.learner.state import read_checkpoint

    run_dir = tmp_path / "run"
    with _pipeline(tmp_path, tiny_model) as pipe:
        with _job(tmp_path, pipe, tiny_model, dataset, nodes=1, world_size=2) as job:
            _wait_steps(job, run_dir, KILL_AFTER)
            job.kill9(0)
        assert read_checkpoint(run_dir).world_size == 2
        resumed = _run(tmp_path, pipe, tiny_model, dataset, nodes=1, world_size=1, resume=True)
        assert "universal checkpoint written" in resumed.logs[0].read_text()
        assert not (run_dir / "checkpoints" / "latest_universal").exists()
        _check_exactly_once(run_dir, pipe, dataset)
    assert read_checkpoint(run_dir).world_size == 1
    # One process accumulates what two all-reduced: the same training, up to float summation order.
    assert _max_diff(_weights(run_dir), reference) <= 1e-6
