"""Weight publishing and pulling against a real gRPC server; faults injected by a tampering servicer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
import torch
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.weights import (
    Published,
    WeightPullError,
    WeightServicer,
    WeightStore,
    add_weight_service,
    deserialize_state_dict,
    iter_chunks,
    pull_weights,
    serialize_state_dict,
)

Tamper = Callable[[Iterator[weights_pb2.WeightChunk]], Iterator[weights_pb2.WeightChunk]]


def _state_dict(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(50, 8, generator=g)
    return {
        "embed.weight": embed,
        "lm_head.weight": embed,  # tied: shares storage with embed
        "layer.bias": torch.randn(8, generator=g).to(torch.bfloat16),
        "layer.weight": torch.randn(8, 8, generator=g).t(),  # not contiguous
    }


class _Tampering(WeightServicer):
    """The real servicer with a fault applied to its chunk stream (what a broken network or server sends)."""

    def __init__(self, store: WeightStore, tamper: Tamper) -> None:
        super().__init__(store)
        self.tamper = tamper

    def StreamWeights(self, request, context):  # noqa: N802
        return self.tamper(super().StreamWeights(request, context))


def _serve(servicer: WeightServicer) -> GrpcServer:
    def add(server: grpc.Server) -> list[str]:
        weights_pb2_grpc.add_WeightServiceServicer_to_server(servicer, server)
        return [weights_pb2.DESCRIPTOR.services_by_name["WeightService"].full_name]

    return GrpcServer(add, host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()


def _channel(server: GrpcServer) -> grpc.Channel:
    return create_channel(f"127.0.0.1:{server.port}", GrpcConfig(deadline_s=5), SecurityConfig())


@pytest.fixture
def store() -> WeightStore:
    s = WeightStore()
    s.publish(1, _state_dict(1))
    return s


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor), name


def test_serialize_round_trip_keeps_dtypes_and_tied_tensors() -> None:
    sd = _state_dict(0)
    _assert_same(deserialize_state_dict(serialize_state_dict(sd)), sd)


def test_pull_round_trip_in_many_chunks(store: WeightStore) -> None:
    srv = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0,
                     grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    try:
        channel = _channel(srv)
        info = weights_pb2_grpc.WeightServiceStub(channel).GetVersion(weights_pb2.GetVersionRequest())
        version, blob, sha = store.current()
        assert (info.policy_version, info.total_bytes, info.sha256, info.num_tensors) == (1, len(blob), sha, 4)
        got_version, sd = pull_weights(channel, min_version=1, timeout_s=5, chunk_bytes=256)
        assert got_version == 1
        _assert_same(sd, _state_dict(1))
        store.publish(2, _state_dict(2))
        got_version, sd = pull_weights(channel, min_version=0, timeout_s=5)
        assert got_version == 2
        _assert_same(sd, _state_dict(2))
    finally:
        srv.stop(0)


def test_min_version_newer_than_published_is_refused(store: WeightStore) -> None:
    srv = _serve(WeightServicer(store))
    try:
        with pytest.raises(WeightPullError, match="FAILED_PRECONDITION.*older than min_version 2"):
            pull_weights(_channel(srv), min_version=2, timeout_s=5)
        with pytest.raises(WeightPullError, match="INVALID_ARGUMENT.*chunk_bytes"):
            pull_weights(_channel(srv), min_version=0, timeout_s=5, chunk_bytes=1 << 30)
    finally:
        srv.stop(0)


def test_nothing_published_yet() -> None:
    empty = WeightStore()
    srv = _serve(WeightServicer(empty))
    try:
        channel = _channel(srv)
        assert weights_pb2_grpc.WeightServiceStub(channel).GetVersion(weights_pb2.GetVersionRequest()).policy_version == 0
        with pytest.raises(WeightPullError, match="no weights published yet"):
            pull_weights(channel, min_version=0, timeout_s=5)
    finally:
        srv.stop(0)
    with pytest.raises(LookupError):
        empty.current()


def test_versions_only_go_up(store: WeightStore) -> None:
    with pytest.raises(ValueError, match="versions only go up"):
        store.publish(0, _state_dict(0))
    store.publish(1, _state_dict(3))  # republishing the same version (after a restart) is allowed
    assert store.current()[0] == 1


def _flip_byte(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    for i, c in enumerate(chunks):
        if i == 1:
            c.data = bytes([c.data[0] ^ 0xFF]) + c.data[1:]
        yield c


def _corrupt_whole_blob(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    # Every chunk consistent with itself (CRC ok), but the blob is not the one the SHA-256 names.
    first = next(chunks)
    rest = list(chunks)
    blob = b"".join(c.data for c in [first, *rest])
    bad = Published(first.policy_version, blob[:-1] + bytes([blob[-1] ^ 1]), first.sha256, 0)
    yield from iter_chunks(bad, len(first.data))


def _mix_versions(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    for i, c in enumerate(chunks):
        if i == 2:
            c.policy_version += 1
        yield c


def _skip_chunk(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    for i, c in enumerate(chunks):
        if i != 1:
            yield c


def _drop_last(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    for c in chunks:
        if not c.last:
            yield c


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_flip_byte, "CRC32"),
        (_corrupt_whole_blob, "SHA-256"),
        (_mix_versions, "versions mixed"),
        (_skip_chunk, "offset"),
        (_drop_last, "before its last chunk"),
    ],
)
def test_corrupt_streams_raise(store: WeightStore, tamper: Tamper, message: str) -> None:
    srv = _serve(_Tampering(store, tamper))
    try:
        with pytest.raises(WeightPullError, match=message):
            pull_weights(_channel(srv), min_version=0, timeout_s=5, chunk_bytes=128)
    finally:
        srv.stop(0)


def _slow(gate: threading.Event, delay_s: float) -> Tamper:
    def tamper(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
        for i, c in enumerate(chunks):
            if i == 1:
                gate.set()  # the stream has started: the test may publish now
            time.sleep(delay_s)
            yield c

    return tamper


def test_deadline_raises(store: WeightStore) -> None:
    srv = _serve(_Tampering(store, _slow(threading.Event(), 0.2)))
    try:
        with pytest.raises(WeightPullError, match="deadline"):
            pull_weights(_channel(srv), min_version=0, timeout_s=0.5, chunk_bytes=64)
    finally:
        srv.stop(0)


def test_publish_during_a_pull_serves_one_whole_version(store: WeightStore) -> None:
    gate = threading.Event()
    srv = _serve(_Tampering(store, _slow(gate, 0.01)))
    result: list[tuple[int, dict[str, torch.Tensor]]] = []
    try:
        puller = threading.Thread(target=lambda: result.append(pull_weights(_channel(srv), 0, 30, chunk_bytes=128)))
        puller.start()
        assert gate.wait(10)
        store.publish(2, _state_dict(2))
        puller.join(30)
        version, sd = result[0]
        assert version == 1
        _assert_same(sd, _state_dict(1))
        assert pull_weights(_channel(srv), 2, 30, chunk_bytes=1 << 20)[0] == 2
    finally:
        srv.stop(0)
