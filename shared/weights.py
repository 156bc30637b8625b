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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.grpc_server import FailedPrecondition, InvalidArgument, map_errors

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK_BYTES = 4 << 20
MAX_CHUNK_BYTES = 16 << 20
_STREAM_METHOD = "/eureka.v1.WeightService/StreamWeights"
_DATA_TAG = b"\x1a"  # WeightChunk.data: field 3, length-delimited


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
    # CRC32 of every chunk of the default size, filled at publish: computed once per version, not per stream.
    default_crcs: list[int] = field(default_factory=list, compare=False, repr=False)


class WeightStore:
    """Holds the latest published version only; readers get an immutable snapshot (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Published | None = None

    def publish(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        blob = serialize_state_dict(state_dict)
        published = Published(version, blob, hashlib.sha256(blob).hexdigest(), len(state_dict))
        view = memoryview(blob)
        published.default_crcs.extend(
            zlib.crc32(view[o : o + DEFAULT_CHUNK_BYTES]) for o in range(0, max(1, len(blob)), DEFAULT_CHUNK_BYTES)
        )
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


def _chunk_spans(published: Published, chunk_bytes: int) -> Iterator[tuple[int, int, int, bool]]:
    """(offset, end, crc32, last) of every chunk of one published version, in order."""
    view, total = memoryview(published.blob), len(published.blob)
    cached = published.default_crcs if chunk_bytes == DEFAULT_CHUNK_BYTES else []
    for i, offset in enumerate(range(0, max(1, total), chunk_bytes)):
        end = min(offset + chunk_bytes, total)
        yield offset, end, cached[i] if cached else zlib.crc32(view[offset:end]), end >= total


def iter_chunks(published: Published, chunk_bytes: int) -> Iterator[weights_pb2.WeightChunk]:
    """The chunks of one published version, in order, the last one marked."""
    for offset, end, crc, last in _chunk_spans(published, chunk_bytes):
        yield weights_pb2.WeightChunk(
            policy_version=published.version, offset=offset, data=published.blob[offset:end], crc32=crc,
            last=last, total_bytes=len(published.blob), sha256=published.sha256,
        )


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def iter_chunk_frames(published: Published, chunk_bytes: int) -> Iterator[bytes]:
    """`iter_chunks` already serialized, byte for byte, with one copy of the data (no message built around it)."""
    view = memoryview(published.blob)
    for offset, end, crc, last in _chunk_spans(published, chunk_bytes):
        head = weights_pb2.WeightChunk(policy_version=published.version, offset=offset).SerializeToString()
        tail = weights_pb2.WeightChunk(
            crc32=crc, last=last, total_bytes=len(published.blob), sha256=published.sha256
        ).SerializeToString()
        data = view[offset:end]
        yield b"".join((head, _DATA_TAG, _varint(len(data)), data, tail) if len(data) else (head, tail))


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
        return iter_chunks(*self._stream_of(request))

    @map_errors
    def stream_frames(self, request, context):
        """StreamWeights with the chunks pre-serialized (what `add_weight_service` registers)."""
        return iter_chunk_frames(*self._stream_of(request))

    def _stream_of(self, request: weights_pb2.StreamWeightsRequest) -> tuple[Published, int]:
        if request.chunk_bytes > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes {request.chunk_bytes} is above {MAX_CHUNK_BYTES}; ask for less or 0")
        snap = self.store.snapshot()
        if snap is None:
            raise FailedPrecondition("no weights published yet; the learner publishes version 0 at start, retry")
        if snap.version < request.min_version:
            raise FailedPrecondition(
                f"published version {snap.version} is older than min_version {request.min_version}; retry later"
            )
        return snap, request.chunk_bytes or DEFAULT_CHUNK_BYTES


def _frame_or_message(chunk: bytes | weights_pb2.WeightChunk) -> bytes:
    return chunk if isinstance(chunk, bytes) else chunk.SerializeToString()


def add_weight_service(server: grpc.Server, store: WeightStore) -> list[str]:
    """Register a WeightServicer over `store`; returns the service names (for GrpcServer).

    Same contract as the generated registration; StreamWeights sends pre-serialized chunks."""
    servicer = WeightServicer(store)
    name = weights_pb2.DESCRIPTOR.services_by_name["WeightService"].full_name
    handlers = {
        "GetVersion": grpc.unary_unary_rpc_method_handler(
            servicer.GetVersion, request_deserializer=weights_pb2.GetVersionRequest.FromString,
            response_serializer=weights_pb2.WeightVersion.SerializeToString,
        ),
        "StreamWeights": grpc.unary_stream_rpc_method_handler(
            servicer.stream_frames, request_deserializer=weights_pb2.StreamWeightsRequest.FromString,
            response_serializer=_frame_or_message,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    return [name]


def _assemble(chunks: Iterator[weights_pb2.WeightChunk], min_version: int) -> tuple[int, bytes]:
    """Join the chunks of one version, verifying each; raises WeightPullError with a sentence.

    Each chunk's data is read once (protobuf copies it on every read) and hashed while it is in cache."""
    parts: list[bytes] = []
    received = 0
    first: weights_pb2.WeightChunk | None = None
    sha = hashlib.sha256()
    last = False
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
        data = chunk.data
        if zlib.crc32(data) != chunk.crc32:
            raise WeightPullError(f"chunk at offset {chunk.offset} fails its CRC32 check")
        received += len(data)
        if received > first.total_bytes:
            raise WeightPullError(f"received {received} bytes, more than the announced {first.total_bytes}")
        sha.update(data)
        parts.append(data)
        last = chunk.last
        if last:
            break
    if first is None or not last:
        raise WeightPullError("the stream ended before its last chunk")
    if received != first.total_bytes:
        raise WeightPullError(f"received {received} bytes, the version announced {first.total_bytes}")
    if sha.hexdigest() != first.sha256:
        raise WeightPullError(f"SHA-256 of version {first.policy_version} does not match; the blob is corrupt")
    return first.policy_version, b"".join(parts)


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
