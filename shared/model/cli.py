"""Settings and entry points of `eureka data make-synthetic` and `eureka make-base` (heavy imports inside)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.config import EurekaSettings


class SyntheticSettings(EurekaSettings):
    """Settings of `eureka data make-synthetic`."""

    out: Path = Field(Path("data/synthetic"), description="output folder (train.jsonl, heldout.jsonl, images/)")
    train: int = Field(2000, ge=0, description="training problems")
    heldout: int = Field(200, ge=0, description="held-out problems")
    seed: int = Field(0, ge=0)
    generator: Literal[2, 3] = Field(2, description="generator version (2: the one-read families, 3: multi-step)")


class MakeBaseSettings(EurekaSettings):
    """Settings of `eureka make-base`."""

    out: Path | None = Field(None, description="output directory (default: the cache, base_model_dir())")
    force: bool = Field(False, description="rebuild even when the cached base matches the recipe")
    steps: int | None = Field(None, ge=1, description="optimizer steps (default: the recipe's)")
    threads: int = Field(1, ge=1, description="torch CPU threads (1 is fastest on a shared machine)")
    corpus: Literal["chat", "plain"] = Field("chat", description="plain: no chat data (the pretrained-mode base)")
    checks: bool = Field(True, description="off: no checked or slip solutions (the ablation's base)")
    world: Literal[2, 3] = Field(2, description="generator version of the corpus problems")


def make_synthetic(cfg: SyntheticSettings) -> int:
    from shared.model.synthetic import write_split

    cfg.out.mkdir(parents=True, exist_ok=True)
    splits = (("train", cfg.train), ("heldout", cfg.heldout))
    paths = [write_split(cfg.out, split, n, cfg.seed, cfg.generator) for split, n in splits]
    print(json.dumps({"train": str(paths[0]), "heldout": str(paths[1]), "train_n": cfg.train, "heldout_n": cfg.heldout}))
    return 0


def make_base(cfg: MakeBaseSettings) -> int:
    from shared.model.cache import base_is_current, base_model_dir
    from shared.model.pretrain import BaseRecipe, build_base

    recipe = BaseRecipe(threads=cfg.threads, corpus=cfg.corpus, checks=cfg.checks, world=cfg.world,
                        **({"steps": cfg.steps} if cfg.steps else {}))
    out = cfg.out or base_model_dir(recipe)
    if not cfg.force and cfg.out is None and cfg.steps is None and base_is_current(out, recipe):
        print(json.dumps({"model": str(out), "cached": True}))
        return 0
    start = time.monotonic()
    stats = build_base(recipe, out)
    print(json.dumps({"model": str(out), "cached": False, "wall_seconds": round(time.monotonic() - start, 1), **stats}))
    return 0
