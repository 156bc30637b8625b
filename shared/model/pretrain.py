"""`eureka make-base`: pretrain the tiny Qwen2.5-VL on the small world's corpus for a few CPU minutes.

Documents are generated on the fly (deterministic by seed), loss on the response tokens only (less a slip's
slipped number: `response_labels`), with M-RoPE positions. The vision tower stays at its random init, with
the patch embedding made blind to a plain white patch: trained, it collapses to an image-independent output,
and with the white background in every feature the text model learns to read the image far more slowly
(docs/MODEL.md). The result is a normal HF checkpoint directory with `recipe.sha256` (`RECIPE_FILE`), so a
changed recipe rebuilds the cache (shared/model/cache.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.config import StrictModel
from shared.model.corpus import CorpusMix
from shared.model.styles import NO_CHECKS, Document, StyleMix

RECIPE_FILE = "recipe.sha256"  # in a built base: the digest of the recipe that built it

CORPUS_VERSION = 10  # bump when corpus.py, styles.py, the generators or make_batch change what the base learns


class BaseRecipe(StrictModel):
    """How the tiny base is built (its digest keys the cache)."""

    seed: int = Field(0, ge=0)
    steps: int | None = Field(None, ge=1, description="optimizer steps (default: 1800 for world 2, 1600 for world 3)")
    batch_size: int = Field(8, ge=1, description="documents per step (small: optimizer steps matter more than batch)")
    lr: float = Field(4e-3, gt=0)
    warmup_steps: int = Field(60, ge=0)
    train_vision: bool = Field(False, description="train the vision tower too (it collapses; off: random, white-blind)")
    world: Literal[2, 3] = Field(2, description="generator version of the problems (3: the multi-step families)")
    corpus: Literal["chat", "plain"] = Field(
        "chat", description="chat: instruct and \\boxed{} chats; plain: no chat data (the pretrained-mode base)"
    )
    checks: bool = Field(True, description="world 3: keep the checked and slip styles (off: the ablation's corpus)")
    weight_decay: float = Field(0.01, ge=0)
    # One thread by default: where cores are shared, OpenMP spin-waits make more threads slower, not faster.
    threads: int = Field(1, ge=1, description="torch CPU threads (not part of the digest)")

    @model_validator(mode="after")
    def _defaults(self) -> BaseRecipe:
        if self.steps is None:
            self.steps = 1800 if self.world == 2 else 1600
        if self.corpus == "plain" and self.world == 2:
            raise ValueError("the plain corpus (the pretrained-mode base) is written for world 3; pass world=3")
        return self

    def digest(self) -> str:
        from shared.model.tokenizer import TABLE

        blob = json.dumps(
            {
                "recipe": self.model_dump(exclude={"threads"}),
                "mix": asdict(CorpusMix()) if self.world == 2 else asdict(self.style_mix()),
                "corpus": CORPUS_VERSION,
                "tokenizer": hashlib.sha256(TABLE.read_bytes()).hexdigest(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def style_mix(self) -> StyleMix:
        return StyleMix() if self.checks else NO_CHECKS

    def cache_name(self) -> str:
        """The cache folder of this kind of base (tiny-base, tiny-base-v3, tiny-base-v3-plain, tiny-base-v3-nochecks)."""
        if self.world == 2:
            return "tiny-base"
        return "tiny-base-v3" + ("-plain" if self.corpus == "plain" else "") + ("" if self.checks else "-nochecks")


def make_batch(problems: list[Any], rng: random.Random, tokenizer: Any, mix: CorpusMix | StyleMix,
               plain: bool = False) -> dict[str, Any]:
    """Model kwargs with labels (-100 on prompt and padding) for a list of problems (v2 with a CorpusMix,
    v3 with a StyleMix; `plain`: the plain-text corpus)."""
    import torch

    from shared.model.corpus import choose_style, render_document
    from shared.model.images import image_token_count, preprocess_images
    from shared.model.prompts import mm_token_type_ids

    from shared.model.styles import render_v3_document

    pixel_values, grid = preprocess_images([p.image for p in problems])
    counts = image_token_count(grid)
    rows = []
    style = choose_style(rng, mix) if isinstance(mix, CorpusMix) else ""
    for p, n in zip(problems, counts):
        if isinstance(mix, StyleMix):
            doc = render_v3_document(p, rng, n, mix, plain)
        else:
            doc = Document(*render_document(p, rng, n, mix, style))
        rows.append((tokenizer(doc.prompt, add_special_tokens=False)["input_ids"], *response_labels(tokenizer, doc)))
    width = max(len(a) + len(b) for a, b, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (a, b, target) in enumerate(rows):
        ids[i, : len(a) + len(b)] = torch.tensor(a + b)
        labels[i, len(a) : len(a) + len(b)] = torch.tensor(target)
        mask[i, : len(a) + len(b)] = 1
    # M-RoPE positions, as the rollout, the learner and evaluation compute them (shared.model.prompts)
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixel_values,
            "image_grid_thw": grid, "mm_token_type_ids": mm_token_type_ids(ids, image_token)}


def response_labels(tokenizer: Any, doc: Document) -> tuple[list[int], list[int]]:
    """The response's token ids and its labels: the ids, with -100 over `doc.untrained`'s spans (each tokenized
    in place: a span starts at a space, where the pre-tokenizer splits anyway)."""
    ids: list[int] = []
    labels: list[int] = []
    at = 0
    for start, end in (*doc.untrained, (len(doc.response), len(doc.response))):
        for piece, trained in ((doc.response[at:start], True), (doc.response[start:end], False)):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids += piece_ids
            labels += piece_ids if trained else [-100] * len(piece_ids)
        at = end
    return ids, labels


def null_background(model: Any) -> None:
    """Project the patch embedding so a plain white patch maps to zero: image features carry the drawn
    objects instead of a large constant background component."""
    import torch
    from PIL import Image

    from shared.model.images import preprocess_images

    white = preprocess_images([Image.new("RGB", (56, 56), "white")])[0][0]
    weight = model.model.visual.patch_embed.proj.weight
    with torch.no_grad():
        flat = weight.view(weight.shape[0], -1)
        u = white / white.norm()
        flat -= (flat @ u)[:, None] * u[None, :]


def build_base(recipe: BaseRecipe, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train and save the tiny base to `out` (atomically: a temp dir renamed at the end); returns stats."""
    import math

    import torch
    from tqdm import tqdm

    from shared.model.io import new_tiny_model, save_model
    from shared.model.synthetic import make_any

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    rng = random.Random(f"corpus:{recipe.seed}")
    mix = CorpusMix() if recipe.world == 2 else recipe.style_mix()
    model, tok = new_tiny_model(recipe.seed)
    if not recipe.train_vision:
        null_background(model)
        model.model.visual.requires_grad_(False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    start, ema = time.monotonic(), None
    bar = tqdm(range(recipe.steps), desc="make-base", unit="step", disable=not progress)
    for step in bar:
        problems = [make_any(rng, recipe.world) for _ in range(recipe.batch_size)]
        batch = make_batch(problems, rng, tok, mix, plain=recipe.corpus == "plain")
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    stats = {"steps": recipe.steps, "final_loss_ema": ema, "train_seconds": round(time.monotonic() - start, 1)}
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # unique: two builders never share a temp dir
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tok, tmp)
    (tmp / "base_info.json").write_text(json.dumps({"recipe": recipe.model_dump(), **stats}, indent=2))
    (tmp / RECIPE_FILE).write_text(recipe.digest())
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return stats
