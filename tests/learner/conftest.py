"""Learner fixtures: a tiny random model, a small MM-Eureka dataset, a real buffer process, and a producer
that plays rollout (claims prompts, scores random responses with the pulled weights, puts groups)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from shared.process import terminate
from shared.redis_proc import free_port

REPO = Path(__file__).resolve().parents[2]
EUREKA = [sys.executable, "-c", "import sys; from eureka_cli.main import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.io import make_random_tiny

    return make_random_tiny(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 short problems, every third with a 56x56 image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    lines = []
    for i in range(12):
        content: list[dict] = [{"type": "text", "text": f"What is {i} + 1?"}]
        if i % 3 == 0:
            img = Image.new("RGB", (56, 56), (20 * i, 100, 200))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            (root / f"img{i}.png").write_bytes(buf.getvalue())
            content.insert(0, {"type": "image", "image": f"file://img{i}.png"})
        lines.append(json.dumps({"id": f"q{i}", "message": json.dumps([{"role": "user", "content": content}]),
                                 "answer": str(i + 1)}))
    path = root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class BufferProc:
    address: str
    proc: subprocess.Popen

    def channel(self) -> grpc.Channel:
        from shared.config import GrpcConfig, SecurityConfig
        from shared.grpc_client import create_channel

        return create_channel(self.address, GrpcConfig(deadline_s=10), SecurityConfig())

    def stats(self):
        from eureka.v1 import buffer_pb2, buffer_pb2_grpc

        return buffer_pb2_grpc.BufferServiceStub(self.channel()).GetStats(buffer_pb2.GetStatsRequest())


@pytest.fixture
def buffer_proc(redis_server, tmp_path: Path) -> Iterator[BufferProc]:
    """`eureka buffer serve` as a real process over the test's redis-server."""
    from shared.grpc_client import wait_serving

    port = free_port()
    log = (tmp_path / "buffer.log").open("w")
    proc = subprocess.Popen(
        [*EUREKA, "buffer", "serve", "--port", str(port), "--metrics-port", "0", "--redis.url", redis_server.url,
         "--redis.password", redis_server.password, "--lease-s", "30"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )
    b = BufferProc(f"127.0.0.1:{port}", proc)
    try:
        wait_serving(b.channel(), timeout_s=60)
        yield b
    finally:
        terminate(proc, grace_s=10)
        log.close()


@dataclass
class Producer:
    """Plays rollout with the learner's published weights: random responses, their real log-probs, random accuracy."""

    buffer_address: str
    weights_address: str
    model_dir: Path
    n_samples: int = 4
    seed: int = 0
    produced: list[str] = field(default_factory=list)  # entry ids put (duplicates excluded)
    versions_seen: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Producer":
        self.thread.start()
        return self

    def check(self) -> None:
        assert not self.errors, f"producer failed: {self.errors}"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, self.errors

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - reported by __exit__
            self.errors.append(repr(e))

    def _loop(self) -> None:
        import torch
        from eureka.v1 import buffer_pb2, buffer_pb2_grpc, weights_pb2, weights_pb2_grpc

        from shared.config import GrpcConfig, SecurityConfig
        from shared.grpc_client import create_channel
        from shared.model.io import load_model, load_tokenizer
        from shared.model.logprobs import response_logprobs
        from shared.model.prompts import build_prompt_inputs
        from shared.weights import WeightPullError, pull_weights

        torch.set_num_threads(1)
        rng = random.Random(self.seed)
        tok = load_tokenizer(self.model_dir)
        model = load_model(self.model_dir)
        vocab = tok("0123456789+= abc<think></think><answer></answer>", add_special_tokens=False)["input_ids"]
        grpc_cfg = GrpcConfig(deadline_s=10, retries=2)
        buffer = buffer_pb2_grpc.BufferServiceStub(create_channel(self.buffer_address, grpc_cfg, SecurityConfig()))
        wchan = create_channel(self.weights_address, grpc_cfg, SecurityConfig())
        version: int | None = None
        while not self.stop.is_set():
            try:  # the learner may be down (fault tests): keep the weights we have
                stub = weights_pb2_grpc.WeightServiceStub(wchan)
                published = stub.GetVersion(weights_pb2.GetVersionRequest(), timeout=2).policy_version
                if version is None or published != version:  # a restarted learner may publish an older version
                    version, sd = pull_weights(wchan, min_version=0, timeout_s=10)
                    model.load_state_dict(sd)
                    self.versions_seen.append(version)
            except (grpc.RpcError, WeightPullError):
                # A fresh channel, so a restarted learner is seen at once (not after gRPC's reconnect backoff).
                wchan.close()
                wchan = create_channel(self.weights_address, grpc_cfg, SecurityConfig())
                if version is None:
                    time.sleep(0.2)
                    continue
            claims = buffer.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="producer", max_prompts=2, wait_ms=200))
            for c in claims.prompts:
                inputs = build_prompt_inputs(c.prompt, tok)
                responses = [[rng.choice(vocab) for _ in range(rng.randint(1, 6))] for _ in range(self.n_samples)]
                with torch.no_grad():
                    logps = response_logprobs(model, inputs, responses)
                samples = []
                for r, lp in zip(responses, logps, strict=True):
                    acc, fmt = float(rng.random() < 0.5), float(rng.random() < 0.5)
                    samples.append(buffer_pb2.Sample(response_token_ids=r, behaviour_logprobs=lp.tolist(),
                                                     response_text=tok.decode(r), reward=acc + 0.5 * fmt, accuracy=acc,
                                                     format=fmt, finish_reason="stop"))
                pid = c.prompt.prompt_id
                group = buffer_pb2.TrajectoryGroup(
                    group_id=f"{pid}#{c.attempt}", prompt_id=pid, attempt=c.attempt, prompt=c.prompt,
                    prompt_token_ids=inputs.input_ids, samples=samples, policy_version=version, worker_id="producer",
                    created_unix=time.time(),
                )
                resp = buffer.PutGroup(buffer_pb2.PutGroupRequest(group=group, claim_id=c.claim_id, worker_id="producer"))
                if not resp.duplicate:
                    self.produced.append(resp.entry_id)


@dataclass
class Learner:
    proc: subprocess.Popen
    run_dir: Path
    weights_address: str
    log_path: Path

    def metrics(self) -> list[dict]:
        from services.learner.state import METRICS_LOG, read_jsonl

        return read_jsonl(self.run_dir / METRICS_LOG)

    def checkpoint_step(self) -> int:
        from services.learner.state import read_checkpoint

        ckpt = read_checkpoint(self.run_dir)
        return ckpt.step if ckpt else 0

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"learner did not stop on SIGTERM; log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text()[-6000:]


def start_learner(buffer: BufferProc, model: Path, data: Path, run_dir: Path, weights_port: int, *args: str) -> Learner:
    """`eureka learner run` in its own process group (so kill -9 takes torchrun and every rank)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"learner-{time.monotonic_ns()}.log"
    cmd = [*EUREKA, "learner", "run", "--model-path", str(model), "--data-path", str(data), "--run-dir", str(run_dir),
           "--buffer-address", buffer.address, "--weights-port", str(weights_port), "--metrics-port", "0",
           "--recipe.n-samples", "4", "--recipe.lr", "1e-4", "--recipe.max-staleness", "2",
           "--train-batch-groups", "4", "--sample-wait-ms", "1000", "--grpc.grace-s", "0", "--hold-after-done", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EUREKA_LOG_LEVEL": "INFO"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    return Learner(proc, run_dir, f"127.0.0.1:{weights_port}", log_path)


def pull_version(address: str) -> int:
    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel
    from shared.weights import pull_weights

    return pull_weights(create_channel(address, GrpcConfig(deadline_s=10), SecurityConfig()), 0, 10)[0]


@dataclass
class World:
    """Everything a learner test needs; tests reach the helpers through this fixture (importlib mode)."""

    buffer: BufferProc
    model: Path
    data: Path
    tmp: Path
    weights_port: int
    started: list[Learner] = field(default_factory=list)

    wait_for = staticmethod(wait_for)
    pull_version = staticmethod(pull_version)

    def learner(self, *args: str, run_dir: str = "run") -> Learner:
        learner = start_learner(self.buffer, self.model, self.data, self.tmp / run_dir, self.weights_port, *args)
        self.started.append(learner)
        return learner

    def producer(self, **kw) -> Producer:
        return Producer(self.buffer.address, f"127.0.0.1:{self.weights_port}", self.model, **kw)


@pytest.fixture
def world(buffer_proc: BufferProc, tiny_model: Path, dataset: Path, tmp_path: Path) -> Iterator[World]:
    w = World(buffer_proc, tiny_model, dataset, tmp_path, free_port())
    yield w
    for learner in w.started:  # whatever a failed test left running
        if learner.proc.poll() is None:
            os.killpg(learner.proc.pid, signal.SIGKILL)
            learner.proc.wait()
