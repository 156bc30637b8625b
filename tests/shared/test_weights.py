"""Weight publishing and pulling against a real gRPC server; faults injected by a tampering servicer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import torch
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer, add_raw_bytes_service
from shared.weights import (
    DEFAULT_CHUNK_BYTES,
    WeightPullError,
    WeightStore,
    add_weight_service,
    deserialize_state_dict,
    pull_weights,
    serialize_state_dict,
)
from shared.weights.frames import parse_chunk_frame
from shared.weights.safetensors_io import state_dict_from_buffer
from shared.weights.serve import WEIGHT_SERVICE, WeightServicer
from shared.weights.store import Published

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
    """The real servicer with a fault applied to its chunk stream (what a broken network or server sends):
    its frames are read as messages, edited, and sent serialized again."""

    def __init__(self, store: WeightStore, tamper: Tamper) -> None:
        super().__init__(store)
        self.tamper = tamper

    def StreamWeights(self, request, context):  # noqa: N802
        chunks = map(weights_pb2.WeightChunk.FromString, super().StreamWeights(request, context))
        return (c.SerializeToString() for c in self.tamper(chunks))


def _serve(servicer: WeightServicer) -> GrpcServer:
    """`servicer` registered the way `add_weight_service` registers the real one."""
    return GrpcServer(lambda s: add_raw_bytes_service(s, WEIGHT_SERVICE, servicer), host="127.0.0.1", port=0,
                      grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()


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


def test_a_version_is_kept_as_its_frames_and_sent_as_they_are() -> None:
    sd = {f"w{i}": torch.full((DEFAULT_CHUNK_BYTES // 4 // 2,), float(i)) for i in range(5)}  # 2.5 default chunks
    blob = serialize_state_dict(sd)
    published = Published.of(7, blob, len(sd))
    assert published.blob == blob and published.total_bytes == len(blob) and len(published.frames) == 3
    sent = list(published.frames_of(DEFAULT_CHUNK_BYTES))
    assert all(a is b.data for a, b in zip(sent, published.frames, strict=True))  # no copy per stream
    chunks = [parse_chunk_frame(f) for f in published.frames_of(1 << 20)]  # another size: cut anew
    assert [c.offset for c in chunks] == list(range(0, len(blob), 1 << 20)) and chunks[-1].last
    assert b"".join(c.data for c in chunks) == blob and {c.digest for c in chunks} == {published.digest}


def test_pull_round_trip_in_many_chunks(store: WeightStore) -> None:
    srv = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0,
                     grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    try:
        channel = _channel(srv)
        info = weights_pb2_grpc.WeightServiceStub(channel).GetVersion(weights_pb2.GetVersionRequest())
        version, blob, digest = store.current()
        assert (info.policy_version, info.total_bytes, info.digest, info.num_tensors) == (1, len(blob), digest, 4)
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
    # Every chunk consistent with itself (checksum ok), but the blob is not the one the digest names.
    first = next(chunks)
    rest = list(chunks)
    blob = b"".join(c.data for c in [first, *rest])
    bad = Published.of(first.policy_version, blob[:-1] + bytes([blob[-1] ^ 1]), 0, digest=first.digest)
    yield from map(weights_pb2.WeightChunk.FromString, bad.frames_of(len(first.data)))


def _mix_versions(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    for i, c in enumerate(chunks):
        if i == 2:
            c.policy_version += 1
        yield c


def _relabel_version(chunks: Iterator[weights_pb2.WeightChunk]) -> Iterator[weights_pb2.WeightChunk]:
    # The right bytes, consistently announced as another version: the digest's seed must catch it.
    for c in chunks:
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
        (_flip_byte, "checksum"),
        (_corrupt_whole_blob, "digest of version"),
        (_mix_versions, "versions mixed"),
        (_relabel_version, "digest of version 2"),
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


def test_parse_chunk_frame_reads_what_protobuf_reads(store: WeightStore) -> None:
    snap = store.snapshot()
    big = weights_pb2.WeightChunk(policy_version=2**64 - 1, offset=2**63, data=b"\x00\xff" * 9, checksum=2**64 - 1,
                                  last=True, total_bytes=18, digest="ab" * 16, frozen_digest="cd" * 16, frozen=True)
    # an unknown (newer) field of every skippable wire type (numbers 100-103), before and after the known ones
    unknown = b"\xa0\x06\x96\x01" + b"\xa9\x06" + bytes(8) + b"\xb2\x06\x02hi" + b"\xbd\x06" + bytes(4)
    frames = [*snap.frames_of(100), big.SerializeToString(), unknown + big.SerializeToString() + unknown, b""]
    for frame in frames:
        want, got = weights_pb2.WeightChunk.FromString(frame), parse_chunk_frame(frame)
        assert {**vars(got), "data": bytes(got.data)} == {name: getattr(want, name) for name in vars(got)}
    assert parse_chunk_frame(frames[1]).data.obj is frames[1]  # a view into the frame, not a copy


@pytest.mark.parametrize(
    "frame",
    [
        b"\x1a\x10" + b"x" * 5,  # data announces 16 bytes, 5 follow
        b"\x08\x80",  # a varint cut short
        b"\x08" + b"\xff" * 10 + b"\x01",  # a varint longer than 10 bytes
        b"\x0a\x01x",  # policy_version (a varint) sent length-delimited
        b"\x1b",  # data with the group wire type
        b"\x00\x01",  # field number 0
        b"\x20" + b"\xff" * 9 + b"\x7f",  # checksum beyond 64 bits
        b"\x3a\x02\xff\xfe",  # digest not UTF-8
    ],
)
def test_malformed_frame_from_a_real_server_raises(frame: bytes) -> None:
    with pytest.raises(WeightPullError, match="malformed weight chunk"):
        parse_chunk_frame(frame)

    def add(server: grpc.Server) -> list[str]:  # a server that sends this frame as its StreamWeights answer
        handler = grpc.unary_stream_rpc_method_handler(lambda request, context: iter([frame]),
                                                       response_serializer=lambda b: b)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("eureka.v1.WeightService", {"StreamWeights": handler}),))
        return ["eureka.v1.WeightService"]

    srv = GrpcServer(add, host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    try:
        with pytest.raises(WeightPullError, match="malformed weight chunk"):
            pull_weights(_channel(srv), min_version=0, timeout_s=5)
    finally:
        srv.stop(0)


def test_state_dict_from_buffer_matches_safetensors() -> None:
    sd = {
        **_state_dict(4),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "odd": torch.arange(3, dtype=torch.int8),
        "half": torch.arange(5, dtype=torch.float16),
    }
    blob = serialize_state_dict(sd)
    got = state_dict_from_buffer(np.frombuffer(bytearray(blob), dtype=np.uint8))
    _assert_same(got, deserialize_state_dict(blob))
    # a float16 at an odd offset (safetensors itself never writes one): read through a copy of its own
    odd = b'{"b":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"h":{"dtype":"F16","shape":[1],"data_offsets":[1,3]}}'
    odd += b" " * (-len(odd) % 8)
    got = state_dict_from_buffer(np.frombuffer(bytearray(len(odd).to_bytes(8, "little") + odd + b"\x07"
                                                         + np.float16(1.5).tobytes()), dtype=np.uint8))
    assert got["b"].tolist() == [7] and got["h"].tolist() == [1.5]
    # an 8-byte header length, then a header whose tensors leave a data byte uncovered
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    for bad, message in [
        (len(header).to_bytes(8, "little") + header + bytes(5), "cover 4 of 5"),
        (len(header).to_bytes(8, "little") + header.replace(b"F32", b"F99") + bytes(4), "F99"),
        (len(header).to_bytes(8, "little") + header.replace(b"[1]", b"[2]") + bytes(4), "for shape"),
        ((10**6).to_bytes(8, "little") + header, "runs past the end"),
    ]:
        with pytest.raises((ValueError, KeyError), match=message):
            state_dict_from_buffer(np.frombuffer(bad, dtype=np.uint8))
