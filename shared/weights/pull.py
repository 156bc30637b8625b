"""Rollout's side: pull one whole, verified version or raise `WeightPullError` and keep the old weights.

The receiving thread reads each frame from its wire bytes and checks its place in the version; a second
thread checks its checksum, copies it into the version's one buffer and updates the digest meanwhile
(xxhash and numpy's copy release the GIL). The tensors returned are views of that buffer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
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
        self._queue: queue.Queue[ChunkFrame | None] = queue.Queue(maxsize=4)
        self.error: WeightPullError | None = None
        self._thread = threading.Thread(target=self._run, name="weights-write", daemon=True)
        self._thread.start()

    def _write(self, chunk: ChunkFrame) -> None:
        checksum, data, offset = xxhash.xxh3_64(), chunk.data, chunk.offset
        for start in range(0, len(data), _CHECK_BLOCK):
            block = data[start : start + _CHECK_BLOCK]
            checksum.update(block)
            self.buffer[offset + start : offset + start + len(block)] = self._np.frombuffer(block, self._np.uint8)
            self._digest.update(block)
        if checksum.intdigest() != chunk.checksum:
            self.error = WeightPullError(f"chunk at offset {chunk.offset} fails its checksum (XXH3-64)")

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is None:  # after a failure: drain, the caller stops at its next put
                self._write(chunk)

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


def assemble(frames: Iterator[bytes], min_version: int) -> tuple[int, np.ndarray]:
    """Join the serialized chunks of one version into one buffer, checking each; WeightPullError with a sentence."""
    received = 0
    first: ChunkFrame | None = None
    writer: _ChunkWriter | None = None
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
            assert writer is not None
            writer.put(chunk)
            if chunk.last:
                last = True
                break
        if first is None or writer is None or not last:
            raise WeightPullError("the stream ended before its last chunk")
        if received != first.total_bytes:
            raise WeightPullError(f"received {received} bytes, the version announced {first.total_bytes}")
        if writer.finish() != first.digest:
            raise WeightPullError(f"digest of version {first.policy_version} does not match; the blob is corrupt")
        return first.policy_version, writer.buffer
    finally:
        if writer is not None:
            writer.close()


def open_weight_stream(
    channel: grpc.Channel, min_version: int, timeout_s: float, chunk_bytes: int = 0
) -> Iterator[bytes]:
    """StreamWeights with the responses left as their wire bytes (for `assemble`); a cancellable iterator."""
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
        version, blob = assemble(stream, min_version)
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
