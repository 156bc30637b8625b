"""Chunked log-probs and entropies (image features once per prompt) against the full-vocabulary computation."""

from __future__ import annotations

import pytest
import torch

from services.learner.logprobs import image_features, response_hidden, token_logprobs


def _prompts(tiny_model):
    from PIL import Image

    from shared.model.images import preprocess_images
    from shared.model.io import load_model, load_tokenizer
    from shared.model.prompts import IMAGE_PLACEHOLDER, PromptInputs
    from shared.model.images import image_token_count

    model, tok = load_model(tiny_model), load_tokenizer(tiny_model)
    pixels, grid = preprocess_images([Image.new("RGB", (56, 56), (200, 30, 90))])
    text = IMAGE_PLACEHOLDER.replace("<|image_pad|>", "<|image_pad|>" * image_token_count(grid)[0]) + "How many?"
    with_image = PromptInputs(tok(text, add_special_tokens=False)["input_ids"], pixels, grid)
    plain = PromptInputs(tok("What is 2 + 3?", add_special_tokens=False)["input_ids"], None, None)
    return model, [with_image, plain]


def _rows():
    g = torch.Generator().manual_seed(0)
    return [(0, torch.randint(20, 200, (n,), generator=g).tolist()) for n in (7, 3)] + \
           [(1, torch.randint(20, 200, (n,), generator=g).tolist()) for n in (5, 9)]


@pytest.mark.parametrize("chunk_tokens", [1, 5, 64])
def test_chunked_equals_full_with_gradients(tiny_model, chunk_tokens: int) -> None:
    from shared.model.logprobs import response_logprobs

    torch.manual_seed(0)
    model, prompts = _prompts(tiny_model)
    model.train(False)
    rows = _rows()
    # Full: one padded forward per prompt with its pixels repeated per sample, [rows, tokens, vocab] logits.
    full_lp, full_ent = [], []
    for p, inputs in enumerate(prompts):
        lp, ent = response_logprobs(model, inputs, [r for q, r in rows if q == p], temperature=0.7, with_entropy=True)
        full_lp += lp
        full_ent += ent
    model.zero_grad()
    full_loss = sum((lp * (i + 1)).sum() + 0.1 * e.sum() for i, (lp, e) in enumerate(zip(full_lp, full_ent)))
    full_loss.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    feats = [image_features(model, p) for p in prompts]  # once per prompt, shared by its samples
    out = response_hidden(model, [(feats[q], r) for q, r in rows], pad_id=0, device="cpu")
    lp, ent = token_logprobs(model.lm_head, out.hidden, out.targets, temperature=0.7, chunk_tokens=chunk_tokens)
    for i, (_, r) in enumerate(rows):
        assert torch.allclose(lp[i, : len(r)], full_lp[i], atol=1e-5)
        assert torch.allclose(ent[i, : len(r)], full_ent[i], atol=1e-5)
    weights = torch.arange(1, len(rows) + 1, dtype=lp.dtype)[:, None]
    loss = ((lp * weights + 0.1 * ent) * out.mask).sum()
    assert loss.item() == pytest.approx(full_loss.item(), abs=1e-4)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == full_grads.keys()
    for name, g in full_grads.items():
        assert torch.allclose(grads[name], g, atol=1e-5), name


def test_no_full_vocabulary_logits_in_the_forward(tiny_model) -> None:
    """response_hidden asks the model for no logits; token_logprobs never holds more than a chunk's."""
    model, prompts = _prompts(tiny_model)
    seen: list[tuple[int, ...]] = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    feats = [image_features(model, p) for p in prompts]
    rows = _rows()
    out = response_hidden(model, [(feats[q], r) for q, r in rows], pad_id=0, device="cpu")
    assert all(shape[1] == 0 for shape in seen)  # the model's own projection: zero positions
    token_logprobs(model.lm_head, out.hidden, out.targets, chunk_tokens=8)
    hook.remove()
    assert max(s[0] * s[1] for s in seen) <= 8
