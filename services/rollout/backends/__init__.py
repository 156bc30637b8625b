"""Generation backends behind one interface (`base.Backend`): `hf` (transformers) and `vllm` (GPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.rollout.backends.base import Backend
    from services.rollout.config import RolloutConfig


def make_backend(cfg: RolloutConfig, model_path: str) -> Backend:
    """The backend named by `cfg.backend`, loaded from `model_path` (heavy imports happen here)."""
    if cfg.backend == "vllm":
        from services.rollout.backends.vllm import VllmBackend

        return VllmBackend(model_path, cfg)
    from services.rollout.backends.hf import HfBackend

    return HfBackend(model_path, device=cfg.device, dtype=cfg.dtype)
