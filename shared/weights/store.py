"""The learner's publish store: the latest version of its state dict, held as ready-to-send chunk frames, or as
a version file (`version_file.py`) memory-mapped and cut into frames per stream.

A version's frames keep frozen tensors (the vision tower, `frozen_prefix`) in chunks of their own, so a pull
by a worker that already holds them (the same frozen digest) is sent the other chunks only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.weights.frames import (
    DEFAULT_CHUNK_BYTES, Frame, build_frames, end_frame, parse_chunk_frame, version_digest,
)
from shared.weights.group import frozen_digest as digest_of_frozen
from shared.weights.safetensors_io import entries, serialize_state_dict, state_dict_from_buffer
from shared.weights.version_file import map_version

if TYPE_CHECKING:
    import numpy as np
    import torch

Segment = tuple[int, int, bool]  # (start, end, frozen): a byte range of the blob


def segments_of(blob: bytes | np.ndarray, frozen: set[str]) -> list[Segment]:
    """The blob's byte ranges, each the bytes of frozen tensors only or none (the header is not frozen)."""
    import numpy as np

    tensors = entries(np.frombuffer(blob, dtype=np.uint8))
    out: list[Segment] = [(0, tensors[0].start if tensors else len(blob), False)]
    for e in tensors:
        is_frozen = e.name in frozen
        if e.end == e.start:
            continue
        if out[-1][2] == is_frozen:
            out[-1] = (out[-1][0], e.end, is_frozen)
        else:
            out.append((e.start, e.end, is_frozen))
    return out


def frozen_names(names: Iterable[str], prefix: str | None) -> list[str]:
    """The names under `prefix` (the frozen tensors; none without a prefix)."""
    return [n for n in names if prefix is not None and n.startswith(prefix)]


@dataclass(frozen=True)
class Published:
    """One published version, held as its default-size chunks already serialized: a stream of the default
    chunk size sends them as they are (no copy per stream, however many workers pull); other sizes are cut
    from the data they hold."""

    version: int
    digest: str
    num_tensors: int
    total_bytes: int
    frames: tuple[Frame, ...] = field(repr=False)
    segments: tuple[Segment, ...] = field(repr=False)
    frozen_digest: str = ""  # of the frozen tensors (empty: none)
    mapped: np.ndarray | None = field(default=None, repr=False)  # a version file's bytes (then `frames` is empty)

    @classmethod
    def of(cls, version: int, blob: bytes, num_tensors: int, digest: str | None = None,
           frozen: Iterable[str] = (), frozen_digest: str = "") -> Published:
        """`blob` (a serialized state dict) cut into frames; `digest` defaults to the true one; `frozen` names
        the tensors whose chunks a holder of `frozen_digest` is not sent."""
        digest = version_digest(blob, version) if digest is None else digest
        segments = segments_of(blob, set(frozen)) if frozen_digest else [(0, len(blob), False)]
        frames = tuple(build_frames(version, memoryview(blob), digest, DEFAULT_CHUNK_BYTES, segments, frozen_digest))
        return cls(version, digest, num_tensors, len(blob), frames, tuple(segments), frozen_digest)

    @classmethod
    def of_file(cls, version: int, path: Path, digest: str, frozen_prefix: str | None) -> Published:
        """A version file memory-mapped (its pages are the kernel's cache, not the process's memory)."""
        mapped = map_version(path)
        names = [e.name for e in entries(mapped)]
        frozen = frozen_names(names, frozen_prefix)
        fd = digest_of_frozen(state_dict_from_buffer(mapped), frozen) if frozen else ""
        segments = segments_of(mapped, set(frozen)) if fd else [(0, len(mapped), False)]
        return cls(version, digest, len(names), len(mapped), (), tuple(segments), fd, mapped)

    @property
    def blob(self) -> bytes:
        """The whole serialized state dict, joined from the frames (a copy, for callers that need one piece)."""
        if self.mapped is not None:
            return self.mapped.tobytes()
        return b"".join(parse_chunk_frame(frame.data).data for frame in self.frames)

    @property
    def frozen_bytes(self) -> int:
        return sum(end - start for start, end, frozen in self.segments if frozen)

    def frames_of(self, chunk_bytes: int, frozen_digest: str = "") -> Iterator[bytes]:
        """The serialized chunks of this version: its own frames at the default size, else cut anew; the
        frozen ones left out when `frozen_digest` is this version's."""
        frames: Iterable[Frame] = self.frames
        if chunk_bytes != DEFAULT_CHUNK_BYTES or self.mapped is not None:
            data = memoryview(self.mapped if self.mapped is not None else self.blob)
            frames = build_frames(self.version, data, self.digest, chunk_bytes, list(self.segments), self.frozen_digest)
        if not self.frozen_digest or frozen_digest != self.frozen_digest:
            return (frame.data for frame in frames)
        return self._trainable(frames)

    def _trainable(self, frames: Iterable[Frame]) -> Iterator[bytes]:
        last_frozen = False
        for frame in frames:
            last_frozen = frame.frozen
            if not frame.frozen:
                yield frame.data
        if last_frozen:  # the stream still ends with a chunk marked last
            yield end_frame(self.version, self.total_bytes, self.digest, self.frozen_digest)


class WeightStore:
    """Holds the latest published version only; readers get an immutable snapshot (thread-safe).

    Tensors under `frozen_prefix` (they never change) are the version's frozen tensors."""

    def __init__(self, frozen_prefix: str | None = None) -> None:
        self.frozen_prefix = frozen_prefix
        self._lock = threading.Lock()
        self._current: Published | None = None
        self._path: Path | None = None  # the file of the current version, when it is one

    def publish(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        frozen = frozen_names(state_dict, self.frozen_prefix)
        self._replace(Published.of(version, serialize_state_dict(state_dict), len(state_dict), frozen=frozen,
                                   frozen_digest=digest_of_frozen(state_dict, frozen) if frozen else ""))

    def publish_file(self, version: int, path: Path, digest: str) -> None:
        """Serve the version file at `path` (written by a `VersionWriter`, whose digest it has); the store owns it
        from now on: the previous version's file is unlinked (streams still reading it keep their mapping)."""
        self._replace(Published.of_file(version, path, digest, self.frozen_prefix), path)

    def _replace(self, published: Published, path: Path | None = None) -> None:
        with self._lock:
            if self._current is not None and published.version < self._current.version:
                raise ValueError(
                    f"cannot publish version {published.version}: version {self._current.version} is already"
                    " published; versions only go up"
                )
            self._current = published  # the old frames are freed once no stream holds them
            old, self._path = self._path, path
        if old is not None and old != path:
            old.unlink(missing_ok=True)

    def snapshot(self) -> Published | None:
        with self._lock:
            return self._current

    def current(self) -> tuple[int, bytes, str]:
        """(version, blob, digest) of the latest version; LookupError before the first publish."""
        snap = self.snapshot()
        if snap is None:
            raise LookupError("no weights published yet")
        return snap.version, snap.blob, snap.digest
