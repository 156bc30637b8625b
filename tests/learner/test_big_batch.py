"""A training batch far above the message cap: 128 groups x 8 responses x 4096 tokens, a 1 MB image a prompt.

Through the learner's own sample client against a real `eureka buffer serve` process and redis-server: the
batch arrives whole, in pages, with the buffer's peak memory printed; then the buffer is killed mid-paging
and the batch, replayed from what is pending, still arrives with every group once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from services.learner.config import LearnerConfig
from services.learner.driver import BufferDriver, Dataset
from shared.config import GrpcConfig, SecurityConfig
from shared.dataset import Record
from shared.grpc_client import create_channel, wait_serving
from shared.process import terminate
from shared.redis_proc import free_port

GROUPS, RESPONSES, TOKENS, IMAGE_BYTES, PUT_BATCH = 128, 8, 4096, 1 << 20, 8


def _serve(port: int, redis_server) -> subprocess.Popen:
    env = {**os.environ, "EUREKA_REDIS__PASSWORD": redis_server.password}
    args = [sys.executable, "-c", "import sys; from eureka_cli.main import main; sys.exit(main())", "buffer", "serve",
            "--port", str(port), "--metrics-port", "0", "--redis.url", redis_server.url]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    wait_serving(create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig()), timeout_s=60)
    return proc


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _fill(stub: buffer_pb2_grpc.BufferServiceStub) -> list[str]:
    """GROUPS big groups put through claims, PUT_BATCH a call (each call stays under the cap); their entry ids."""
    ids: list[str] = []
    tokens = [(i * 7919) % 150_000 for i in range(TOKENS)]
    for start in range(0, GROUPS, PUT_BATCH):
        prompts = [common_pb2.Prompt(prompt_id=f"train:0:{i}", messages_json='[{"role": "user", "content": "?"}]',
                                     answer="2", cursor=i, images=[common_pb2.ImageRef(data=os.urandom(IMAGE_BYTES))])
                   for i in range(start, start + PUT_BATCH)]
        stub.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=start,
                                                             cursor_end=start + PUT_BATCH))
        claims = stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id="w1", max_prompts=PUT_BATCH)).prompts
        puts = []
        for c in claims:
            samples = [buffer_pb2.Sample(response_token_ids=tokens, behaviour_logprobs=[-0.25] * TOKENS,
                                         response_text="x" * (4 * TOKENS), reward=float(j % 2), accuracy=float(j % 2),
                                         format=1.0, finish_reason="length") for j in range(RESPONSES)]
            g = buffer_pb2.TrajectoryGroup(group_id=f"{c.prompt.prompt_id}#{c.attempt}", prompt_id=c.prompt.prompt_id,
                                           attempt=c.attempt, prompt=c.prompt, prompt_token_ids=tokens[:1024],
                                           samples=samples, worker_id="w1", created_unix=1.0)
            puts.append(buffer_pb2.PutGroupRequest(group=g, claim_id=c.claim_id, worker_id="w1"))
        ids += [r.entry_id for r in stub.PutGroups(buffer_pb2.PutGroupsRequest(puts=puts)).results]
    return ids


def _driver(port: int, tmp_path: Path) -> BufferDriver:
    cfg = LearnerConfig(buffer_address=f"127.0.0.1:{port}", train_batch_groups=GROUPS, sample_wait_ms=1000,
                        recipe={"max_staleness": 0, "filter_low": 0.0, "filter_high": 1.0}, run_dir=tmp_path)
    dataset = Dataset([Record(id="0", messages=[{"role": "user", "content": "?"}], answer="2", images=[])])
    return BufferDriver(create_channel(cfg.buffer_address, cfg.grpc, cfg.security), cfg, dataset, threading.Event())


@pytest.mark.slow  # about 30 s: 172 MiB put and sampled twice
def test_a_batch_above_the_message_cap_arrives_whole_and_survives_a_buffer_kill(redis_server, tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(port, redis_server)
    try:
        stub = buffer_pb2_grpc.BufferServiceStub(create_channel(f"127.0.0.1:{port}", GrpcConfig(), SecurityConfig()))
        ids = _fill(stub)
    finally:
        terminate(proc, 30)
    proc = _serve(port, redis_server)  # a fresh process: its peak memory is the sampling alone
    try:
        baseline = _peak_rss_bytes(proc.pid)
        batch, _ = _driver(port, tmp_path).sample(version=0)
        peak = _peak_rss_bytes(proc.pid)
        reply_bytes = batch.ByteSize()
        assert [g.entry_id for g in batch.groups] == ids
        assert reply_bytes > GrpcConfig().max_message_bytes  # the batch could not have come in one reply
        assert len(batch.groups[-1].group.prompt.images[0].data) == IMAGE_BYTES
        print(f"\nbatch {reply_bytes / 2**20:.0f} MiB in pages; buffer peak RSS {peak / 2**20:.0f} MiB "
              f"({(peak - baseline) / 2**20:.0f} MiB above its idle {baseline / 2**20:.0f} MiB)")

        # Again from what is pending (a restarted learner replays it), with the buffer killed mid-paging.
        r = redis_server.client()
        r.hdel("eureka:groups:returned", "learner")
        result: dict[str, object] = {}
        driver = _driver(port, tmp_path)
        sampler = threading.Thread(target=lambda: result.update(batch=driver.sample(version=0)[0]))
        sampler.start()
        end = time.monotonic() + 120
        while r.hget("eureka:groups:returned", "learner") is None and time.monotonic() < end:
            time.sleep(0.01)  # until the first page has been answered
        returned = r.hget("eureka:groups:returned", "learner")
        assert returned is not None and returned.decode() not in (ids[0], ids[-1]), "the kill must land mid-paging"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = _serve(port, redis_server)
        sampler.join(180)
        assert not sampler.is_alive()
        again = result["batch"]
        assert [g.entry_id for g in again.groups] == ids  # nothing lost, nothing repeated, in order
        assert stub.GetStats(buffer_pb2.GetStatsRequest()).groups_pending == GROUPS
    finally:
        terminate(proc, 30)
