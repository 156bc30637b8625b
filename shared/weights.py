"""Versioned weight publishing: the learner serves its consolidated state dict, rollout pulls it.

The state dict is serialized once per version with safetensors and streamed in chunks that each
carry the version, their offset and a CRC32; the last chunk closes a blob whose SHA-256 is known up
front. A puller either gets one whole verified version or a `WeightPullError` and keeps what it had,
so a worker never serves a mix of two versions. Version 0 is the base model.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.grpc_server import FailedPrecondition, InvalidArgument, map_errors

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 16 << 20


class WeightPullError(Exception):
    """A pull that did not yield one whole, verified version (the caller keeps its old weights)."""


def serialize_state_dict(sd: dict[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of `sd` (on CPU, contiguous; tensors that share storage are copied apart)."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    flat: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        flat[name] = t.clone() if key in seen else t
        seen.add(key)
    return save(flat)


def deserialize_state_dict(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)


@dataclass(frozen=True)
class Published:
    version: int
    blob: bytes
    sha256: str
    num_tensors: int


class WeightStore:
    """Holds the latest published version only; readers get an immutable snapshot (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Published | None = None

    def publish(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        blob = serialize_state_dict(state_dict)
        published = Published(version, blob, hashlib.sha256(blob).hexdigest(), len(state_dict))
        with self._lock:
            if self._current is not None and version < self._current.version:
                raise ValueError(
                    f"cannot publish version {version}: version {self._current.version} is already published;"
                    " versions only go up"
                )
            self._current = published  # the old blob is freed once no stream holds it

    def snapshot(self) -> Published | None:
        with self._lock:
            return self._current

    def current(self) -> tuple[int, bytes, str]:
        """(version, blob, sha256) of the latest version; LookupError before the first publish."""
        snap = self.snapshot()
        if snap is None:
            raise LookupError("no weights published yet")
        return snap.version, snap.blob, snap.sha256


def iter_chunks(published: Published, chunk_bytes: int) -> Iterator[weights_pb2.WeightChunk]:
    """The chunks of one published version, in order, the last one marked."""
    total = len(published.blob)
    offset = 0
    while True:
        data = published.blob[offset : offset + chunk_bytes]
        last = offset + len(data) >= total
        yield weights_pb2.WeightChunk(
            policy_version=published.version, offset=offset, data=data, crc32=zlib.crc32(data),
            last=last, total_bytes=total, sha256=published.sha256,
        )
        if last:
            return
        offset += len(data)


class WeightServicer(weights_pb2_grpc.WeightServiceServicer):
    """GetVersion and StreamWeights over a WeightStore; a stream serves one snapshot to its end."""

    def __init__(self, store: WeightStore) -> None:
        self.store = store

    @map_errors
    def GetVersion(self, request, context):  # noqa: N802
        snap = self.store.snapshot()
        if snap is None:
            return weights_pb2.WeightVersion(policy_version=0)
        return weights_pb2.WeightVersion(
            policy_version=snap.version, total_bytes=len(snap.blob), sha256=snap.sha256, num_tensors=snap.num_tensors
        )

    @map_errors
    def StreamWeights(self, request, context):  # noqa: N802
        # Checks run before the generator is returned, so map_errors turns them into a status.
        if request.chunk_bytes > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes {request.chunk_bytes} is above {MAX_CHUNK_BYTES}; ask for less or 0")
        snap = self.store.snapshot()
        if snap is None:
            raise FailedPrecondition("no weights published yet; the learner publishes version 0 at start, retry")
        if snap.version < request.min_version:
            raise FailedPrecondition(
                f"published version {snap.version} is older than min_version {request.min_version}; retry later"
            )
        return iter_chunks(snap, request.chunk_bytes or DEFAULT_CHUNK_BYTES)


def add_weight_service(server: grpc.Server, store: WeightStore) -> list[str]:
    """Register a WeightServicer over `store`; returns the service names (for GrpcServer)."""
    weights_pb2_grpc.add_WeightServiceServicer_to_server(WeightServicer(store), server)
    return [weights_pb2.DESCRIPTOR.services_by_name["WeightService"].full_name]


def _assemble(chunks: Iterator[weights_pb2.WeightChunk], min_version: int) -> tuple[int, bytes]:
    """Join the chunks of one version, verifying each; raises WeightPullError with a sentence."""
    parts: list[bytes] = []
    received = 0
    first: weights_pb2.WeightChunk | None = None
    for chunk in chunks:
        if first is None:
            first = chunk
            if chunk.policy_version < min_version:
                raise WeightPullError(f"server sent version {chunk.policy_version}, below min_version {min_version}")
        elif (chunk.policy_version, chunk.total_bytes, chunk.sha256) != (
            first.policy_version, first.total_bytes, first.sha256,
        ):
            raise WeightPullError(
                f"chunk at offset {chunk.offset} belongs to version {chunk.policy_version}, not {first.policy_version}:"
                " versions mixed in one stream"
            )
        if chunk.offset != received:
            raise WeightPullError(f"chunk offset {chunk.offset} does not follow the {received} bytes received")
        if zlib.crc32(chunk.data) != chunk.crc32:
            raise WeightPullError(f"chunk at offset {chunk.offset} fails its CRC32 check")
        received += len(chunk.data)
        if received > first.total_bytes:
            raise WeightPullError(f"received {received} bytes, more than the announced {first.total_bytes}")
        parts.append(chunk.data)
        if chunk.last:
            break
    if first is None or not chunk.last:
        raise WeightPullError("the stream ended before its last chunk")
    if received != first.total_bytes:
        raise WeightPullError(f"received {received} bytes, the version announced {first.total_bytes}")
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != first.sha256:
        raise WeightPullError(f"SHA-256 of version {first.policy_version} does not match; the blob is corrupt")
    return first.policy_version, blob


def pull_weights(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0
) -> tuple[int, dict[str, torch.Tensor]]:
    """Pull the published version (>= min_version) within `timeout_s`; every chunk and the whole verified."""
    stub = weights_pb2_grpc.WeightServiceStub(channel)
    stream = stub.StreamWeights(
        weights_pb2.StreamWeightsRequest(min_version=min_version, chunk_bytes=chunk_bytes), timeout=timeout_s
    )
    try:
        version, blob = _assemble(stream, min_version)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise WeightPullError(f"weight pull did not finish within {timeout_s}s (deadline exceeded)") from e
        raise WeightPullError(f"weight pull failed: {e.code().name}: {e.details()}") from e
    finally:
        stream.cancel()  # no-op after a complete stream; frees the server after a refused one
    try:
        return version, deserialize_state_dict(blob)
    except Exception as e:  # safetensors raises its own error type on a malformed header
        raise WeightPullError(f"version {version} verified but is not a safetensors state dict: {e}") from e
