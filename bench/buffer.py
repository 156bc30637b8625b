"""Buffer throughput: groups/s through the buffer service (put + sample + ack) vs a bare grpcio server, same run.

Groups of 8 samples x 512 tokens, in batches of 8 (a rollout batch). Both paths batch alike: the service
takes a batch in one PutGroups call; the baseline does the same stream operations straight on Redis with
one round trip per step of the batch (idempotency lookup, XADD + ack of each prompt in one MULTI/EXEC,
recording the ids), then XREADGROUP and XACK + XDEL. One client, one redis-server (AOF everysec), the
buffer as its own process; batches of the paths alternate.
The baseline the target is set against is `grpc_ceiling`: the raw path's Redis operations behind a bare grpcio
server process (requests parsed, groups stored as received; no checks, no Lua, no metrics), what any buffer
served from Python could reach (target >= 0.8 of it, docs/BENCHMARKS.md). Raw redis-py (no gRPC hop) and
`core`, the buffer's core called in this process, are reported beside it.
Writes bench/results/buffer.json.

    .venv/bin/python bench/buffer.py [--groups 800]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from services.buffer import put_wire
from services.buffer.sampled import Sampled
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel, wait_serving
from shared.malloc import reuse_freed_memory
from shared.redis_proc import free_port, start_redis
from report import RESULTS_DIR, load_1m, machine, write_result  # bench/report.py

SAMPLES, TOKENS, BATCH = 8, 512, 8
RESULTS = RESULTS_DIR / "buffer.json"


def make_group(prompt_id: str, attempt: int) -> buffer_pb2.TrajectoryGroup:
    samples = [buffer_pb2.Sample(response_token_ids=[(i * 31 + j) % 150000 for j in range(TOKENS)],
                                 behaviour_logprobs=[-0.7] * TOKENS, response_text="<think>" + "x" * 1500 + "</think>",
                                 reward=1.0, accuracy=float(i % 2), format=1.0, finish_reason="stop")
               for i in range(SAMPLES)]
    return buffer_pb2.TrajectoryGroup(group_id=f"{prompt_id}#{attempt}", prompt_id=prompt_id, attempt=attempt,
                                      prompt_token_ids=list(range(300)), samples=samples, policy_version=1)


class Service:
    """The buffer service path: PutGroups (one rollout batch per call), then SampleGroups + AckGroups per batch."""

    def __init__(self, stub: buffer_pb2_grpc.BufferServiceStub, n: int) -> None:
        self.stub = stub
        prompts = [common_pb2.Prompt(prompt_id=f"bench:{i}", messages_json="[]", answer="1", cursor=i) for i in range(n)]
        for start in range(0, n, 1000):
            stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=prompts[start : start + 1000],
                                                                 cursor_start=start, cursor_end=start + len(prompts[start : start + 1000])))
        self.claims = []
        while len(self.claims) < n:
            self.claims += stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="bench", max_prompts=min(1000, n - len(self.claims)))).prompts
        # Built up front, as the baseline builds its groups: both paths then serialize once per batch in the loop.
        self.requests = [buffer_pb2.PutGroupsRequest(puts=[
            buffer_pb2.PutGroupRequest(group=make_group(c.prompt.prompt_id, c.attempt), claim_id=c.claim_id,
                                       worker_id="bench") for c in self.claims[first : first + BATCH]])
            for first in range(0, n, BATCH)]

    def batch(self, first: int) -> None:
        self.stub.PutGroups(self.requests[first // BATCH])
        got = self.stub.SampleGroups(buffer_pb2.SampleGroupsRequest(
            consumer="learner", num_groups=BATCH, policy_version=1, max_staleness=4, filter_low=0.0, filter_high=1.0,
            wait_ms=1000))
        ids = [g.entry_id for g in got.groups] if hasattr(got, "groups") else [eid for eid, _ in got.kept]
        assert len(ids) == BATCH
        self.stub.AckGroups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=ids))


class InProcess(Service):
    """Diagnostic: the buffer's core called in this process as the servicer calls it (no gRPC), keys under `core:`."""

    def __init__(self, redis_url: str, password: str, n: int) -> None:
        from services.buffer.config import BufferConfig
        from services.buffer.core import Buffer

        self.core = Buffer(BufferConfig(redis={"url": redis_url, "password": password, "key_prefix": "core:"},
                                        max_backlog=10**6))
        self.core.ensure_groups()
        stub = type("CoreStub", (), {
            "EnqueuePrompts": staticmethod(self.core.enqueue_prompts),
            "ClaimPrompts": staticmethod(self.core.claim_prompts),
            "PutGroups": staticmethod(self.put),
            "SampleGroups": staticmethod(lambda req: self.core.sample(req)),
            "AckGroups": staticmethod(self.core.ack_groups),
        })()
        super().__init__(stub, n)

    def put(self, req: buffer_pb2.PutGroupsRequest) -> buffer_pb2.PutGroupsResponse:
        """What the servicer does with a call's bytes (the client serializes them as the service path's does)."""
        raw = req.SerializeToString()
        return self.core.put_groups(buffer_pb2.PutGroupsRequest.FromString(raw), put_wire.read(raw, req))


class RawStreams:
    """The buffer's stream operations straight on Redis with redis-py, one round trip per step, keys under `prefix`:
    what the raw baseline does in this process and the `grpc_ceiling` server does behind grpcio."""

    def __init__(self, r, prefix: str) -> None:
        self.r = r
        self.prompts, self.groups, self.ids = f"{prefix}prompts", f"{prefix}groups", f"{prefix}groups:ids"
        r.xgroup_create(self.prompts, "rollout", id="0", mkstream=True)
        r.xgroup_create(self.groups, "learner", id="0", mkstream=True)

    def enqueue(self, prompts: list[common_pb2.Prompt]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for p in prompts:
            pipe.xadd(self.prompts, {"id": p.prompt_id, "p": p.SerializeToString()})
        pipe.execute()

    def claim(self, consumer: str, count: int) -> list:
        return self.r.xreadgroup("rollout", consumer, {self.prompts: ">"}, count=count)[0][1]

    def put(self, batch: list[tuple[str, bytes, str]]) -> list[bytes]:
        """(group_id, group bytes, claim_id) of a batch; the entry ids of the groups not stored before."""
        r = self.r
        known = r.hmget(self.ids, [group_id for group_id, _, _ in batch])  # idempotency lookup, one round trip
        new = [item for item, seen in zip(batch, known) if seen is None]
        tx = r.pipeline(transaction=True)  # the batch's XADD + prompt acks in one MULTI/EXEC
        for _, blob, claim_id in new:
            tx.xadd(self.groups, {"g": blob})
            tx.xack(self.prompts, "rollout", claim_id)
            tx.xdel(self.prompts, claim_id)
        ids = tx.execute()[::3]
        r.hset(self.ids, mapping={group_id: eid for (group_id, _, _), eid in zip(new, ids)})
        return ids

    def read(self, consumer: str, count: int) -> list:
        return self.r.xreadgroup("learner", consumer, {self.groups: ">"}, count=count)[0][1]

    def ack(self, entry_ids: list) -> int:
        tx = self.r.pipeline(transaction=True)
        tx.xack(self.groups, "learner", *entry_ids)
        tx.xdel(self.groups, *entry_ids)
        return tx.execute()[0]


class RawRedis:
    """The raw baseline: `RawStreams` in this process (keys under `raw:`)."""

    def __init__(self, r, n: int) -> None:
        self.streams = RawStreams(r, "raw:")
        self.streams.enqueue([common_pb2.Prompt(prompt_id=f"raw:{i}") for i in range(n)])
        self.claims = self.streams.claim("bench", n)
        self.payloads = [make_group(f"raw:{i}", 1) for i in range(n)]

    def batch(self, first: int) -> None:
        self.streams.put([(self.payloads[i].group_id, self.payloads[i].SerializeToString(), self.claims[i][0])
                          for i in range(first, first + BATCH)])
        got = self.streams.read("learner", BATCH)
        kept = [buffer_pb2.TrajectoryGroup.FromString(f[b"g"]) for _, f in got]
        assert len(kept) == BATCH
        self.streams.ack([eid for eid, _ in got])


def serve_ceiling(port: int, redis_url: str) -> None:
    """The `grpc_ceiling` server: `RawStreams` (keys under `ceiling:`) as bare grpcio handlers."""
    from concurrent import futures

    import redis

    from shared.grpc_server import server_options

    reuse_freed_memory()
    streams = RawStreams(redis.Redis.from_url(redis_url, password=os.environ["EUREKA_REDIS__PASSWORD"]), "ceiling:")

    def enqueue(raw: bytes, context) -> bytes:
        req = buffer_pb2.EnqueuePromptsRequest.FromString(raw)
        streams.enqueue(list(req.prompts))
        return buffer_pb2.EnqueuePromptsResponse(enqueued=len(req.prompts)).SerializeToString()

    def claim(raw: bytes, context) -> bytes:
        req = buffer_pb2.ClaimPromptsRequest.FromString(raw)
        out = buffer_pb2.ClaimPromptsResponse()
        for eid, f in streams.claim(req.worker_id, req.max_prompts):
            out.prompts.add(claim_id=eid.decode(), prompt=common_pb2.Prompt.FromString(f[b"p"]), attempt=1)
        return out.SerializeToString()

    def put(raw: bytes, context) -> bytes:
        req = buffer_pb2.PutGroupsRequest.FromString(raw)
        blobs = put_wire.read(raw, req).group_bytes(req)
        out = buffer_pb2.PutGroupsResponse()
        for eid in streams.put([(p.group.group_id, blob, p.claim_id) for p, blob in zip(req.puts, blobs)]):
            out.results.add(entry_id=eid.decode())
        return out.SerializeToString()

    def sample(raw: bytes, context) -> bytes:
        req = buffer_pb2.SampleGroupsRequest.FromString(raw)
        kept = [(eid.decode(), f[b"g"]) for eid, f in streams.read(req.consumer, req.num_groups)]
        return Sampled(page_bytes=sys.maxsize, kept=kept).wire()  # one page: the groups as stored

    def ack(raw: bytes, context) -> bytes:
        req = buffer_pb2.AckGroupsRequest.FromString(raw)
        return buffer_pb2.AckGroupsResponse(acked=streams.ack(list(req.entry_ids))).SerializeToString()

    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in (
        ("EnqueuePrompts", enqueue), ("ClaimPrompts", claim), ("PutGroups", put), ("SampleGroups", sample), ("AckGroups", ack))}
    server = grpc.server(futures.ThreadPoolExecutor(8), options=server_options(GrpcConfig()))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("eureka.v1.BufferService", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def measure(paths: dict[str, Service | RawRedis], start: int, end: int) -> dict[str, float]:
    """Alternates one batch of each path so load changes on a shared machine hit all alike; groups/s per path."""
    spent = dict.fromkeys(paths, 0.0)
    n = end - start
    for done, first in enumerate(range(start, end, BATCH), start=1):
        for name, path in paths.items():
            t = time.perf_counter()
            path.batch(first)
            spent[name] += time.perf_counter() - t
        if done % 10 == 0 or first + BATCH >= end:
            g = done * BATCH
            rates = "  ".join(f"{name} {g / t:7.1f}" for name, t in spent.items())
            print(f"\r{g:5d}/{n} groups  groups/s: {rates}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {name: n / t for name, t in spent.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=800, help="measured groups per path (a multiple of 8)")
    ap.add_argument("--serve-ceiling", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the grpc_ceiling process
    ap.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.groups <= 0 or args.groups % BATCH:
        ap.error(f"--groups must be a positive multiple of {BATCH} (one sample batch), got {args.groups}")
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling, args.redis_url)
        return 0
    reuse_freed_memory()  # this process plays rollout and learner (which set it) and the raw client alike
    token, password = "bench-token", "bench-pw"
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis", password=password)
        port = free_port()
        env = {**os.environ, "EUREKA_REDIS__PASSWORD": password, "EUREKA_SECURITY__SERVICE_TOKEN": token}
        server = subprocess.Popen([sys.executable, "-m", "eureka_cli", "buffer", "serve", "--port", str(port),
                                   "--metrics-port", "0", "--redis.url", redis.url, "--max-backlog", "1000000"],
                                  env=env, stderr=subprocess.DEVNULL)
        ceiling_port = free_port()
        ceiling = subprocess.Popen([sys.executable, __file__, "--serve-ceiling", str(ceiling_port), "--redis-url", redis.url],
                                   env=env)
        try:
            channel = create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig(service_token=token))
            wait_serving(channel, timeout_s=60)
            stub = buffer_pb2_grpc.BufferServiceStub(channel)
            ceiling_channel = create_channel(f"127.0.0.1:{ceiling_port}", GrpcConfig(), SecurityConfig())
            grpc.channel_ready_future(ceiling_channel).result(timeout=60)  # a bare server: no health service
            ceiling_stub = buffer_pb2_grpc.BufferServiceStub(ceiling_channel)
            warm = max(BATCH, args.groups // 10 // BATCH * BATCH)
            total = warm + args.groups
            paths = {"service": Service(stub, total), "raw": RawRedis(redis.client(), total),
                     "core": InProcess(redis.url, password, total), "grpc_ceiling": Service(ceiling_stub, total)}
            measure(paths, 0, warm)  # warm-up: connections, script cache, allocator
            rates = measure(paths, warm, total)
        finally:
            for proc in (server, ceiling):
                proc.terminate()
                proc.wait(30)
            redis.stop()
    result = {
        "service_groups_per_s": round(rates["service"], 1),
        "raw_redis_groups_per_s": round(rates["raw"], 1),
        "ratio": round(rates["service"] / rates["grpc_ceiling"], 3),
        "target_ratio": 0.8,
        "raw_redis_ratio": round(rates["service"] / rates["raw"], 3),
        "core_in_process_groups_per_s": round(rates["core"], 1),
        "core_ratio": round(rates["core"] / rates["raw"], 3),
        "grpc_ceiling_groups_per_s": round(rates["grpc_ceiling"], 1),
        "grpc_ceiling_ratio": round(rates["grpc_ceiling"] / rates["raw"], 3),
        "load_average_1m": load_1m(),
        "groups": args.groups,
        "samples_per_group": SAMPLES,
        "tokens_per_sample": TOKENS,
        "sample_batch": BATCH,
        "machine": machine(),
    }
    write_result(result, RESULTS)
    print(f"service {result['service_groups_per_s']} groups/s, bare grpcio ceiling "
          f"{result['grpc_ceiling_groups_per_s']} groups/s, service / ceiling {result['ratio']} (target >= 0.8); "
          f"raw redis-py {result['raw_redis_groups_per_s']} groups/s (service / raw {result['raw_redis_ratio']}); "
          f"core without gRPC {result['core_in_process_groups_per_s']} groups/s -> {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
