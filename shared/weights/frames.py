"""A version's chunks on the wire: checksums, the serialized `WeightChunk` frames the server sends, and the
strict reader the puller uses (the data field stays a view of the frame, never copied by protobuf).

Each chunk carries the version, its offset and the XXH3-64 of its data; every chunk names the version's
XXH3-128 digest, seeded with the version number, and the last one is marked. A chunk holds frozen tensors'
bytes only or none (marked `frozen`), so a pull by a worker that holds them can leave them out. XXH3 rather than CRC32 +
SHA-256: the checks detect corruption and mix-ups in transit, mTLS authenticates the server. Field numbers
and wire types come from `WeightChunk`'s descriptor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import xxhash
from eureka.v1 import weights_pb2
from google.protobuf.descriptor import FieldDescriptor

from shared import wire

DEFAULT_CHUNK_BYTES = 4 << 20


class WeightPullError(Exception):
    """A pull that did not yield one whole, verified version (the caller keeps its old weights)."""


def chunk_checksum(data: bytes | memoryview) -> int:
    """The per-chunk checksum: XXH3-64 of the chunk's data."""
    return xxhash.xxh3_64_intdigest(data)


def version_digest(blob: bytes | memoryview, version: int) -> str:
    """The per-version digest: XXH3-128 of the whole serialized state dict seeded with its version, hex.

    The seed binds the number to the bytes: a stream that relabels a version fails the digest check."""
    return xxhash.xxh3_128_hexdigest(blob, seed=version)


_DATA = wire.number(weights_pb2.WeightChunk, "data")


class Frame(NamedTuple):
    """One serialized WeightChunk and whether its data is frozen tensors' bytes (left out of a trainable pull)."""

    data: bytes
    frozen: bool


def build_frames(version: int, blob: memoryview, digest: str, chunk_bytes: int,
                 segments: list[tuple[int, int, bool]] | None = None, frozen_digest: str = "") -> Iterator[Frame]:
    """The serialized WeightChunks of `blob`, in order, the last one marked (one copy of the data each).

    `segments` ((start, end, frozen) ranges tiling the blob) keep every chunk within one range, so a chunk is
    frozen tensors' bytes only or none; without them the blob is one range of trainable bytes."""
    total = len(blob)
    for start, end, frozen in segments or [(0, total, False)]:
        for offset in range(start, max(start + 1, end), chunk_bytes):
            data = blob[offset : min(end, offset + chunk_bytes)]
            yield Frame(_frame(version, offset, data, total, digest, frozen_digest, frozen), frozen)


def end_frame(version: int, total: int, digest: str, frozen_digest: str) -> bytes:
    """The empty last chunk that closes a stream whose own last chunk (a frozen one) was left out."""
    return _frame(version, total, memoryview(b""), total, digest, frozen_digest, False)


def _frame(version: int, offset: int, data: memoryview, total: int, digest: str, frozen_digest: str,
           frozen: bool) -> bytes:
    head = weights_pb2.WeightChunk(policy_version=version, offset=offset).SerializeToString()
    tail = weights_pb2.WeightChunk(
        checksum=chunk_checksum(data), last=offset + len(data) >= total, total_bytes=total, digest=digest,
        frozen_digest=frozen_digest, frozen=frozen,
    ).SerializeToString()
    return b"".join((head, wire.len_prefix(_DATA, len(data)), data, tail) if len(data) else (head, tail))


_LEN_TYPES = {FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING}
_VARINT_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_BOOL}
if any(f.type not in _LEN_TYPES | _VARINT_TYPES for f in weights_pb2.WeightChunk.DESCRIPTOR.fields):
    raise TypeError("WeightChunk has a field type parse_chunk_frame does not read; extend it")
# WeightChunk's fields by number: (name, wire type); anything else is skipped as an unknown (newer) field.
_CHUNK_FIELDS = {
    f.number: (f.name, wire.LEN if f.type in _LEN_TYPES else wire.VARINT)
    for f in weights_pb2.WeightChunk.DESCRIPTOR.fields
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
    frozen_digest: str = ""
    frozen: bool = False


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
    for name in ("digest", "frozen_digest"):
        try:
            found[name] = str(found.pop(name, _EMPTY), "utf-8")  # type: ignore[call-overload]
        except UnicodeDecodeError as e:
            raise WeightPullError(f"malformed weight chunk: {name} is not UTF-8") from e
    for name in ("last", "frozen"):
        found[name] = bool(found.get(name, 0))
    return ChunkFrame(**found)  # type: ignore[arg-type]
