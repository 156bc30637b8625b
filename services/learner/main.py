"""`eureka learner run`: check the inputs, then start this node's processes or, inside one, train.

The loop itself is `loop.run`; `launch` starts the processes (one node or several).
"""

from __future__ import annotations

import json
import os
import sys

from services.learner import state
from services.learner.config import LearnerConfig
from services.learner.launch import SETTINGS_ENV
from shared.logs import get_logger, setup_logging

log = get_logger("learner")
MULTI_NODE_VARS = ("NNODES", "LWS_GROUP_SIZE", "MASTER_ADDR", "LWS_LEADER_ADDRESS")


def main(settings: LearnerConfig) -> int:
    setup_logging("learner")
    problem = refusal(settings)
    if problem:
        log.error("refusing to start", reason=problem)
        print(f"eureka learner run: {problem}", file=sys.stderr)
        return 2
    inside = "LOCAL_RANK" in os.environ  # a process torchrun or the local launcher started
    if not inside and (settings.world_size > 1 or any(os.environ.get(v) for v in MULTI_NODE_VARS)):
        from services.learner.launch import launch

        try:
            return launch(settings)
        except ValueError as e:
            print(f"eureka learner run: {e}", file=sys.stderr)
            return 2
    from services.learner.loop import run

    return run(settings)


def refusal(cfg: LearnerConfig) -> str:
    """A sentence saying what to fix, or '' when the run may start."""
    from services.learner import checkpoint

    if cfg.data_path is None:
        return "no training data: pass --data-path FILE.jsonl (MM-Eureka JSONL)"
    if not cfg.data_path.is_file():
        return f"--data-path {cfg.data_path} does not exist; pass an MM-Eureka JSONL file"
    if cfg.image_root is not None and not cfg.image_root.is_dir():
        return f"--image-root {cfg.image_root} is not a folder; pass the folder the image paths start from"
    if cfg.model_path is not None and not (cfg.model_path / "config.json").is_file():
        return f"--model-path {cfg.model_path} is not a model directory (no config.json)"
    if not cfg.resume and (cfg.run_dir / state.CHECKPOINT_FILE).is_file():
        return f"{cfg.run_dir} already holds a checkpoint: pass --resume to continue it, or choose a new --run-dir"
    if cfg.model_path is not None:
        params, trainable = checkpoint.count_parameters(cfg.model_path, cfg.recipe.freeze_vision)
        need = checkpoint.estimate_bytes(params, trainable, 2 if cfg.dtype == "bfloat16" else 4)
        return checkpoint.space_problem(cfg.run_dir, need, cfg.checkpoint_headroom)
    return ""


def _child() -> int:
    """Entry of each learner process: the settings come from its environment."""
    settings = LearnerConfig(**json.loads(os.environ[SETTINGS_ENV]))
    setup_logging("learner")
    from services.learner.loop import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(_child())
