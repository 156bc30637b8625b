"""A state dict as safetensors bytes and back: written and read whole by the `safetensors` library, and read
as views of a received buffer (`state_dict_from_buffer`).

The library's `load` takes `bytes` only and copies every tensor out of them; a puller that has assembled a
version in one numpy buffer reads it here instead, with the library's dtype table, and gets tensors that
are views of that buffer. The two readers agree on what the library writes (tests/shared/test_weights.py).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import torch


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


class Entry(NamedTuple):
    """One tensor of a safetensors blob: its bytes are blob[start:end]."""

    start: int
    end: int
    name: str
    dtype: torch.dtype
    shape: list[int]


def entries(buf: np.ndarray) -> list[Entry]:
    """The tensors of safetensors bytes held in a uint8 array, in blob order, with their absolute byte ranges.

    Checks what safetensors' own loader checks: a JSON header of known dtypes and shapes whose data
    offsets tile the data section exactly; ValueError (KeyError for an unknown dtype) otherwise."""
    from safetensors.torch import _TYPES as dtypes

    if len(buf) < 8:
        raise ValueError("shorter than the 8-byte header length")
    header_len = int.from_bytes(buf[:8].tobytes(), "little")
    if header_len > len(buf) - 8:
        raise ValueError(f"header of {header_len} bytes runs past the end")
    header = json.loads(buf[8 : 8 + header_len].tobytes())
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    base = 8 + header_len
    out = []
    for name, info in header.items():
        dtype, shape, (begin, end) = dtypes[info["dtype"]], info["shape"], info["data_offsets"]
        if not all(isinstance(d, int) and d >= 0 for d in [*shape, begin, end]):
            raise ValueError(f"tensor {name}: bad shape or offsets")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"tensor {name}: {end - begin} bytes for shape {shape} of {info['dtype']}")
        out.append(Entry(base + begin, base + end, name, dtype, shape))
    out.sort(key=lambda e: e[:2])
    covered = base
    for e in out:
        if e.start != covered:
            raise ValueError(f"tensor {e.name}: data offsets do not tile the data section")
        covered = e.end
    if covered != len(buf):
        raise ValueError(f"tensors cover {covered - base} of {len(buf) - base} data bytes")
    return out


def state_dict_from_buffer(buf: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes held in a uint8 array, as views of it (no copy when aligned);
    the checks of `entries`."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for start, end, name, dtype, shape in entries(buf):
        raw = buf[start:end]
        if start % dtype.itemsize:
            raw = raw.copy()  # misaligned for its dtype: a copy of its own
        out[name] = torch.from_numpy(raw).view(dtype).reshape(shape) if end > start else torch.empty(shape, dtype=dtype)
    return out
