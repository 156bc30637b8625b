"""Helper process for test_update.py: eight mini-batches on one rollout batch; prints what the test checks (JSON).

    python tests/learner/mini_batches.py MODEL_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from eureka.v1 import buffer_pb2
from fixed_groups import fixed_groups

from services.learner.config import LearnerConfig
from services.learner.engine import build_engine, init_distributed
from services.learner.step import Batch, _forward, proximal_logprobs, reduce_sums, split, train_step


def groups() -> list[buffer_pb2.TrajectoryGroup]:
    """Four prompts of four samples, rewards split so every group has advantages (ratios move under a large lr)."""
    return fixed_groups(4, 4, lambda k, i: [20 + k, 21 + i, 22, 23 + i], lambda i: float(i % 2))


def main() -> None:
    model = Path(sys.argv[1])
    init_distributed()
    cfg = LearnerConfig(zero_stage=0, train_batch_groups=4, model_path=model, total_steps=1,
                        recipe={"lr": 5e-2, "warmup_ratio": 0.0, "n_samples": 4, "mini_batches": 8},
                        micro_batch_sequences=1)
    eng = build_engine(cfg, model)
    batch = Batch(eng, groups(), cfg, pad_id=0)
    minis = split(batch.sequences, cfg, step=0, rank=0, world=1)
    proximal_logprobs(eng, batch, minis)
    first = minis[0].mine
    logp, _, _ = _forward(eng, batch, first, with_grad=False)  # the first mini-batch, before any step
    diff = max((logp[i, : len(s.response)] - s.proximal).abs().max().item() for i, s in enumerate(first))
    with torch.no_grad():
        before = {n: p.clone() for n, p in eng.model.named_parameters()}
    sums = train_step(eng, groups(), cfg, 0, 0, 1, pad_id=0)
    reduced = reduce_sums(sums, None)
    moved = max((p - before[n]).abs().max().item() for n, p in eng.model.named_parameters())
    print(json.dumps({"mini_batches": len(minis), "sizes": [len(m.mine) for m in minis], "proximal_diff": diff,
                      "clip": reduced["clip_fraction_by_mini_batch"], "optimizer_steps": len(sums.grad_norms),
                      "moved": moved, "lr_steps": eng.scheduler.last_epoch}))


if __name__ == "__main__":
    main()
