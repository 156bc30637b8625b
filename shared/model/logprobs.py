"""Teacher-forced per-token log-probs (and entropies) of responses given one prompt, in one padded forward."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from shared.model.prompts import PromptInputs


def batch_inputs(model: Any, inputs: PromptInputs, responses: list[list[int]]) -> dict[str, Any]:
    """Model kwargs for prompt + each response, right-padded (the prompt sits at the same positions in every row)."""
    import torch

    from shared.model.prompts import mm_token_type_ids

    prompt = list(inputs.input_ids)
    seqs = [prompt + list(r) for r in responses]
    width = max(len(s) for s in seqs)
    pad = model.config.text_config.pad_token_id or 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if inputs.pixel_values is not None:
        kwargs["pixel_values"] = inputs.pixel_values.to(device).repeat(len(seqs), 1)
        kwargs["image_grid_thw"] = inputs.image_grid_thw.to(device).repeat(len(seqs), 1)
        kwargs["mm_token_type_ids"] = mm_token_type_ids(kwargs["input_ids"], model.config.image_token_id)
    return kwargs


def response_logprobs(
    model: Any,
    inputs: PromptInputs,
    responses: list[list[int]],
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
    """log p(response_i[t] | prompt, response_i[:t]) for each response (logits / temperature).

    Gradients flow when grad is enabled. With `with_entropy`, also the entropy of each position's
    distribution.
    """
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not responses:
        return ([], []) if with_entropy else []
    p = len(inputs.input_ids)
    if p == 0:
        raise ValueError("the prompt has no tokens")
    longest = max(len(r) for r in responses)
    if longest == 0:
        empty = [torch.zeros(0) for _ in responses]
        return (empty, [torch.zeros(0) for _ in responses]) if with_entropy else empty
    out = model(**batch_inputs(model, inputs, responses), use_cache=False)
    # Position p-1+t predicts response token t.
    logits = out.logits[:, p - 1 : p - 1 + longest, :].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = torch.zeros((len(responses), longest), dtype=torch.long, device=logits.device)
    for i, r in enumerate(responses):
        targets[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    token_logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logps = [token_logp[i, : len(r)] for i, r in enumerate(responses)]
    if not with_entropy:
        return logps
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps, [entropy[i, : len(r)] for i, r in enumerate(responses)]
