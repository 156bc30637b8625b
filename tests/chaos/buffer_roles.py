"""Processes of the buffer chaos test: a producer (rollout-like) and a consumer (learner-like).

Run as `python buffer_roles.py producer TARGET LOG SEED` or `python buffer_roles.py consumer TARGET LOG`.
A producer appends `group_id entry_id` to its log once a put is acknowledged; the consumer appends
`entry_id group_id` for each group it receives (its "checkpoint", fsynced) and only then acks them.
Both survive any outage of the buffer or Redis by retrying; both may be killed at any moment.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import grpc
from eureka.v1 import buffer_pb2, buffer_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel

TOKEN = "chaos-token"
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
             grpc.StatusCode.RESOURCE_EXHAUSTED)


def _stub(target: str) -> buffer_pb2_grpc.BufferServiceStub:
    channel = create_channel(target, GrpcConfig(deadline_s=5.0), SecurityConfig(service_token=TOKEN))
    return buffer_pb2_grpc.BufferServiceStub(channel)


def _append(log, lines: list[str]) -> None:
    log.write("".join(line + "\n" for line in lines))
    log.flush()
    os.fsync(log.fileno())


def _group(c: buffer_pb2.ClaimedPrompt, rng: random.Random) -> buffer_pb2.TrajectoryGroup:
    pid = c.prompt.prompt_id
    samples = [buffer_pb2.Sample(response_token_ids=[rng.randrange(1000) for _ in range(16)],
                                 behaviour_logprobs=[-1.0] * 16, accuracy=float(rng.random() < 0.5),
                                 finish_reason="stop") for _ in range(8)]
    return buffer_pb2.TrajectoryGroup(group_id=f"{pid}#{c.attempt}", prompt_id=pid, attempt=c.attempt,
                                      prompt_token_ids=[1, 2, 3], samples=samples, policy_version=0)


def producer(target: str, log_path: str, seed: int) -> None:
    rng = random.Random(seed)
    stub = _stub(target)
    worker = f"producer-{os.getpid()}"
    with open(log_path, "a") as log:
        while True:
            try:
                claimed = stub.ClaimPrompts(buffer_pb2.ClaimPromptsRequest(worker_id=worker, max_prompts=2, wait_ms=500)).prompts
            except grpc.RpcError:
                time.sleep(0.1)
                continue
            for c in claimed:
                time.sleep(rng.uniform(0.1, 0.5))  # "generation"
                req = buffer_pb2.PutGroupRequest(group=_group(c, rng), claim_id=c.claim_id, worker_id=worker)
                while True:  # retry the same put (idempotent) until it is acknowledged or refused for good
                    try:
                        reply = stub.PutGroup(req)
                    except grpc.RpcError as e:
                        if e.code() in RETRYABLE:
                            time.sleep(0.1)
                            continue
                        break  # FAILED_PRECONDITION: another attempt completed the prompt
                    _append(log, [f"{req.group.group_id} {reply.entry_id}"])
                    break


def _recover(stub: buffer_pb2_grpc.BufferServiceStub, log_path: Path) -> str:
    """Reads the checkpoint (dropping a torn last line), acks every checkpointed entry, returns the last id."""
    text = log_path.read_text() if log_path.exists() else ""
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        log_path.write_text(text)
    ids = [line.split()[0] for line in text.splitlines()]
    for i in range(0, len(ids), 500):
        while True:
            try:
                stub.AckGroups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=ids[i : i + 500]))
                break
            except grpc.RpcError:
                time.sleep(0.1)
    return ids[-1] if ids else ""


def consumer(target: str, log_path: str) -> None:
    stub = _stub(target)
    last = _recover(stub, Path(log_path))
    replay = True
    with open(log_path, "a") as log:
        while True:
            req = buffer_pb2.SampleGroupsRequest(consumer="learner", num_groups=4, filter_low=0.0, filter_high=1.0,
                                                 max_staleness=1000, wait_ms=1000, replay_pending=replay,
                                                 after_entry_id=last)
            try:
                got = stub.SampleGroups(req).groups
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            replay = False
            _append(log, [f"{g.entry_id} {g.group.group_id}" for g in got])  # the checkpoint
            last = got[-1].entry_id
            ids = [g.entry_id for g in got]
            while True:
                try:
                    stub.AckGroups(buffer_pb2.AckGroupsRequest(consumer="learner", entry_ids=ids))
                    break
                except grpc.RpcError:
                    time.sleep(0.05)


if __name__ == "__main__":
    role, target, path = sys.argv[1:4]
    if role == "producer":
        producer(target, path, int(sys.argv[4]))
    else:
        consumer(target, path)
