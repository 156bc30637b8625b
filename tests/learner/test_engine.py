"""The learning-rate schedule and the DeepSpeed config built from the settings."""

from __future__ import annotations

import math

import pytest

from services.learner.config import LearnerConfig
from services.learner.engine import cosine_lr, ds_config


def test_cosine_schedule_warmup_then_decay_to_min() -> None:
    lrs = [cosine_lr(s, 100, lr=1e-6, min_lr=1e-7, warmup_ratio=0.03) for s in range(100)]
    assert lrs[:3] == pytest.approx([1e-6 / 3, 2e-6 / 3, 1e-6])  # 3% of 100 steps of linear warmup
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # then never rises
    halfway = 3 + (100 - 3) / 2  # cosine midpoint: the mean of lr and min_lr
    assert cosine_lr(math.floor(halfway), 100, 1e-6, 1e-7, 0.03) == pytest.approx(5.5e-7, rel=0.02)
    assert 1e-7 < lrs[-1] < 1.01e-7  # the last step still learns, just above min_lr


def test_no_warmup_starts_at_lr() -> None:
    assert cosine_lr(0, 10, lr=1.0, min_lr=0.0, warmup_ratio=0.0) == 1.0


def test_ds_config_accumulates_to_the_train_batch(clean_env) -> None:
    cfg = LearnerConfig(train_batch_groups=8, world_size=2, micro_batch_sequences=2, zero_stage=3,
                        recipe={"n_samples": 8, "mini_batches": 4})
    ds = ds_config(cfg, bf16=False)
    assert ds["gradient_accumulation_steps"] == 4  # 64 sequences / 4 mini-batches / (2 ranks x 2)
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * 4 * 2 == 16
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["gradient_clipping"] == cfg.recipe.grad_clip


def test_config_refuses_a_batch_that_does_not_split(clean_env) -> None:
    with pytest.raises(ValueError, match="multiple of recipe.mini_batches x world_size x micro_batch_sequences"):
        LearnerConfig(train_batch_groups=6, world_size=4, recipe={"n_samples": 3, "mini_batches": 1})


def test_min_lr_defaults_to_a_tenth_of_lr(clean_env) -> None:
    assert LearnerConfig(recipe={"lr": 3e-6}).recipe.min_lr == pytest.approx(3e-7)
    assert LearnerConfig(recipe={"lr": 3e-6, "min_lr": 0.0}).recipe.min_lr == 0.0


def test_sync_mode_means_no_staleness(clean_env) -> None:
    assert LearnerConfig(mode="sync").max_staleness == 0
    assert LearnerConfig().max_staleness == 4
    assert LearnerConfig().batch_groups == 128
