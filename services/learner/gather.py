"""Under ZeRO-3, a version goes into its file a bucket of parameters at a time, so no host holds the whole state dict.

Every rank gathers the same bucket together (`deepspeed.zero.GatheredParameters`, read-only), rank 0 writes its
tensors to the version file (`shared.weights.version_file`, in the order safetensors writes them) and the bucket
is partitioned again before the next one, its freed memory handed back to the kernel (the learner's malloc keeps
freed blocks for reuse, in several arenas). Rank 0 holds one bucket, or the largest parameter when it is larger
than a bucket; the file's pages are the kernel's cache. The vision tower kept out of DeepSpeed (`Engine.vision`)
is written from its replicated tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.learner.engine import VISION_PREFIX
from shared.weights.version_file import spec_bytes

if TYPE_CHECKING:
    from services.learner.engine import Engine
    from shared.weights.version_file import Spec


def _tensors(eng: Engine) -> dict[str, Any]:
    """Every state dict name and its parameter (partitioned under ZeRO-3), buffer or vision tensor."""
    tensors = dict(eng.model.state_dict(keep_vars=True))  # the parameters themselves, tied names included
    if eng.vision is not None:
        tensors.update({VISION_PREFIX + k: v for k, v in eng.vision.state_dict().items()})
    return tensors


def _spec(name: str, t: Any) -> Spec:
    return name, t.dtype, tuple(getattr(t, "ds_shape", t.shape))


def buckets(specs: list[Spec], bucket_bytes: int) -> list[list[Spec]]:
    """Consecutive specs of at most `bucket_bytes` together (a larger tensor alone), in the given order."""
    out: list[list[Spec]] = []
    size = 0
    for spec in specs:
        nbytes = spec_bytes(spec)
        if not out or size + nbytes > bucket_bytes:
            out.append([])
            size = 0
        out[-1].append(spec)
        size += nbytes
    return out


def write_version(eng: Engine, path: Path | None, version: int, bucket_bytes: int) -> str | None:
    """Gather and write `version` bucket by bucket; every rank calls it, rank 0 with the file's `path`.
    Returns the version's digest on rank 0 (None elsewhere)."""
    import deepspeed

    from shared.malloc import give_back_freed_memory
    from shared.weights.version_file import VersionWriter, file_order

    tensors = _tensors(eng)
    specs = [_spec(n, t) for n, t in tensors.items()]
    writer = VersionWriter(path, version, specs) if path is not None else None
    try:
        for bucket in buckets(file_order(specs), bucket_bytes):  # the same buckets on every rank
            partitioned = list({id(t): t for n, *_ in bucket if hasattr(t := tensors[n], "ds_id")}.values())
            with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
                if writer is not None:
                    for name, *_ in bucket:
                        writer.write(name, tensors[name].data)
            give_back_freed_memory()  # the learner keeps freed blocks for reuse; a bucket's are not reused soon
        return writer.finish() if writer is not None else None
    finally:
        if writer is not None:
            writer.close()
