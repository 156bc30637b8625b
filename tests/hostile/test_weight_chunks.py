"""A hostile weight server: `pull_weights` against streams with bad checksums, mixed versions, wrong offsets, missing
or extra chunks, lying totals and checksums, random chunk fields, aborts. The puller gets the exact published
tensors or a WeightPullError, nothing else. And hostile StreamWeights/GetVersion requests to the real servicer."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from eureka.v1 import weights_pb2, weights_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.weights import WeightPullError, WeightStore, add_weight_service, pull_weights
from shared.weights.frames import chunk_checksum, version_digest
from shared.weights.store import Published
from tests.hostile.conftest import OUTCOMES, count, expect_clear
from tests.hostile.protogen import messages

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
VERSION = 3


def state_dict():
    import torch

    return {"w": torch.arange(40, dtype=torch.float32).reshape(5, 8), "b": torch.ones(3, dtype=torch.bfloat16)}


class HostileServicer(weights_pb2_grpc.WeightServiceServicer):
    """Streams whatever `script` holds: WeightChunk messages, or a (code, details) pair to abort with."""

    def __init__(self) -> None:
        self.script: list = []

    def StreamWeights(self, request, context):  # noqa: N802
        for step in self.script:
            if isinstance(step, tuple):
                context.abort(*step)
            yield step


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[HostileServicer, grpc.Channel, Published]]:
    from shared.weights import serialize_state_dict

    blob = serialize_state_dict(state_dict())
    good = Published.of(VERSION, blob, 2)
    servicer = HostileServicer()

    def add(server) -> list[str]:
        weights_pb2_grpc.add_WeightServiceServicer_to_server(servicer, server)
        return ["eureka.v1.WeightService"]

    srv = GrpcServer(add, host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    channel = create_channel(f"127.0.0.1:{srv.port}", GrpcConfig(deadline_s=10), SecurityConfig())
    yield servicer, channel, good
    channel.close()
    srv.stop(0)


def _rechecksum(c: weights_pb2.WeightChunk) -> weights_pb2.WeightChunk:
    c.checksum = chunk_checksum(c.data)
    return c


@st.composite
def scripts(draw, good: Published) -> list:
    """The good chunks of `good` with one to three hostile edits."""
    chunks = [weights_pb2.WeightChunk.FromString(f) for f in good.frames_of(draw(st.sampled_from([64, 100, 256, 10_000])))]
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["flip", "checksum", "version", "offset", "drop", "dup", "swap", "nolast", "extra",
                                     "digest", "total", "old", "garbage", "random", "abort", "empty"]))
        i = draw(st.integers(0, max(0, len(chunks) - 1)))
        if not chunks or edit == "empty":
            chunks = []
            break
        if isinstance(chunks[i], tuple):  # an abort already placed there
            continue
        c = chunks[i] = weights_pb2.WeightChunk.FromString(chunks[i].SerializeToString())
        if edit == "flip" and c.data:
            pos = draw(st.integers(0, len(c.data) - 1))
            c.data = c.data[:pos] + bytes([c.data[pos] ^ 0xFF]) + c.data[pos + 1:]
            if draw(st.booleans()):
                _rechecksum(c)  # a consistent chunk of a corrupt blob: the digest must catch it
        elif edit == "checksum":
            c.checksum = draw(st.integers(0, 2**64 - 1))
        elif edit == "version":
            c.policy_version = draw(st.integers(0, 2**64 - 1))
        elif edit == "offset":
            c.offset = draw(st.integers(0, 2**64 - 1))
        elif edit == "drop":
            del chunks[i]
        elif edit == "dup":
            chunks.insert(i, c)
        elif edit == "swap" and len(chunks) > 1:
            j = draw(st.integers(0, len(chunks) - 1))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif edit == "nolast":
            c.last = False
            del chunks[i + 1:]
        elif edit == "extra":
            c.data += draw(st.binary(min_size=1, max_size=50))
            _rechecksum(c)
        elif edit == "digest":
            c.digest = draw(st.sampled_from(["", "0" * 32, version_digest(b"x", VERSION)]))
        elif edit == "total":
            c.total_bytes = draw(st.integers(0, 2**64 - 1))
        elif edit == "old":
            for k in chunks:
                k.policy_version = 0
        elif edit == "garbage":  # a whole, consistent, verified stream of bytes that are not safetensors
            data = draw(st.binary(min_size=1, max_size=300))
            chunks = [_rechecksum(weights_pb2.WeightChunk(policy_version=VERSION, offset=0, data=data, last=True,
                                                     total_bytes=len(data), digest=version_digest(data, VERSION)))]
        elif edit == "random":
            chunks[i] = draw(messages(weights_pb2.WeightChunk))
        elif edit == "abort":
            chunks.insert(i, (draw(st.sampled_from([grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                                                    grpc.StatusCode.DATA_LOSS])), "hostile abort"))
    return chunks


@SETTINGS
@given(data=st.data())
def test_pull_gets_the_version_or_a_weight_pull_error(hostile, data) -> None:
    import torch

    servicer, channel, good = hostile
    servicer.script = data.draw(scripts(good))
    count("weight chunk streams")
    try:
        version, sd = pull_weights(channel, min_version=1, timeout_s=10)
    except WeightPullError as e:
        OUTCOMES["weights WeightPullError"] += 1
        assert str(e)
        return
    OUTCOMES["weights pulled"] += 1  # the edits cancelled out (e.g. a dropped chunk after the last one)
    assert version == VERSION
    want = state_dict()
    assert set(sd) == set(want) and all(torch.equal(sd[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def real_server() -> Iterator[grpc.Channel]:
    store = WeightStore()
    store.publish(VERSION, state_dict())
    srv = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(grace_s=0),
                     security=SecurityConfig()).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield channel
    channel.close()
    srv.stop(0)


@settings(SETTINGS, max_examples=150)
@given(request=st.one_of(messages(weights_pb2.StreamWeightsRequest).map(lambda m: m.SerializeToString()),
                         st.binary(max_size=40)),
       method=st.sampled_from(["StreamWeights", "GetVersion"]))
def test_hostile_requests_to_the_weight_service(real_server, request, method) -> None:
    count("weights gRPC requests")
    path = f"/eureka.v1.WeightService/{method}"
    try:
        if method == "GetVersion":
            real_server.unary_unary(path)(request, timeout=10)
        else:
            list(real_server.unary_stream(path)(request, timeout=10))
        OUTCOMES["grpc OK"] += 1
    except grpc.RpcError as e:
        expect_clear(e)
