"""Helper process for test_stages.py: two optimizer steps on fixed groups under one ZeRO stage; saves the weights.

    python tests/learner/two_steps.py STAGE MODEL_DIR OUT.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from eureka.v1 import buffer_pb2
from fixed_groups import fixed_groups

from services.learner.config import LearnerConfig
from services.learner.engine import build_engine, init_distributed
from services.learner.step import train_step


def groups(flip: bool) -> list[buffer_pb2.TrajectoryGroup]:
    """Two prompts of four samples; `flip` swaps which samples are rewarded."""
    return fixed_groups(2, 4, lambda k, i: [20 + k, 21, 22 + i], lambda i: float((i + flip) % 2))


def main() -> None:
    stage, model, out = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    init_distributed()
    cfg = LearnerConfig(zero_stage=stage, train_batch_groups=2, model_path=model, total_steps=5,
                        recipe={"lr": 1e-3, "n_samples": 4, "mini_batches": 2}, micro_batch_sequences=2)
    eng = build_engine(cfg, model)
    norms = [train_step(eng, groups(flip), cfg, step, 0, 1, 0).grad_norms[-1] for step, flip in enumerate((False, True))]
    torch.save({"norms": norms, "state_dict": {k: v.clone() for k, v in eng.consolidated_state_dict().items()}}, out)


if __name__ == "__main__":
    main()
