"""Advantages and the policy loss, written like the equations they implement.

Advantages (one scalar per response, broadcast over its tokens):
  group_norm (GRPO):  A_i = (r_i - mean(r)) / (std(r) + 1e-6)        (std with Bessel's correction, as OpenRLHF)
  rloo:               A_i = r_i - (sum(r) - r_i) / (n - 1)
A group of one response, or one whose rewards are all equal, gets A = 0 (no NaN).

Decoupled PPO (AReaL) per token t, with behaviour log-probs mu (the policy that generated the sample),
proximal log-probs prox (the learner's policy before this step) and current log-probs logp:
  ratio    = exp(logp - prox)
  clipped  = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
  dual     = max(clipped, ratio_cap * A)  where A < 0 (dual clip: the ratio's pull is capped at ratio_cap)
  weight   = min(exp(prox - mu), importance_cap)   (no gradient; truncated importance weight)
  loss_t   = -weight * dual  [+ kl_coef * k3(ref, logp)]  [- entropy_coef * entropy_t]
The loss of a mini-batch is sum_t w_t * loss_t with the token weights of `recipe.loss_agg`
(`token_weights`): seq-mean-token-mean w_t = 1 / (N |o_i|) (OpenRLHF, MM-Eureka), token-mean
w_t = 1 / sum_i |o_i| (DAPO), seq-mean-token-sum-norm w_t = 1 / (N L_max) (Dr. GRPO), over the N sequences
of the mini-batch on every rank; a micro batch contributes its tokens' share.
k3 (Schulman's estimator of KL(pi || ref)): exp(ref - logp) - (ref - logp) - 1, always >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_NORM_EPS = 1e-6


def group_norm_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO advantages of one group of rewards, shape (n,)."""
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std() + GROUP_NORM_EPS)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages of one group of rewards, shape (n,)."""
    n = rewards.numel()
    if n < 2:
        return torch.zeros_like(rewards)
    baseline = (rewards.sum() - rewards) / (n - 1)
    return rewards - baseline


ADVANTAGES = {"group_norm": group_norm_advantages, "rloo": rloo_advantages}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where mask is 1 (0 when the mask is empty)."""
    return torch.where(mask.bool(), values, 0.0).sum() / mask.sum().clamp(min=1)


LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


def token_weights(mask: torch.Tensor, agg: str, sequences: int, tokens: int, max_len: int) -> torch.Tensor:
    """Per-token weights (rows, tokens) of a micro batch so that the weighted token sum over every micro batch
    of a mini-batch is its loss under `agg`; `sequences` and `tokens` count the whole mini-batch."""
    mask = mask.float()
    if agg == "seq-mean-token-mean":
        return mask / (mask.sum(1, keepdim=True).clamp(min=1) * sequences)
    if agg == "token-mean":
        return mask / max(tokens, 1)
    if agg == "seq-mean-token-sum-norm":
        return mask / (max_len * sequences)
    raise ValueError(f"loss_agg {agg!r} is not one of {', '.join(LOSS_AGGS)}")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, carries the gradient: this micro batch's share of the mini-batch loss
    policy_loss: float  # the PPO part of that share
    clip_fraction: float  # share of tokens whose ratio was clipped (either side or dual)
    importance_mean: float
    importance_max: float
    kl: float
    entropy: float


def policy_loss(
    logprobs: torch.Tensor,
    proximal_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_eps: float = 0.2,
    ratio_cap: float = 3.0,
    importance_cap: float = 5.0,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> LossOutput:
    """Decoupled PPO loss over a padded batch: every tensor is (batch, tokens); advantages (batch,) or (batch, tokens).

    `weights` are the aggregation's token weights (`token_weights`); None is the token mean of this batch.
    The statistics (clip fraction, importance weights, KL, entropy) are token means of this batch."""
    tokens = mask.bool()
    mask = mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(logprobs)
    # Padding positions may hold anything: zero every exponent there so nothing overflows into the gradient.
    ratio = torch.exp(torch.where(tokens, logprobs - proximal_logprobs, 0.0))
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    clipped = torch.min(surr1, surr2)
    dual = torch.where(advantages < 0, torch.max(clipped, ratio_cap * advantages), clipped)
    with torch.no_grad():
        log_weight = torch.where(tokens, proximal_logprobs - behaviour_logprobs, 0.0)
        weight = torch.exp(log_weight).clamp(max=importance_cap)
        clipped_tokens = (dual != surr1).to(mask.dtype)
    if weights is None:
        weights = mask / mask.sum().clamp(min=1)
    weights = torch.where(tokens, weights.to(logprobs.dtype), 0.0)
    pg = (weights * torch.where(tokens, -weight * dual, 0.0)).sum()
    loss = pg
    kl_value = 0.0
    if ref_logprobs is not None and kl_coef > 0:
        log_r = torch.where(tokens, ref_logprobs - logprobs, 0.0)
        k3 = torch.exp(log_r) - log_r - 1
        loss = loss + kl_coef * (weights * k3).sum()
        kl_value = masked_mean(k3, mask).item()
    entropy_value = 0.0
    if entropy is not None:
        entropy = torch.where(tokens, entropy, 0.0)
        entropy_value = masked_mean(entropy, mask).item()
        if entropy_coef > 0:
            loss = loss - entropy_coef * (weights * entropy).sum()
    return LossOutput(
        loss=loss,
        policy_loss=pg.item(),
        clip_fraction=masked_mean(clipped_tokens, mask).item(),
        importance_mean=masked_mean(weight, mask).item(),
        importance_max=weight[tokens].max().item() if tokens.any() else 0.0,
        kl=kl_value,
        entropy=entropy_value,
    )
