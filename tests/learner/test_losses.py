"""Advantages and the decoupled PPO loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from services.learner.losses import group_norm_advantages, masked_mean, policy_loss, rloo_advantages


def _log(*p: float) -> torch.Tensor:
    return torch.tensor([[math.log(x) for x in p]], dtype=torch.float64)


def test_group_norm_by_hand() -> None:
    a = group_norm_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    # mean 0.5, unbiased std sqrt(1/3): +-0.5 / 0.57735 = +-0.866025
    assert a.tolist() == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=1e-5)


def test_rloo_by_hand() -> None:
    a = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert a.tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])


@pytest.mark.parametrize("fn", [group_norm_advantages, rloo_advantages])
@pytest.mark.parametrize("rewards", [[1.5, 1.5, 1.5, 1.5], [0.0] * 8, [1.0]])
def test_equal_rewards_give_zero_advantage_without_nan(fn, rewards: list[float]) -> None:
    a = fn(torch.tensor(rewards))
    assert torch.isfinite(a).all()
    assert a.abs().max().item() == 0.0


def test_positive_advantage_clipped_on_both_tokens_and_importance_weighted() -> None:
    logp = _log(0.5, 0.25).requires_grad_()
    out = policy_loss(logp, _log(0.4, 0.1), _log(0.4, 0.05), torch.tensor([1.0], dtype=torch.float64),
                      torch.ones(1, 2))
    # ratio (1.25, 2.5) clipped to 1.2; weights prox/behaviour (1, 2): -(1*1.2 + 2*1.2) / 2
    assert out.loss.item() == pytest.approx(-1.8)
    assert out.clip_fraction == 1.0
    assert (out.importance_mean, out.importance_max) == pytest.approx((1.5, 2.0))
    out.loss.backward()
    assert logp.grad.abs().max().item() == 0.0  # clipped tokens carry no gradient


def test_importance_weight_truncated_at_cap() -> None:
    out = policy_loss(_log(0.5, 0.25), _log(0.4, 0.1), _log(0.4, 0.05), torch.tensor([1.0], dtype=torch.float64),
                      torch.ones(1, 2), importance_cap=1.5)
    assert out.loss.item() == pytest.approx(-(1.2 + 1.5 * 1.2) / 2)
    assert out.importance_max == pytest.approx(1.5)


def test_negative_advantage_dual_clip_caps_the_ratio() -> None:
    logp = _log(0.09, 0.4).requires_grad_()
    out = policy_loss(logp, _log(0.1, 0.1), _log(0.1, 0.1), torch.tensor([-1.0], dtype=torch.float64),
                      torch.ones(1, 2))
    # ratio (0.9, 4.0): surrogate min is (-0.9, -4.0); the dual clip lifts -4.0 to 3 * -1 = -3.0
    assert out.loss.item() == pytest.approx((0.9 + 3.0) / 2)
    assert out.clip_fraction == 0.5
    out.loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.45, 0.0])  # d(ratio/2)/dlogp = ratio/2; capped token none


def test_on_policy_gradient_is_weighted_advantage() -> None:
    # One optimizer step per batch: proximal == current, ratio 1, gradient = -w * A / tokens.
    logp = _log(0.3, 0.6, 0.2).requires_grad_()
    out = policy_loss(logp, logp.detach(), _log(0.6, 0.6, 0.1), torch.tensor([2.0], dtype=torch.float64),
                      torch.ones(1, 3), importance_cap=10.0)
    out.loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.5 * 2 / 3, -1.0 * 2 / 3, -2.0 * 2 / 3])
    assert out.clip_fraction == 0.0


def test_padding_is_ignored_even_when_it_holds_garbage() -> None:
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.3], [0.2, 0.3, 0.3]], dtype=torch.float64))
    prox = torch.log(torch.tensor([[0.4, 0.3, 0.3], [0.25, 0.3, 0.3]], dtype=torch.float64))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    padded_logp = logp.clone()
    padded_logp[1, 1:] = torch.tensor([80.0, -1e30], dtype=torch.float64)
    padded_prox = prox.clone()
    padded_prox[1, 1:] = torch.tensor([-80.0, float("-inf")], dtype=torch.float64)
    padded_logp.requires_grad_()
    got = policy_loss(padded_logp, padded_prox, padded_prox, adv, mask)
    want = policy_loss(logp, prox, prox, adv, mask)
    assert math.isfinite(got.loss.item())
    assert got.loss.item() == pytest.approx(want.loss.item())
    got.loss.backward()
    assert torch.isfinite(padded_logp.grad).all()
    assert padded_logp.grad[1, 1:].abs().max().item() == 0.0
    # token mean: 4 real tokens, not 6 and not a per-sequence mean
    r = torch.exp(logp - prox)
    by_hand = -(torch.min(r[0], r[0].clamp(0.8, 1.2)).sum() * 1.0 + torch.min(r[1, 0] * -0.5, r[1, 0].clamp(0.8, 1.2) * -0.5)) / 4
    assert got.loss.item() == pytest.approx(by_hand.item())


def test_k3_kl_and_entropy_terms() -> None:
    logp = _log(0.5, 0.5)
    ref = _log(1.0, 0.5)  # log r = (log 2, 0): k3 = (2 - log 2 - 1, 0)
    entropy = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    adv = torch.zeros(1, dtype=torch.float64)
    out = policy_loss(logp, logp, logp, adv, torch.ones(1, 2), ref_logprobs=ref, kl_coef=0.1,
                      entropy=entropy, entropy_coef=0.01)
    kl = (1 - math.log(2)) / 2
    assert out.kl == pytest.approx(kl)
    assert out.entropy == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(0.1 * kl - 0.01 * 2.0)
    off = policy_loss(logp, logp, logp, adv, torch.ones(1, 2), ref_logprobs=ref, kl_coef=0.0)
    assert (off.kl, off.loss.item()) == (0.0, 0.0)


def test_masked_mean_of_empty_mask_is_zero() -> None:
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def _agg_case():
    """Two sequences of 1 and 3 tokens, token losses (loss_t = -A * ratio with ratio 1, weight 1): A = 2 and -1."""
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    return logp, mask, torch.tensor([2.0, -1.0], dtype=torch.float64)


@pytest.mark.parametrize(("agg", "expected"), [
    # token losses: seq 0 [-2], seq 1 [1, 1, 1]
    ("seq-mean-token-mean", (-2 / 1 + 3 / 3) / 2),  # mean over sequences of token means = -0.5
    ("token-mean", (-2 + 3) / 4),  # over all 4 tokens = 0.25
    ("seq-mean-token-sum-norm", (-2 + 3) / (8 * 2)),  # token sums / (L_max 8) / 2 sequences
])
def test_loss_aggregations_by_hand(agg: str, expected: float) -> None:
    from services.learner.losses import token_weights

    logp, mask, adv = _agg_case()
    weights = token_weights(mask, agg, sequences=2, tokens=4, max_len=8)
    out = policy_loss(logp, logp.detach(), logp.detach(), adv, mask, weights)
    assert out.loss.item() == pytest.approx(expected)


def test_micro_batch_shares_add_up_to_the_mini_batch_loss() -> None:
    """Each micro batch weighs its tokens by the whole mini-batch's counts, so the shares sum to the loss."""
    from services.learner.losses import token_weights

    logp, mask, adv = _agg_case()
    for agg in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"):
        whole = policy_loss(logp, logp.detach(), logp.detach(), adv, mask, token_weights(mask, agg, 2, 4, 8)).loss
        parts = sum(policy_loss(logp[i : i + 1], logp[i : i + 1].detach(), logp[i : i + 1].detach(), adv[i : i + 1],
                                mask[i : i + 1], token_weights(mask[i : i + 1], agg, 2, 4, 8)).loss for i in range(2))
        assert parts.item() == pytest.approx(whole.item())
