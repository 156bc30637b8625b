"""Training on one rollout batch: advantages, mini-batches, proximal log-probs, decoupled PPO, backward.

As MM-Eureka (OpenRLHF): the batch's sequences are shuffled (seeded by the step) and split into
`recipe.mini_batches` mini-batches, each one optimizer step; within a mini-batch each rank takes a
contiguous share and runs it in micro batches of `micro_batch_sequences` (DeepSpeed accumulates them).
The proximal log-probs (the policy before the first of those steps) come from one no-grad pass before
the first mini-batch, so the PPO ratio and its clip act from the second step on; with one mini-batch
the parameters do not move inside the batch and the detached log-probs of the training forward are
exactly the proximal ones (no second pass).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.learner.logprobs import PromptFeatures, image_features, response_hidden, token_logprobs
from services.learner.losses import ADVANTAGES, policy_loss, token_weights

if TYPE_CHECKING:
    import torch
    from eureka.v1 import buffer_pb2

    from services.learner.config import LearnerConfig
    from services.learner.engine import Engine
    from shared.config import RecipeConfig
    from shared.model.prompts import PromptInputs

# Per-token statistics, summed over ranks weighted by token counts.
TOKEN_KEYS = ("clip_fraction", "importance_mean", "kl", "entropy")


@dataclass
class Sequence:
    """One response to train on: its group, tokens, behaviour log-probs, advantage and proximal log-probs."""

    group: int  # index into the batch's groups
    response: list[int]
    behaviour: list[float]
    advantage: float
    proximal: torch.Tensor | None = None


@dataclass
class MiniBatch:
    """One optimizer step: this rank's sequences and the whole mini-batch's counts (every rank's)."""

    mine: list[Sequence]
    sequences: int
    tokens: int


@dataclass
class StepSums:
    """This rank's share of a step's statistics, reduced over ranks by `reduce_sums`."""

    loss: float = 0.0  # mean over mini-batches of the optimized loss
    policy_loss: float = 0.0
    tokens: float = 0.0
    token_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0.0))
    clip_tokens: list[float] = field(default_factory=list)  # clip fraction x tokens, per mini-batch
    tokens_by_mini_batch: list[float] = field(default_factory=list)
    importance_max: float = 0.0
    grad_norms: list[float] = field(default_factory=list)


class Batch:
    """A rollout batch on one rank: the groups' prompts (image features cached when the tower is frozen)."""

    def __init__(self, eng: Engine, groups: list[buffer_pb2.TrajectoryGroup], cfg: LearnerConfig, pad_id: int) -> None:
        self.eng, self.cfg, self.pad_id = eng, cfg, pad_id
        self.prompts = [prompt_inputs(g, cfg.recipe) for g in groups]
        self._features: dict[int, PromptFeatures] = {}
        self.sequences = [s for i, g in enumerate(groups) for s in _sequences(i, g, cfg)]

    def features(self, group: int) -> PromptFeatures:
        """Frozen tower: computed once a batch. Trainable: again for each micro batch, with gradients."""
        if not self.cfg.recipe.freeze_vision:
            return self.eng.prompt_features(self.prompts[group], grad=True)
        if group not in self._features:
            self._features[group] = self.eng.prompt_features(self.prompts[group], grad=False)
        return self._features[group]


def prompt_inputs(group: buffer_pb2.TrajectoryGroup, recipe: RecipeConfig) -> PromptInputs:
    """The prompt exactly as rollout fed it: its token ids, and pixel values from the prompt's images (resized
    into the recipe's pixel bounds, as rollout resized them)."""
    from shared.model.images import preprocess_images
    from shared.model.prompts import PromptInputs, load_image

    pixel_values = grid = None
    if group.prompt.images:
        images = [load_image(ref.data, ref.uri) for ref in group.prompt.images]
        pixel_values, grid = preprocess_images(images, recipe.min_pixels, recipe.max_pixels)
    return PromptInputs(input_ids=list(group.prompt_token_ids), pixel_values=pixel_values, image_grid_thw=grid)


def _sequences(index: int, group: buffer_pb2.TrajectoryGroup, cfg: LearnerConfig) -> list[Sequence]:
    import torch

    rewards = torch.tensor([s.reward for s in group.samples], dtype=torch.float32)
    advantages = ADVANTAGES[cfg.recipe.advantage](rewards).tolist()
    return [Sequence(index, list(s.response_token_ids), list(s.behaviour_logprobs), a)
            for s, a in zip(group.samples, advantages, strict=True)]


def split(sequences: list[Sequence], cfg: LearnerConfig, step: int, rank: int, world: int) -> list[MiniBatch]:
    """Shuffle (seeded by seed and step, the same on every rank), cut into mini-batches, take this rank's share."""
    if len(sequences) != cfg.batch_sequences:
        raise ValueError(f"the rollout batch has {len(sequences)} sequences, expected train_batch_groups x "
                         f"recipe.n_samples = {cfg.batch_sequences}; every group must hold recipe.n_samples samples")
    order = list(sequences)
    random.Random(f"{cfg.seed}:{step}").shuffle(order)
    size, share = cfg.mini_batch_sequences, cfg.mini_batch_sequences // world
    out = []
    for start in range(0, len(order), size):
        mini = order[start : start + size]
        out.append(MiniBatch(mini[rank * share : (rank + 1) * share], len(mini), sum(len(s.response) for s in mini)))
    return out


def _forward(eng: Engine, batch: Batch, seqs: list[Sequence], with_grad: bool) -> tuple[torch.Tensor, ...]:
    """Log-probs, entropies and response mask (rows, tokens) of `seqs` under the policy."""
    import torch

    rows = [(batch.features(s.group), s.response) for s in seqs]
    with eng.forward_ready() as model, torch.set_grad_enabled(with_grad):
        out = response_hidden(model if with_grad else eng.model, rows, batch.pad_id, eng.engine.device)
        logp, entropy = token_logprobs(eng.lm_head, out.hidden, out.targets, batch.cfg.recipe.temperature,
                                       batch.cfg.logprob_chunk_tokens)
    return logp, entropy, out.mask


def _reference(eng: Engine, batch: Batch, seqs: list[Sequence]) -> torch.Tensor:
    import torch

    ref = eng.reference
    with torch.no_grad():
        rows = [(image_features(ref, batch.prompts[s.group]), s.response) for s in seqs]
        out = response_hidden(ref, rows, batch.pad_id, eng.engine.device)
        return token_logprobs(ref.lm_head, out.hidden, out.targets, batch.cfg.recipe.temperature,
                              batch.cfg.logprob_chunk_tokens)[0]


def _micro(seqs: list[Sequence], size: int) -> list[list[Sequence]]:
    return [seqs[i : i + size] for i in range(0, len(seqs), size)]


def _padded(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    import torch

    out = torch.zeros_like(like)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=like.dtype)
    return out


def proximal_logprobs(eng: Engine, batch: Batch, minis: list[MiniBatch]) -> None:
    """Fill each of this rank's sequences' proximal log-probs: one no-grad pass before the first step."""
    seqs = [s for m in minis for s in m.mine]
    for micro in _micro(seqs, batch.cfg.micro_batch_sequences):
        logp, _, _ = _forward(eng, batch, micro, with_grad=False)
        for i, s in enumerate(micro):
            s.proximal = logp[i, : max(len(s.response), 1)].detach()


def train_step(eng: Engine, groups: list[buffer_pb2.TrajectoryGroup], cfg: LearnerConfig, step: int, rank: int,
               world: int, pad_id: int) -> StepSums:
    """Every mini-batch of one rollout batch, each one optimizer step; returns this rank's statistics."""
    batch = Batch(eng, groups, cfg, pad_id)
    minis = split(batch.sequences, cfg, step, rank, world)
    if len(minis) > 1:
        proximal_logprobs(eng, batch, minis)
    acc = StepSums()
    for mini in minis:
        _train_mini_batch(eng, batch, mini, acc, world)
    return acc


def _train_mini_batch(eng: Engine, batch: Batch, mini: MiniBatch, acc: StepSums, world: int) -> None:
    import torch

    r, cfg = batch.cfg.recipe, batch.cfg
    micros = _micro(mini.mine, cfg.micro_batch_sequences)
    scale = len(micros) * world  # DeepSpeed divides by the accumulation steps and averages over ranks
    clip_tokens = tokens_here = 0.0
    own_norm = None
    for k, micro in enumerate(micros):
        logp, entropy, mask = _forward(eng, batch, micro, with_grad=True)
        proximal = logp.detach() if micro[0].proximal is None else _padded([s.proximal.tolist() for s in micro], logp)
        out = policy_loss(
            logp, proximal, _padded([s.behaviour for s in micro], logp),
            torch.tensor([s.advantage for s in micro], dtype=logp.dtype, device=logp.device), mask,
            token_weights(mask, r.loss_agg, mini.sequences, mini.tokens, r.max_response_tokens),
            clip_eps=r.clip_eps, ratio_cap=r.ratio_cap, importance_cap=r.importance_cap,
            ref_logprobs=_reference(eng, batch, micro) if eng.reference is not None else None,
            kl_coef=r.kl_coef, entropy=entropy, entropy_coef=r.entropy_coef,
        )
        eng.engine.backward(out.loss * scale)
        if k == len(micros) - 1:
            own_norm = _grad_norm(eng)
        eng.engine.step()
        tokens = float(mask.sum().item())
        acc.loss += out.loss.item() / r.mini_batches
        acc.policy_loss += out.policy_loss / r.mini_batches
        acc.tokens += tokens
        for key in TOKEN_KEYS:
            acc.token_sums[key] += getattr(out, key) * tokens
        acc.importance_max = max(acc.importance_max, out.importance_max)
        clip_tokens += out.clip_fraction * tokens
        tokens_here += tokens
    acc.clip_tokens.append(clip_tokens)
    acc.tokens_by_mini_batch.append(tokens_here)
    # ZeRO 1-3 and bf16 record the global norm; plain fp32 DeepSpeed clips without keeping it.
    norm = eng.engine.get_global_grad_norm()
    acc.grad_norms.append(float(norm) if norm is not None else (own_norm or 0.0))


def _grad_norm(eng: Engine) -> float | None:
    """Norm of the (already all-reduced) gradients held in p.grad, before clipping; None when not held there."""
    import torch

    grads = [p.grad for p in eng.model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()


def reduce_sums(acc: StepSums, group: object) -> dict[str, float | list[float]]:
    """The step's statistics over every rank (on the control process group)."""
    import torch
    import torch.distributed as dist

    values = [acc.loss, acc.policy_loss, acc.tokens, *acc.token_sums.values(), *acc.clip_tokens,
              *acc.tokens_by_mini_batch]
    sums = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(sums, group=group)
    peak = torch.tensor([acc.importance_max], dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    s = sums.tolist()
    loss, policy, tokens = s[0], s[1], max(s[2], 1.0)
    n = len(acc.clip_tokens)
    token_means = {k: v / tokens for k, v in zip(TOKEN_KEYS, s[3 : 3 + len(TOKEN_KEYS)], strict=True)}
    clips, counts = s[3 + len(TOKEN_KEYS) : 3 + len(TOKEN_KEYS) + n], s[3 + len(TOKEN_KEYS) + n :]
    return {"loss": loss, "policy_loss": policy, "tokens": s[2], **token_means, "importance_max": peak.item(),
            "clip_fraction_by_mini_batch": [c / max(t, 1.0) for c, t in zip(clips, counts, strict=True)],
            "grad_norm": sum(acc.grad_norms) / max(len(acc.grad_norms), 1)}
