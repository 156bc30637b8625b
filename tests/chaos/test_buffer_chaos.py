"""Buffer chaos: kill -9 producers, the consumer, the buffer service and redis-server at seeded random moments.

Run alone: `.venv/bin/python -m pytest tests/chaos/test_buffer_chaos.py -m chaos -s` (or `make chaos`).
At the end every group whose put was acknowledged to a producer was received by the consumer exactly
once (counted by group id), and the test prints `lost=0 duplicated=0` with the kill counts.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.redis_proc import RedisProc, free_port, start_redis

ROLES = Path(__file__).with_name("buffer_roles.py")
TOKEN = "chaos-token"
SEED = int(os.environ.get("EUREKA_CHAOS_SEED", "1234"))
PROMPTS = 360
PRODUCERS = 3
CHAOS_S = 45.0
DRAIN_S = 90.0


class Cluster:
    """The processes under test, each restartable on the same port / data dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_port, self.port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.redis: RedisProc | None = None
        self.buffer: subprocess.Popen | None = None
        self.producers: list[subprocess.Popen | None] = [None] * PRODUCERS
        self.consumer: subprocess.Popen | None = None
        self.kills: Counter[str] = Counter()

    def start_redis(self) -> None:
        self.redis = start_redis(self.tmp / "redis", port=self.redis_port, password="chaos-pw", fsync="always")

    def start_buffer(self) -> None:
        env = {**os.environ, "EUREKA_REDIS__PASSWORD": "chaos-pw", "EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}
        exe = Path(sys.executable).with_name("eureka")
        args = [str(exe), "buffer", "serve", "--port", str(self.port), "--metrics-port", "0",
                "--redis.url", f"redis://127.0.0.1:{self.redis_port}/0", "--lease-s", "2", "--max-attempts", "50",
                "--max-backlog", "100000", "--grpc.grace-s", "0"]
        with open(self.tmp / "buffer.log", "a") as log:
            self.buffer = subprocess.Popen(args, env=env, stdout=log, stderr=log)

    def _role(self, *args: str) -> subprocess.Popen:
        with open(self.tmp / "roles.log", "a") as log:
            return subprocess.Popen([sys.executable, str(ROLES), args[0], self.target, *args[1:]], stdout=log, stderr=log)

    def start_producer(self, i: int) -> None:
        self.producers[i] = self._role("producer", str(self.tmp / f"producer-{i}.log"), str(SEED * 10 + i + self.kills["producer"]))

    def start_consumer(self) -> None:
        self.consumer = self._role("consumer", str(self.tmp / "consumer.log"))

    def kill(self, what: str, rng: random.Random) -> None:
        if what == "redis":
            assert self.redis is not None
            self.redis.kill()
            time.sleep(rng.uniform(0.2, 1.0))
            self.start_redis()
        elif what == "buffer":
            _kill9(self.buffer)
            time.sleep(rng.uniform(0.2, 1.0))
            self.start_buffer()
        elif what == "consumer":
            _kill9(self.consumer)
            time.sleep(rng.uniform(0.2, 1.0))
            self.start_consumer()
        else:
            i = rng.randrange(PRODUCERS)
            _kill9(self.producers[i])
            time.sleep(rng.uniform(0.2, 1.0))
            self.start_producer(i)
        self.kills[what] += 1

    def stop_all(self) -> None:
        for p in [*self.producers, self.consumer, self.buffer]:
            _kill9(p)
        if self.redis is not None:
            self.redis.kill()


def _kill9(p: subprocess.Popen | None) -> None:
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()


def _stub(target: str) -> buffer_pb2_grpc.BufferServiceStub:
    channel = create_channel(target, GrpcConfig(deadline_s=10.0), SecurityConfig(service_token=TOKEN))
    wait_serving(channel, timeout_s=60)
    return buffer_pb2_grpc.BufferServiceStub(channel)


def _enqueue_all(stub: buffer_pb2_grpc.BufferServiceStub) -> None:
    for start in range(0, PROMPTS, 120):
        prompts = [common_pb2.Prompt(prompt_id=f"chaos:{i}", messages_json="[]", answer="1", cursor=i)
                   for i in range(start, start + 120)]
        stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=start, cursor_end=start + 120))


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if len(line.split()) == 2]


def _tally(tmp: Path) -> tuple[set[str], Counter[str]]:
    acked = {parts[0] for i in range(PRODUCERS) for parts in _lines(tmp / f"producer-{i}.log")}
    delivered = Counter(parts[1] for parts in _lines(tmp / "consumer.log"))
    return acked, delivered


def _stats(stub: buffer_pb2_grpc.BufferServiceStub) -> buffer_pb2.BufferStats | None:
    try:
        return stub.GetStats(buffer_pb2.GetStatsRequest())
    except grpc.RpcError:
        return None


@pytest.mark.chaos
def test_buffer_delivers_every_acknowledged_group_exactly_once_under_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    c = Cluster(tmp_path)
    try:
        c.start_redis()
        c.start_buffer()
        stub = _stub(c.target)
        _enqueue_all(stub)
        for i in range(PRODUCERS):
            c.start_producer(i)
        c.start_consumer()
        # Every kind of victim at least twice, in a seeded order, at seeded moments.
        victims = ["redis", "buffer", "consumer", "producer"] * 2 + [rng.choice(["buffer", "consumer", "producer", "redis"])
                                                                     for _ in range(6)]
        rng.shuffle(victims)
        end = time.monotonic() + CHAOS_S
        for what in victims:
            time.sleep(rng.uniform(0.5, CHAOS_S / len(victims) * 1.2))
            if time.monotonic() > end:
                break
            c.kill(what, rng)
        # Drain: no more kills; wait until every prompt is done and every acknowledged group received.
        deadline = time.monotonic() + DRAIN_S
        stats = None
        while time.monotonic() < deadline:
            stats = _stats(stub)
            acked, delivered = _tally(tmp_path)
            if stats is not None and stats.prompt_backlog == 0 and stats.groups_ready == 0 and acked <= set(delivered):
                break
            time.sleep(0.5)
        # The record is final once no role can write to it: stop them, then count.
        for p in [*c.producers, c.consumer]:
            _kill9(p)
        acked, delivered = _tally(tmp_path)
        stats = _stats(stub) or stats
    finally:
        c.stop_all()
    lost = acked - set(delivered)
    duplicated = {g: n for g, n in delivered.items() if n > 1}
    per_prompt = Counter(g.split("#")[0] for g in delivered)
    two_groups = [p for p, n in per_prompt.items() if n > 1]
    kills = " ".join(f"{k}={c.kills[k]}" for k in ("producer", "consumer", "buffer", "redis"))
    print(f"\nlost={len(lost)} duplicated={len(duplicated)} kills: {kills} acknowledged_puts={len(acked)} "
          f"delivered={len(delivered)} prompts={PROMPTS} dead_lettered={stats.prompts_dead_lettered_total if stats else '?'} "
          f"reclaimed={stats.prompts_reclaimed_total if stats else '?'} duplicate_puts={stats.groups_duplicate_total if stats else '?'} "
          f"seed={SEED}")
    assert not lost, f"acknowledged groups never delivered: {sorted(lost)[:10]}"
    assert not duplicated, f"groups delivered more than once: {dict(list(duplicated.items())[:10])}"
    assert not two_groups, f"prompts trained twice (two attempts delivered): {two_groups[:10]}"
    assert len(per_prompt) == PROMPTS, f"only {len(per_prompt)} of {PROMPTS} prompts produced a delivered group"
    assert all(c.kills[k] >= 1 for k in ("producer", "consumer", "buffer", "redis"))
