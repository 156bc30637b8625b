"""Teacher-forced log-probs and entropies of response tokens, in chunks along the sequence.

The model runs once over prompt + response rows (rows of different prompts may share a micro batch) and
returns its final hidden states; only the response positions are kept, and the vocabulary projection,
log-softmax and entropy run on `chunk_tokens` positions at a time. With gradients each chunk is
checkpointed: its [rows, chunk, vocab] logits exist during that chunk's forward and again during its
backward, never for the whole sequence. A prompt's image features come in precomputed (once per prompt,
shared by its n samples) and enter the forward through `mm_encoder_outputs`, so pixels are never repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from shared.model.prompts import PromptInputs


@dataclass
class PromptFeatures:
    """A prompt as the language model sees it: token ids and each image's features from the vision tower."""

    input_ids: list[int]
    image_embeds: tuple[torch.Tensor, ...] = ()
    image_grid_thw: torch.Tensor | None = None


@dataclass
class Responses:
    """Response-position hidden states of a micro batch, padded to its longest response."""

    hidden: torch.Tensor  # (rows, tokens, hidden)
    targets: torch.Tensor  # (rows, tokens) the response token ids, 0 on padding
    mask: torch.Tensor  # (rows, tokens) 1 on response tokens


def image_features(model: Any, inputs: PromptInputs) -> PromptFeatures:
    """A prompt's features for `response_hidden`: its image features from `model`'s vision tower (grad as the caller's)."""
    if inputs.pixel_values is None:
        return PromptFeatures(list(inputs.input_ids))
    device = next(model.model.visual.parameters()).device
    out = model.model.get_image_features(inputs.pixel_values.to(device), inputs.image_grid_thw.to(device))
    return PromptFeatures(list(inputs.input_ids), tuple(out.pooler_output), inputs.image_grid_thw)


def response_hidden(model: Callable[..., Any], rows: list[tuple[PromptFeatures, list[int]]], pad_id: int,
                    device: Any) -> Responses:
    """One forward over prompt + response rows (right-padded); the hidden state that predicts each response token.

    `model` is called like the HF Qwen2.5-VL model (the DeepSpeed engine in training). A row's empty response
    is one masked pad token, so every rank still runs the same forward and backward."""
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from shared.model.prompts import mm_token_type_ids

    seqs = [torch.tensor(p.input_ids + (r or [pad_id]), dtype=torch.long) for p, r in rows]
    ids = pad_sequence(seqs, batch_first=True, padding_value=pad_id).to(device)
    attention = pad_sequence([torch.ones_like(s) for s in seqs], batch_first=True).to(device)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attention}
    embeds = [e for p, _ in rows for e in p.image_embeds]
    if embeds:
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=tuple(embeds))}
        kwargs["image_grid_thw"] = torch.cat([p.image_grid_thw for p, _ in rows if p.image_embeds]).to(device)
        kwargs["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id)  # M-RoPE positions
    out = model(**kwargs, output_hidden_states=True, use_cache=False,
                logits_to_keep=torch.zeros(0, dtype=torch.long, device=device))  # no full-vocabulary logits
    hidden = out.hidden_states[-1]
    longest = max(len(r) or 1 for _, r in rows)
    # Position len(prompt) - 1 + t predicts response token t.
    starts = torch.tensor([len(p.input_ids) - 1 for p, _ in rows], device=device)
    index = (starts[:, None] + torch.arange(longest, device=device)[None, :]).clamp(max=ids.shape[1] - 1)
    picked = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
    targets = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest))
    for i, (_, r) in enumerate(rows):
        targets[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return Responses(picked, targets.to(device), mask.to(device))


def _chunk(lm_head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor,
           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and the entropy of one chunk of positions, in fp32."""
    import torch

    logits = lm_head(hidden).float() / temperature
    log_z = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - log_z
    probs = torch.softmax(logits, dim=-1)
    entropy = log_z - (probs * logits).sum(-1)
    return logp, entropy


def token_logprobs(lm_head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor,
                   temperature: float = 1.0, chunk_tokens: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, tokens) log-probs of `targets` and entropies under lm_head(hidden) / temperature, `chunk_tokens`
    positions (summed over rows) at a time; checkpointed per chunk when gradients are on."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    width = max(1, chunk_tokens // max(hidden.shape[0], 1))
    logps, entropies = [], []
    for start in range(0, hidden.shape[1], width):
        h, t = hidden[:, start : start + width], targets[:, start : start + width]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk, lm_head, h, t, temperature, use_reentrant=False)
        else:
            lp, ent = _chunk(lm_head, h, t, temperature)
        logps.append(lp)
        entropies.append(ent)
    if not logps:
        empty = hidden.new_zeros((hidden.shape[0], 0), dtype=torch.float32)
        return empty, empty
    return torch.cat(logps, dim=1), torch.cat(entropies, dim=1)
