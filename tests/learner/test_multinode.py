"""Multi-node on loopback: two launchers (`python -m services.learner.launch`, one process each, c10d
rendezvous on 127.0.0.1) end with the same weights as one launcher with two processes, on the same
deterministic rollout (a producer whose responses and rewards depend on the prompt alone)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from shared.process import terminate
from shared.redis_proc import free_port, start_redis

REPO = Path(__file__).resolve().parents[2]
EUREKA = [sys.executable, "-c", "import sys; from eureka_cli.main import main; sys.exit(main())"]
STEPS = 10


def _produce(address: str, model: Path, stop: threading.Event) -> None:
    """Plays rollout without weights: each prompt's responses and rewards from a hash of its id (fixed behaviour
    log-probs), one claim at a time, so the buffer's stream order is the dataset cursor's order."""
    from eureka.v1 import buffer_pb2, buffer_pb2_grpc

    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel
    from shared.model.io import load_tokenizer
    from shared.model.prompts import build_prompt_inputs

    tok = load_tokenizer(model)
    stub = buffer_pb2_grpc.BufferServiceStub(create_channel(address, GrpcConfig(deadline_s=10), SecurityConfig()))
    while not stop.is_set():
        for c in stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="p", max_prompts=1, wait_ms=200)).prompts:
            h = hashlib.sha256(c.prompt.prompt_id.encode()).digest()
            samples = [buffer_pb2.Sample(response_token_ids=[20 + h[i] % 50, 21 + h[i + 4] % 50, 22],
                                         behaviour_logprobs=[-5.0, -5.0, -5.0], reward=float(i % 2),
                                         accuracy=float(i % 2), finish_reason="stop") for i in range(4)]
            group = buffer_pb2.TrajectoryGroup(
                group_id=f"{c.prompt.prompt_id}#{c.attempt}", prompt_id=c.prompt.prompt_id, attempt=c.attempt,
                prompt=c.prompt, prompt_token_ids=build_prompt_inputs(c.prompt, tok).input_ids, samples=samples, policy_version=0,
                worker_id="p")
            stub.PutGroup(buffer_pb2.PutGroupRequest(group=group, claim_id=c.claim_id, worker_id="p"))


@contextmanager
def _pipeline(tmp: Path, model: Path) -> Iterator[str]:
    """redis-server, `eureka buffer serve` and the producer; yields the buffer's address."""
    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel, wait_serving

    redis = start_redis(tmp / "redis")
    port = free_port()
    with (tmp / "buffer.log").open("w") as log:
        buffer = subprocess.Popen([*EUREKA, "buffer", "serve", "--port", str(port), "--metrics-port", "0",
                                   "--redis.url", redis.url, "--redis.password", redis.password],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(f"127.0.0.1:{port}", model, stop), daemon=True)
    try:
        wait_serving(create_channel(f"127.0.0.1:{port}", GrpcConfig(deadline_s=10), SecurityConfig()), timeout_s=60)
        producer.start()
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        producer.join(30)
        terminate(buffer, grace_s=10)
        redis.stop()


def _config(tmp: Path, buffer: str, model: Path, data: Path) -> Path:
    path = tmp / "learner.yaml"
    path.write_text(yaml.safe_dump({"learner": {
        "model_path": str(model), "data_path": str(data), "run_dir": str(tmp / "run"), "buffer_address": buffer,
        "weights_port": free_port(), "metrics_port": 0, "zero_stage": 2, "world_size": 2, "total_steps": STEPS,
        "checkpoint_every": 5, "train_batch_groups": 4, "sample_wait_ms": 1000, "seed": 3,
        "recipe": {"n_samples": 4, "lr": 1e-3, "max_staleness": 100, "mini_batches": 2},
    }}))
    return path


def _launchers(config: Path, nodes: int, tmp: Path) -> list[subprocess.Popen]:
    master = str(free_port())
    procs = []
    for node in range(nodes):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NNODES": str(nodes), "NODE_RANK": str(node),
               "NPROC_PER_NODE": str(2 // nodes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": master}
        with (tmp / f"node{node}.log").open("w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "services.learner.launch", "--config", str(config)],
                                          env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs


def _train(tmp: Path, model: Path, data: Path, nodes: int) -> dict:
    from safetensors.torch import load_file

    tmp.mkdir()
    with _pipeline(tmp, model) as buffer:
        procs = _launchers(_config(tmp, buffer, model, data), nodes, tmp)
        for node, p in enumerate(procs):
            code = p.wait(600)
            assert code == 0, (tmp / f"node{node}.log").read_text()[-4000:]
    return load_file(str(tmp / "run" / "final" / "model.safetensors"))


@pytest.mark.slow
def test_two_launchers_equal_one_launcher_with_two_processes(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    one = _train(tmp_path / "one", tiny_model, dataset, nodes=1)
    two = _train(tmp_path / "two", tiny_model, dataset, nodes=2)
    assert one.keys() == two.keys()
    diff = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert diff <= 1e-6
    from safetensors.torch import load_file

    base = load_file(str(tiny_model / "model.safetensors"))
    assert max((one[k].float() - base[k].float()).abs().max().item() for k in base if k in one) > 1e-4  # it trained
