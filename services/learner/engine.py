"""The DeepSpeed engine: process group, model, AdamW + cosine schedule, consolidated weights, checkpoints.

CPU runs use gloo (DeepSpeed's shared-memory comm op is skipped: it JIT-compiles C++ at start);
GPU runs use NCCL and bf16. A single process without torchrun gets the rendezvous variables set here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.learner.config import LearnerConfig
from services.learner.loading import load_policy
from services.learner.logprobs import PromptFeatures, image_features
from services.learner.state import fsync_tree
from shared.logs import get_logger
from shared.redis_proc import free_port

if TYPE_CHECKING:
    from shared.model.prompts import PromptInputs

log = get_logger("learner.engine")


def cosine_lr(step: int, total_steps: int, lr: float, min_lr: float, warmup_ratio: float) -> float:
    """Linear warmup over ceil(warmup_ratio x total) steps, then cosine from lr towards min_lr (reached after
    the last step, as transformers' cosine_with_min_lr, so the last step still learns)."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def init_distributed() -> None:
    """Join (or form, for one process) the process group: NCCL on GPU, gloo on CPU."""
    import deepspeed
    import deepspeed.ops
    import torch

    if "RANK" not in os.environ:  # one process without torchrun
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl")
    else:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="gloo")


def ds_config(cfg: LearnerConfig, bf16: bool, universal: bool = False) -> dict[str, Any]:
    """DeepSpeed's view of one optimizer step: a mini-batch of sequences over every rank (`universal`: the
    checkpoint to load is a universal one, written for another world size)."""
    return {
        "train_batch_size": cfg.mini_batch_sequences,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_sequences,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.recipe.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": universal},
    }


class _ThroughEngine:
    """The HF model as code that takes a model sees it, but calls go through `engine.forward`: DeepSpeed
    keeps its gradient-accumulation state there (ZeRO-1/2 clear, ZeRO-3 count micro steps on each forward)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._engine(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.module, name)


VISION_PREFIX = "model.visual."  # where Qwen2.5-VL keeps its vision tower


@dataclass
class Engine:
    engine: Any  # deepspeed.DeepSpeedEngine
    scheduler: Any
    reference: Any | None  # frozen reference model for the KL term, only when kl_coef > 0
    zero_stage: int
    # Under ZeRO-3 every rank must make the same collective parameter gathers, but a rank whose prompts
    # have no image skips the vision tower. So the (frozen) tower is kept out of DeepSpeed there:
    # replicated on every rank, attached to the model only for a forward.
    vision: Any | None = None

    @property
    def model(self) -> Any:
        return self.engine.module

    @contextmanager
    def forward_ready(self) -> Iterator[Any]:
        """The model for a training forward: called through the DeepSpeed engine, vision tower in place."""
        if self.vision is None:
            yield _ThroughEngine(self.engine)
            return
        self.model.model.visual = self.vision
        try:
            yield _ThroughEngine(self.engine)
        finally:
            del self.model.model.visual

    @property
    def lm_head(self) -> Any:
        return self.model.lm_head

    def prompt_features(self, inputs: PromptInputs, grad: bool) -> PromptFeatures:
        """The prompt's image features from the vision tower, computed once for all of its samples."""
        import torch

        if inputs.pixel_values is None:
            return PromptFeatures(list(inputs.input_ids))
        with self.forward_ready(), torch.set_grad_enabled(grad):
            return image_features(self.model, inputs)

    def consolidated_state_dict(self) -> dict[str, Any] | None:
        """The full state dict on rank 0 (None elsewhere). Under ZeRO-3 every rank must call this; the learner
        publishes bucket by bucket there instead (`gather.py`), checked against this and measured beside it."""
        if self.zero_stage != 3:
            return self.model.state_dict() if self.engine.global_rank == 0 else None
        sd = self.engine._zero3_consolidated_16bit_state_dict()  # noqa: SLF001 - DeepSpeed's gather API
        if sd is not None and self.vision is not None:
            sd.update({VISION_PREFIX + k: v.detach().cpu() for k, v in self.vision.state_dict().items()})
        return sd

    def save(self, root: Path, tag: str, client_state: dict[str, Any]) -> None:
        """DeepSpeed checkpoint under root/tag on every rank, then fsync so it survives a crash."""
        import torch.distributed as dist

        self.engine.save_checkpoint(str(root), tag=tag, client_state=client_state)
        fsync_tree(root / tag)
        dist.barrier()

    def load(self, root: Path, tag: str) -> dict[str, Any]:
        path, client_state = self.engine.load_checkpoint(
            str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise FileNotFoundError(f"DeepSpeed checkpoint {root / tag} could not be loaded; is the run dir intact?")
        return client_state or {}


def build_engine(cfg: LearnerConfig, model_path: Path, universal: bool = False) -> Engine:
    """Model (vision tower frozen by the recipe), AdamW over the trainable parameters, cosine schedule, DeepSpeed."""
    import deepspeed
    import torch

    from shared.model.io import load_model

    torch.manual_seed(cfg.seed)
    gpu = torch.cuda.is_available()
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and gpu)
    ds = ds_config(cfg, bf16, universal)
    model, vision = load_policy(model_path, "bfloat16" if bf16 else "float32", cfg.zero_stage, ds,
                                cfg.recipe.freeze_vision)
    if cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and gpu):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    r = cfg.recipe
    optimizer = torch.optim.AdamW(params, lr=r.lr, betas=r.adam_betas, weight_decay=r.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr(step, cfg.optimizer_steps, r.lr, r.min_lr, r.warmup_ratio) / r.lr
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=params, optimizer=optimizer, lr_scheduler=scheduler, config=ds
    )
    if vision is not None:
        vision.to(engine.device)
    reference = None
    if r.kl_coef > 0:
        reference = load_model(model_path, dtype="bfloat16" if bf16 else "float32", device=str(engine.device))
        reference.requires_grad_(False)
    log.info("engine ready", zero_stage=cfg.zero_stage, bf16=bf16, world_size=engine.world_size,
             trainable_params=sum(getattr(p, "ds_numel", p.numel()) for p in params), grad_accum_steps=cfg.grad_accum_steps,
             mini_batches=r.mini_batches, gradient_checkpointing=model.is_gradient_checkpointing)
    return Engine(engine, scheduler, reference, cfg.zero_stage, vision)
