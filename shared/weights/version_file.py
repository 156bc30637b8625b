"""A version written to a safetensors file tensor by tensor, its digest updated as it goes: for a learner that
never holds the whole state dict (ZeRO-3 gathers a bucket of parameters at a time).

The file holds the bytes `safetensors.torch.save` writes for the same state dict (tensors by alignment, then
name; the header padded to 8 bytes; tests/shared/test_weights_file.py holds it against the library), so the
version's digest is the one the in-memory store gives the same tensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import xxhash

from shared.weights.group import flat_bytes

if TYPE_CHECKING:
    import numpy as np
    import torch

Spec = tuple[str, "torch.dtype", tuple[int, ...]]  # name, dtype, shape of one tensor


def spec_bytes(spec: Spec) -> int:
    """The bytes of one tensor of `spec`."""
    return math.prod(spec[2]) * spec[1].itemsize


def file_order(specs: list[Spec]) -> list[Spec]:
    """The order safetensors writes tensors in: larger dtypes first (their alignment), then by name."""
    return sorted(specs, key=lambda s: (-s[1].itemsize, s[0]))


def _header(order: list[Spec]) -> bytes:
    from safetensors.torch import _TYPES

    names = {dtype: name for name, dtype in _TYPES.items()}
    entries, pos = {}, 0
    for spec in order:
        name, dtype, shape = spec
        size = spec_bytes(spec)
        entries[name] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [pos, pos + size]}
        pos += size
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class VersionWriter:
    """Writes one version's tensors in `file_order`, each as it comes; `finish` returns the version's digest."""

    def __init__(self, path: Path, version: int, specs: list[Spec]) -> None:
        self.path = path
        self.order = file_order(specs)
        self._next = 0
        self._digest = xxhash.xxh3_128(seed=version)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by finish or close
        self._put(_header(self.order))

    def _put(self, data: bytes | np.ndarray) -> None:
        self._file.write(data)
        self._digest.update(data)

    @property
    def expected(self) -> Spec | None:
        """The tensor to write next (None when all are written)."""
        return self.order[self._next] if self._next < len(self.order) else None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """The next tensor's bytes (ValueError when it is not the one `file_order` puts next)."""
        want = self.expected
        if want is None or (name, tensor.dtype, tuple(tensor.shape)) != want:
            raise ValueError(f"tensor {name} ({tensor.dtype}, {tuple(tensor.shape)}) written where {want} is next")
        self._put(flat_bytes(tensor.detach().cpu()).numpy())
        self._next += 1

    def finish(self) -> str:
        """Close the file once every tensor is in it; the version's digest (hex)."""
        if self.expected is not None:
            self.close()
            raise ValueError(f"version file {self.path} closed before tensor {self.expected[0]}")
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._file.close()


def map_version(path: Path) -> np.ndarray:
    """A version file's bytes, memory-mapped copy-on-write (writable views for torch; nothing is ever written)."""
    import numpy as np

    return np.memmap(path, dtype=np.uint8, mode="c")
