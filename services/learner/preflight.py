"""The checks before a learner starts: inputs that exist, a run dir that matches --resume, room for checkpoints."""

from __future__ import annotations

from services.learner import state
from services.learner.config import LearnerConfig


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
        ckpt = state.read_checkpoint(cfg.run_dir) if cfg.resume else None
        copies = 3 if ckpt is not None and checkpoint.needs_universal(cfg, ckpt) else 2
        return checkpoint.space_problem(cfg.run_dir, need, cfg.checkpoint_headroom, copies)
    return ""
