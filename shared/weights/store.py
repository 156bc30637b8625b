"""The learner's publish store: the latest version of its state dict, held as ready-to-send chunk frames."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.weights.frames import DEFAULT_CHUNK_BYTES, build_frames, parse_chunk_frame, version_digest
from shared.weights.safetensors_io import serialize_state_dict

if TYPE_CHECKING:
    import torch


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
        frames = tuple(build_frames(version, memoryview(blob), digest, DEFAULT_CHUNK_BYTES))
        return cls(version, digest, num_tensors, len(blob), frames)

    @property
    def blob(self) -> bytes:
        """The whole serialized state dict, joined from the frames (a copy, for callers that need one piece)."""
        return b"".join(parse_chunk_frame(frame).data for frame in self.frames)

    def frames_of(self, chunk_bytes: int) -> Iterator[bytes]:
        """The serialized chunks of this version: its own frames at the default size, else cut anew."""
        if chunk_bytes == DEFAULT_CHUNK_BYTES:
            return iter(self.frames)
        return build_frames(self.version, memoryview(self.blob), self.digest, chunk_bytes)


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
