"""One optimizer step on this process's share of a batch: advantages, log-probs, decoupled PPO loss, backward.

The batch is one optimizer step (gradient accumulation over micro batches of `micro_batch_groups`
groups), so the parameters do not move between the micro batches: the proximal log-probs (the
policy before this step) are exactly the detached log-probs of the same forward, no second pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.learner.losses import ADVANTAGES, policy_loss
from shared.config import RecipeConfig

if TYPE_CHECKING:
    import torch
    from eureka.v1 import buffer_pb2

    from services.learner.engine import Engine
    from shared.model.prompts import PromptInputs

# Sums reduced over ranks; each `*_tok` is a micro batch's mean weighted by its token count.
SUM_KEYS = ("tokens", "loss_tok", "policy_loss_tok", "clip_fraction_tok", "importance_mean_tok", "kl_tok", "entropy_tok")


@dataclass
class Prepared:
    inputs: PromptInputs
    responses: list[list[int]]
    behaviour: list[list[float]]
    advantages: torch.Tensor


@dataclass
class StepSums:
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUM_KEYS, 0.0))
    importance_max: float = 0.0
    grad_norm: float = 0.0


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


def prepare(group: buffer_pb2.TrajectoryGroup, recipe: RecipeConfig) -> Prepared:
    import torch

    rewards = torch.tensor([s.reward for s in group.samples], dtype=torch.float32)
    return Prepared(
        inputs=prompt_inputs(group, recipe),
        responses=[list(s.response_token_ids) for s in group.samples],
        behaviour=[list(s.behaviour_logprobs) for s in group.samples],
        advantages=ADVANTAGES[recipe.advantage](rewards),
    )


def _padded(rows: list[torch.Tensor]) -> torch.Tensor:
    from torch.nn.utils.rnn import pad_sequence

    return pad_sequence(rows, batch_first=True)


def micro_batch_loss(eng: Engine, batch: list[Prepared], recipe: RecipeConfig, pad_id: int):
    """The loss of one micro batch (LossOutput) and its number of response tokens."""
    import torch

    from shared.model.logprobs import response_logprobs

    logps, entropies, behaviour, refs, masks, advantages = [], [], [], [], [], []
    for g in batch:
        # An empty response still takes part (one masked pad token) so every rank runs the same backward.
        responses = [r if r else [pad_id] for r in g.responses]
        with eng.forward_ready() as model:
            lp, ent = response_logprobs(model, g.inputs, responses, recipe.temperature, with_entropy=True)
        logps += lp
        entropies += ent
        if eng.reference is not None:
            with torch.no_grad():
                refs += response_logprobs(eng.reference, g.inputs, responses, recipe.temperature)
        for r, b in zip(g.responses, g.behaviour, strict=True):
            masks.append(torch.ones(max(len(r), 1)) if r else torch.zeros(1))
            behaviour.append(torch.tensor(b if r else [0.0]))
        advantages.append(g.advantages)
    logprobs = _padded(logps)
    device = logprobs.device
    mask = _padded(masks).to(device)
    out = policy_loss(
        logprobs,
        logprobs.detach(),  # proximal: the policy before this step (see the module docstring)
        _padded(behaviour).to(device, logprobs.dtype),
        torch.cat(advantages).to(device, logprobs.dtype),
        mask,
        clip_eps=recipe.clip_eps,
        ratio_cap=recipe.ratio_cap,
        importance_cap=recipe.importance_cap,
        ref_logprobs=_padded(refs).to(device, logprobs.dtype) if refs else None,
        kl_coef=recipe.kl_coef,
        entropy=_padded(entropies),
        entropy_coef=recipe.entropy_coef,
    )
    return out, float(mask.sum().item())


def train_step(eng: Engine, groups: list[buffer_pb2.TrajectoryGroup], recipe: RecipeConfig, micro_batch_groups: int,
               pad_id: int) -> StepSums:
    """Forward/backward over this rank's groups in micro batches; DeepSpeed steps at the last one."""
    prepared = [prepare(g, recipe) for g in groups]
    acc = StepSums()
    for start in range(0, len(prepared), micro_batch_groups):
        out, tokens = micro_batch_loss(eng, prepared[start : start + micro_batch_groups], recipe, pad_id)
        eng.engine.backward(out.loss)
        own_norm = _grad_norm(eng) if start + micro_batch_groups >= len(prepared) else None
        eng.engine.step()
        s = acc.sums
        s["tokens"] += tokens
        for key, value in (("loss_tok", out.loss.item()), ("policy_loss_tok", out.policy_loss),
                           ("clip_fraction_tok", out.clip_fraction), ("importance_mean_tok", out.importance_mean),
                           ("kl_tok", out.kl), ("entropy_tok", out.entropy)):
            s[key] += value * tokens
        acc.importance_max = max(acc.importance_max, out.importance_max)
    # ZeRO 1-3 and bf16 record the global norm; plain fp32 DeepSpeed clips without keeping it.
    norm = eng.engine.get_global_grad_norm()
    acc.grad_norm = float(norm) if norm is not None else (own_norm or 0.0)
    return acc


def _grad_norm(eng: Engine) -> float | None:
    """Norm of the (already all-reduced) gradients held in p.grad, before clipping; None when not held there."""
    import torch

    grads = [p.grad for p in eng.model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()


def reduce_sums(acc: StepSums, group: Any) -> dict[str, float]:
    """Token-weighted means over every rank (on the control process group)."""
    import torch
    import torch.distributed as dist

    sums = torch.tensor([acc.sums[k] for k in SUM_KEYS], dtype=torch.float64)
    dist.all_reduce(sums, group=group)
    peak = torch.tensor([acc.importance_max], dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    total = dict(zip(SUM_KEYS, sums.tolist(), strict=True))
    tokens = max(total["tokens"], 1.0)
    means = {k.removesuffix("_tok"): v / tokens for k, v in total.items() if k.endswith("_tok")}
    return {**means, "tokens": total["tokens"], "importance_max": peak.item()}
