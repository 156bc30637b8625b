"""One rank of a two-process ZeRO-3 learner engine (gloo, CPU) for the gather test: writes a version bucket by bucket
(`write_version`) and compares it on rank 0 with DeepSpeed's consolidated state dict; prints one JSON line there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.learner.config import LearnerConfig
from services.learner.engine import build_engine, init_distributed
from services.learner.gather import buckets, write_version
from shared.weights import serialize_state_dict
from shared.weights.frames import version_digest
from shared.weights.version_file import file_order


def main(model_path: str, out: str, bucket_bytes: str) -> None:
    import torch.distributed as dist

    init_distributed()
    rank = dist.get_rank()
    cfg = LearnerConfig(zero_stage=3, world_size=2, train_batch_groups=2, micro_batch_sequences=1)
    eng = build_engine(cfg, Path(model_path))
    path = Path(out) if rank == 0 else None
    digest = write_version(eng, path, 5, int(bucket_bytes))
    consolidated = eng.consolidated_state_dict()
    if rank == 0:
        blob = serialize_state_dict(consolidated)
        specs = [(n, t.dtype, tuple(t.shape)) for n, t in consolidated.items()]
        print(json.dumps({"same_bytes": Path(out).read_bytes() == blob, "digest": digest,
                          "consolidated_digest": version_digest(blob, 5), "tensors": len(consolidated),
                          "vision_tensors": sum(n.startswith("model.visual.") for n in consolidated),
                          "buckets": len(buckets(file_order(specs), int(bucket_bytes))), "bytes": len(blob)}),
              flush=True)
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:4])
