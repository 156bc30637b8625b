"""Rollout's side: pull one whole, verified version or raise `WeightPullError` and keep the old weights.

The receiving thread reads each frame from its wire bytes and checks its place in the version; a second
thread checks its checksum, copies it into the version's one buffer and updates the digest meanwhile
(xxhash and numpy's copy release the GIL). The tensors returned are views of that buffer. A worker that
keeps the frozen chunks of its last full pull (`HeldFrozen`) names their digest; when the learner's frozen
tensors are the same it is sent the trainable chunks only, fills the gaps from its copy, and checks the
version's digest over the whole.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import xxhash
from eureka.v1 import weights_pb2

from shared.weights.frames import ChunkFrame, WeightPullError, parse_chunk_frame
from shared.weights.safetensors_io import state_dict_from_buffer

if TYPE_CHECKING:
    import numpy as np
    import torch

_STREAM_METHOD = "/eureka.v1.WeightService/StreamWeights"
_CHECK_BLOCK = 1 << 20  # checksum, copy and digest walk a chunk in blocks that stay in cache between the three


@dataclass(frozen=True)
class HeldFrozen:
    """A worker's own copy of the frozen chunks of the last full version it verified: (offset, bytes) each."""

    digest: str
    segments: tuple[tuple[int, np.ndarray], ...]

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.segments)


@dataclass(frozen=True)
class Pulled:
    """One verified version: its tensors (frozen ones included), how it came, and the frozen chunks to keep."""

    version: int
    state_dict: dict[str, torch.Tensor]
    kind: str  # "full": every chunk received; "trainable": the frozen ones filled from the worker's copy
    received_bytes: int  # chunk data bytes that came over the wire
    frozen: HeldFrozen | None


class _ChunkWriter:
    """Per chunk, on a thread of its own: checksum check, copy into the version's buffer, digest update.

    A bounded queue keeps at most a few chunks in flight; the first failure is kept and raised."""

    def __init__(self, total_bytes: int, version: int) -> None:
        import numpy as np

        try:
            # Not touched until written: a lying total_bytes costs address space, never memory.
            self.buffer = np.empty(total_bytes, dtype=np.uint8)
        except (MemoryError, ValueError) as e:
            raise WeightPullError(f"cannot hold the announced {total_bytes} bytes: {e}") from e
        self._np = np
        self._digest = xxhash.xxh3_128(seed=version)
        self._queue: queue.Queue[tuple[int, memoryview, int | None] | None] = queue.Queue(maxsize=4)
        self.error: WeightPullError | None = None
        self._thread = threading.Thread(target=self._run, name="weights-write", daemon=True)
        self._thread.start()

    def _write(self, offset: int, data: memoryview, want: int | None) -> None:
        checksum = xxhash.xxh3_64()
        for start in range(0, len(data), _CHECK_BLOCK):
            block = data[start : start + _CHECK_BLOCK]
            checksum.update(block)
            self.buffer[offset + start : offset + start + len(block)] = self._np.frombuffer(block, self._np.uint8)
            self._digest.update(block)
        if want is not None and checksum.intdigest() != want:
            self.error = WeightPullError(f"chunk at offset {offset} fails its checksum (XXH3-64)")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:  # after a failure: drain, the caller stops at its next put
                self._write(*item)

    def put(self, offset: int, data: memoryview, checksum: int | None) -> None:
        """Bytes at `offset`, in stream order; `checksum` None for the worker's own frozen bytes."""
        if self.error is not None:
            raise self.error
        self._queue.put((offset, data, checksum))

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


@dataclass
class Assembled:
    """A verified version's bytes, what came over the wire, and where its frozen chunks lie."""

    version: int
    buffer: np.ndarray
    frozen_digest: str
    received_bytes: int = 0
    filled_bytes: int = 0  # from the worker's own frozen copy
    frozen_ranges: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of the frozen chunks


def _fill(writer: _ChunkWriter, held: HeldFrozen | None, start: int, stop: int) -> int:
    """The gap [start, stop) of a stream from the worker's frozen copy; its bytes, or WeightPullError."""
    pieces = dict(held.segments) if held is not None else {}
    pos = start
    while pos < stop:
        piece = pieces.get(pos)
        if piece is None or pos + len(piece) > stop:
            raise WeightPullError(f"chunk offset {stop} does not follow the {start} bytes received")
        writer.put(pos, memoryview(piece), None)
        pos += len(piece)
    return stop - start


def assemble(frames: Iterator[bytes], min_version: int, held: HeldFrozen | None = None) -> Assembled:
    """Join the serialized chunks of one version into one buffer, checking each; WeightPullError with a sentence.

    With `held`, chunks left out (the frozen ones, when the version's frozen digest is held's) are filled from
    it; the digest is checked over the whole, so the version served is the learner's byte for byte."""
    pos = 0
    first: ChunkFrame | None = None
    writer: _ChunkWriter | None = None
    out: Assembled | None = None
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
                writer = _ChunkWriter(chunk.total_bytes, chunk.policy_version)
                out = Assembled(chunk.policy_version, writer.buffer, chunk.frozen_digest)
                if held is not None and held.digest != chunk.frozen_digest:
                    held = None  # not this version's frozen tensors: every chunk must come
            elif (chunk.policy_version, chunk.total_bytes, chunk.digest, chunk.frozen_digest) != (
                first.policy_version, first.total_bytes, first.digest, first.frozen_digest,
            ):
                raise WeightPullError(
                    f"chunk at offset {chunk.offset} belongs to version {chunk.policy_version},"
                    f" not {first.policy_version}: versions mixed in one stream"
                )
            assert writer is not None and out is not None
            if chunk.offset > first.total_bytes:
                raise WeightPullError(f"chunk offset {chunk.offset} is past the announced {first.total_bytes} bytes")
            if chunk.offset > pos:
                out.filled_bytes += _fill(writer, held, pos, chunk.offset)
                pos = chunk.offset
            if chunk.offset != pos:
                raise WeightPullError(f"chunk offset {chunk.offset} does not follow the {pos} bytes received")
            pos += len(chunk.data)
            out.received_bytes += len(chunk.data)
            if pos > first.total_bytes:
                raise WeightPullError(f"received {pos} bytes, more than the announced {first.total_bytes}")
            if chunk.frozen and chunk.data:
                out.frozen_ranges.append((chunk.offset, len(chunk.data)))
            writer.put(chunk.offset, chunk.data, chunk.checksum)
            if chunk.last:
                last = True
                break
        if first is None or writer is None or out is None or not last:
            raise WeightPullError("the stream ended before its last chunk")
        if pos != first.total_bytes:
            raise WeightPullError(f"received {pos} bytes, the version announced {first.total_bytes}")
        if writer.finish() != first.digest:
            raise WeightPullError(f"digest of version {first.policy_version} does not match; the blob is corrupt")
        return out
    finally:
        if writer is not None:
            writer.close()


def _kept(got: Assembled, held: HeldFrozen | None) -> HeldFrozen | None:
    """The frozen chunks to keep after `got`: held's when they were filled from it, else copies of the received."""
    if got.filled_bytes:
        return held
    if not got.frozen_digest or not got.frozen_ranges:
        return None
    merged: list[list[int]] = []
    for offset, length in got.frozen_ranges:
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1][1] += length
        else:
            merged.append([offset, length])
    return HeldFrozen(got.frozen_digest, tuple((o, got.buffer[o : o + n].copy()) for o, n in merged))


def open_weight_stream(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0, frozen_digest: str = ""
) -> Iterator[bytes]:
    """StreamWeights with the responses left as their wire bytes (for `assemble`); a cancellable iterator."""
    call = channel.unary_stream(
        _STREAM_METHOD, request_serializer=weights_pb2.StreamWeightsRequest.SerializeToString,
        response_deserializer=None,
    )
    request = weights_pb2.StreamWeightsRequest(min_version=min_version, chunk_bytes=chunk_bytes,
                                               frozen_digest=frozen_digest)
    return call(request, timeout=timeout_s)


def pull_version(
    channel: grpc.Channel, min_version: int, timeout_s: float, held: HeldFrozen | None = None, chunk_bytes: int = 0
) -> Pulled:
    """Pull the published version (>= min_version) within `timeout_s`; every chunk and the whole verified.

    A worker that holds the version's frozen chunks (`held`) is sent the others only and fills them in."""
    stream = open_weight_stream(channel, min_version, timeout_s, chunk_bytes, held.digest if held else "")
    try:
        got = assemble(stream, min_version, held)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise WeightPullError(f"weight pull did not finish within {timeout_s}s (deadline exceeded)") from e
        raise WeightPullError(f"weight pull failed: {e.code().name}: {e.details()}") from e
    finally:
        stream.cancel()  # no-op after a complete stream; frees the server after a refused one
    try:
        state_dict = state_dict_from_buffer(got.buffer)
    except Exception as e:  # a malformed header: ValueError, KeyError, TypeError, JSON errors
        raise WeightPullError(f"version {got.version} verified but is not a safetensors state dict: {e}") from e
    return Pulled(got.version, state_dict, "trainable" if got.filled_bytes else "full", got.received_bytes,
                  _kept(got, held))


def pull_weights(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0
) -> tuple[int, dict[str, torch.Tensor]]:
    """A full pull (`pull_version` without frozen chunks held): (version, state dict)."""
    got = pull_version(channel, min_version, timeout_s, chunk_bytes=chunk_bytes)
    return got.version, got.state_dict
