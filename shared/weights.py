"""Versioned weight publishing: the learner serves its consolidated state dict, rollout pulls it.

The state dict is serialized once per version with safetensors and streamed in chunks that each
carry the version, their offset and the XXH3-64 of their data; the last chunk closes a blob whose
XXH3-128 digest, seeded with the version number, is known up front. XXH3 (several GB/s a core) rather
than CRC32 + SHA-256 (about 0.7 GB/s together): the checks detect corruption and mix-ups in transit,
mTLS authenticates the server. A puller either gets one whole verified version or a `WeightPullError`
and keeps what it had, so a worker never serves a mix of two versions. Version 0 is the base model.

The server sends pre-serialized chunk frames; the puller parses each frame from its wire bytes (the
data stays a view, no protobuf copy) and checks, copies and hashes it on a second thread while the next
one arrives, into one buffer; the tensors it returns are views of that buffer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import xxhash
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared import wire
from shared.grpc_server import FailedPrecondition, InvalidArgument, map_errors

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_CHUNK_BYTES = 4 << 20
MAX_CHUNK_BYTES = 16 << 20
_STREAM_METHOD = "/eureka.v1.WeightService/StreamWeights"


def chunk_checksum(data: bytes | memoryview) -> int:
    """The per-chunk checksum: XXH3-64 of the chunk's data."""
    return xxhash.xxh3_64_intdigest(data)


def version_digest(blob: bytes | memoryview, version: int) -> str:
    """The per-version digest: XXH3-128 of the whole serialized state dict seeded with its version, hex.

    The seed binds the number to the bytes: a stream that relabels a version fails the digest check."""
    return xxhash.xxh3_128_hexdigest(blob, seed=version)


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


_SAFETENSORS_DTYPES = (
    "BOOL:bool U8:uint8 I8:int8 U16:uint16 I16:int16 F16:float16 BF16:bfloat16 U32:uint32 I32:int32 F32:float32"
    " U64:uint64 I64:int64 F64:float64 F8_E4M3:float8_e4m3fn F8_E5M2:float8_e5m2"
)


def state_dict_from_buffer(buf: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes held in a uint8 array, as views of it (no copy when aligned).

    Checks what safetensors' own loader checks: a JSON header of known dtypes and shapes whose data
    offsets tile the data section exactly; ValueError otherwise."""
    import json
    import math

    import torch

    dtypes = {k: getattr(torch, v) for k, v in (p.split(":") for p in _SAFETENSORS_DTYPES.split()) if hasattr(torch, v)}
    if len(buf) < 8:
        raise ValueError("shorter than the 8-byte header length")
    header_len = int.from_bytes(buf[:8].tobytes(), "little")
    if header_len > len(buf) - 8:
        raise ValueError(f"header of {header_len} bytes runs past the end")
    header = json.loads(buf[8 : 8 + header_len].tobytes())
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    data = buf[8 + header_len :]
    entries = []
    for name, info in header.items():
        dtype, shape, (begin, end) = dtypes[info["dtype"]], info["shape"], info["data_offsets"]
        if not all(isinstance(d, int) and d >= 0 for d in [*shape, begin, end]):
            raise ValueError(f"tensor {name}: bad shape or offsets")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"tensor {name}: {end - begin} bytes for shape {shape} of {info['dtype']}")
        entries.append((begin, end, name, dtype, shape))
    entries.sort(key=lambda e: e[:2])
    covered = 0
    for begin, end, name, _, _ in entries:
        if begin != covered:
            raise ValueError(f"tensor {name}: data offsets do not tile the data section")
        covered = end
    if covered != len(data):
        raise ValueError(f"tensors cover {covered} of {len(data)} data bytes")
    out: dict[str, torch.Tensor] = {}
    for begin, end, name, dtype, shape in entries:
        raw = data[begin:end]
        if (8 + header_len + begin) % dtype.itemsize:
            raw = raw.copy()  # misaligned for its dtype: a copy of its own
        out[name] = torch.from_numpy(raw).view(dtype).reshape(shape) if end > begin else torch.empty(shape, dtype=dtype)
    return out


@dataclass(frozen=True)
class Published:
    """One published version, held as its default-size chunks already serialized: a stream of the default
    chunk size sends them as they are (no copy per stream, however many workers pull); other sizes are cut
    from the data they hold."""

    version: int
    digest: str
    num_tensors: int
    total_bytes: int
    frames: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def of(cls, version: int, blob: bytes, num_tensors: int, digest: str | None = None) -> Published:
        """`blob` (a serialized state dict) cut into frames; `digest` defaults to the true one."""
        digest = version_digest(blob, version) if digest is None else digest
        frames = tuple(_frames(version, memoryview(blob), digest, DEFAULT_CHUNK_BYTES))
        return cls(version, digest, num_tensors, len(blob), frames)

    @property
    def blob(self) -> bytes:
        """The whole serialized state dict, joined from the frames (a copy, for callers that need one piece)."""
        return b"".join(parse_chunk_frame(frame).data for frame in self.frames)


class WeightStore:
    """Holds the latest published version only; readers get an immutable snapshot (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Published | None = None

    def publish(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        published = Published.of(version, serialize_state_dict(state_dict), len(state_dict))
        with self._lock:
            if self._current is not None and version < self._current.version:
                raise ValueError(
                    f"cannot publish version {version}: version {self._current.version} is already published;"
                    " versions only go up"
                )
            self._current = published  # the old frames are freed once no stream holds them

    def snapshot(self) -> Published | None:
        with self._lock:
            return self._current

    def current(self) -> tuple[int, bytes, str]:
        """(version, blob, digest) of the latest version; LookupError before the first publish."""
        snap = self.snapshot()
        if snap is None:
            raise LookupError("no weights published yet")
        return snap.version, snap.blob, snap.digest


def _frames(version: int, blob: memoryview, digest: str, chunk_bytes: int) -> Iterator[bytes]:
    """The serialized WeightChunks of `blob`, in order, the last one marked (one copy of the data each)."""
    total = len(blob)
    for offset in range(0, max(1, total), chunk_bytes):
        data = blob[offset : offset + chunk_bytes]
        head = weights_pb2.WeightChunk(policy_version=version, offset=offset).SerializeToString()
        tail = weights_pb2.WeightChunk(
            checksum=chunk_checksum(data), last=offset + len(data) >= total, total_bytes=total, digest=digest
        ).SerializeToString()
        data_field = wire.len_prefix(3, len(data))  # WeightChunk.data, with the data itself after it
        yield b"".join((head, data_field, data, tail) if len(data) else (head, tail))


def iter_chunk_frames(published: Published, chunk_bytes: int) -> Iterator[bytes]:
    """The serialized chunks of one published version: its own frames at the default size, else cut anew."""
    if chunk_bytes == DEFAULT_CHUNK_BYTES:
        return iter(published.frames)
    return _frames(published.version, memoryview(published.blob), published.digest, chunk_bytes)


def iter_chunks(published: Published, chunk_bytes: int) -> Iterator[weights_pb2.WeightChunk]:
    """`iter_chunk_frames` as messages."""
    return map(weights_pb2.WeightChunk.FromString, iter_chunk_frames(published, chunk_bytes))


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
            policy_version=snap.version, total_bytes=snap.total_bytes, digest=snap.digest, num_tensors=snap.num_tensors
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


# WeightChunk's fields by number: (name, wire type); anything else is skipped as an unknown (newer) field.
_CHUNK_FIELDS = {
    1: ("policy_version", wire.VARINT), 2: ("offset", wire.VARINT), 3: ("data", wire.LEN),
    4: ("checksum", wire.VARINT), 5: ("last", wire.VARINT), 6: ("total_bytes", wire.VARINT),
    7: ("digest", wire.LEN),
}
_EMPTY = memoryview(b"")


@dataclass(frozen=True)
class ChunkFrame:
    """A WeightChunk read straight from its wire bytes; `data` is a view into the frame (not a copy)."""

    policy_version: int = 0
    offset: int = 0
    data: memoryview = _EMPTY
    checksum: int = 0
    last: bool = False
    total_bytes: int = 0
    digest: str = ""


def parse_chunk_frame(frame: bytes) -> ChunkFrame:
    """Parse one serialized WeightChunk strictly (what protobuf accepts, minus wrong wire types and
    out-of-range values); the data field stays in the frame. Raises WeightPullError on a malformed frame."""
    found: dict[str, object] = {}
    try:
        for number, wire_type, value in wire.fields(frame):
            name, want = _CHUNK_FIELDS.get(number, ("", wire_type))
            if wire_type != want:
                raise wire.WireError(f"field {number} with wire type {wire_type}")
            if name:
                found[name] = value
    except wire.WireError as e:
        raise WeightPullError(f"malformed weight chunk: {e}") from e
    try:
        found["digest"] = str(found.pop("digest", _EMPTY), "utf-8")  # type: ignore[call-overload]
    except UnicodeDecodeError as e:
        raise WeightPullError("malformed weight chunk: digest is not UTF-8") from e
    found["last"] = bool(found.get("last", 0))
    return ChunkFrame(**found)  # type: ignore[arg-type]


_VERIFY_BLOCK = 1 << 20  # checksum, copy and digest walk a chunk in blocks that stay in cache between the three


class _Verifier:
    """Per chunk, on a thread of its own: checksum check, copy into the version's buffer, digest update.

    xxhash and numpy's copy release the GIL, so this runs while the caller receives the next
    chunk. A bounded queue keeps at most a few chunks in flight; the first failure is kept and raised."""

    def __init__(self, total_bytes: int, version: int) -> None:
        import numpy as np

        try:
            # Not touched until written: a lying total_bytes costs address space, never memory.
            self.buffer = np.empty(total_bytes, dtype=np.uint8)
        except (MemoryError, ValueError) as e:
            raise WeightPullError(f"cannot hold the announced {total_bytes} bytes: {e}") from e
        self._np = np
        self._digest = xxhash.xxh3_128(seed=version)
        self._queue: queue.Queue[ChunkFrame | None] = queue.Queue(maxsize=4)
        self.error: WeightPullError | None = None
        self._thread = threading.Thread(target=self._run, name="weights-verify", daemon=True)
        self._thread.start()

    def _verify(self, chunk: ChunkFrame) -> None:
        checksum, data, offset = xxhash.xxh3_64(), chunk.data, chunk.offset
        for start in range(0, len(data), _VERIFY_BLOCK):
            block = data[start : start + _VERIFY_BLOCK]
            checksum.update(block)
            self.buffer[offset + start : offset + start + len(block)] = self._np.frombuffer(block, self._np.uint8)
            self._digest.update(block)
        if checksum.intdigest() != chunk.checksum:
            self.error = WeightPullError(f"chunk at offset {chunk.offset} fails its checksum (XXH3-64)")

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is None:  # after a failure: drain, the caller stops at its next put
                self._verify(chunk)

    def put(self, chunk: ChunkFrame) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(chunk)

    def finish(self) -> str:
        """Wait for the chunks put so far; the version digest (hex), or the first failure raised."""
        self.close()
        if self.error is not None:
            raise self.error
        return self._digest.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _assemble(frames: Iterator[bytes], min_version: int) -> tuple[int, np.ndarray]:
    """Join the serialized chunks of one version into one buffer, verifying each; WeightPullError with a sentence.

    The receiving thread parses each frame and checks its place in the version; the checksum, the copy
    and the digest run on a `_Verifier` thread meanwhile (the data is never copied by protobuf)."""
    received = 0
    first: ChunkFrame | None = None
    verifier: _Verifier | None = None
    last = False
    try:
        for frame in frames:
            chunk = parse_chunk_frame(frame)
            if first is None:
                first = chunk
                if chunk.policy_version < min_version:
                    raise WeightPullError(
                        f"server sent version {chunk.policy_version}, below min_version {min_version}"
                    )
                verifier = _Verifier(chunk.total_bytes, chunk.policy_version)
            elif (chunk.policy_version, chunk.total_bytes, chunk.digest) != (
                first.policy_version, first.total_bytes, first.digest,
            ):
                raise WeightPullError(
                    f"chunk at offset {chunk.offset} belongs to version {chunk.policy_version},"
                    f" not {first.policy_version}: versions mixed in one stream"
                )
            if chunk.offset != received:
                raise WeightPullError(f"chunk offset {chunk.offset} does not follow the {received} bytes received")
            received += len(chunk.data)
            if received > first.total_bytes:
                raise WeightPullError(f"received {received} bytes, more than the announced {first.total_bytes}")
            assert verifier is not None
            verifier.put(chunk)
            if chunk.last:
                last = True
                break
        if first is None or verifier is None or not last:
            raise WeightPullError("the stream ended before its last chunk")
        if received != first.total_bytes:
            raise WeightPullError(f"received {received} bytes, the version announced {first.total_bytes}")
        if verifier.finish() != first.digest:
            raise WeightPullError(f"digest of version {first.policy_version} does not match; the blob is corrupt")
        return first.policy_version, verifier.buffer
    finally:
        if verifier is not None:
            verifier.close()


def open_weight_stream(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0
) -> Iterator[bytes]:
    """StreamWeights with the responses left as their wire bytes (for `_assemble`); a cancellable iterator."""
    call = channel.unary_stream(
        _STREAM_METHOD, request_serializer=weights_pb2.StreamWeightsRequest.SerializeToString,
        response_deserializer=None,
    )
    return call(weights_pb2.StreamWeightsRequest(min_version=min_version, chunk_bytes=chunk_bytes), timeout=timeout_s)


def pull_weights(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0
) -> tuple[int, dict[str, torch.Tensor]]:
    """Pull the published version (>= min_version) within `timeout_s`; every chunk and the whole verified."""
    stream = open_weight_stream(channel, min_version, timeout_s, chunk_bytes)
    try:
        version, blob = _assemble(stream, min_version)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise WeightPullError(f"weight pull did not finish within {timeout_s}s (deadline exceeded)") from e
        raise WeightPullError(f"weight pull failed: {e.code().name}: {e.details()}") from e
    finally:
        stream.cancel()  # no-op after a complete stream; frees the server after a refused one
    try:
        return version, state_dict_from_buffer(blob)
    except Exception as e:  # a malformed header: ValueError, KeyError, TypeError, JSON errors
        raise WeightPullError(f"version {version} verified but is not a safetensors state dict: {e}") from e
