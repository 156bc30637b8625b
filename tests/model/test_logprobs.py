"""response_logprobs against a manual forward, gradients, entropy, temperature, and generation."""

from __future__ import annotations

import json

import torch

from eureka.v1 import common_pb2


def _inputs(tok, png):
    from shared.model.prompts import build_prompt_inputs

    p = common_pb2.Prompt(
        prompt_id="t",
        messages_json=json.dumps([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "2+3?"}]}]),
        images=[common_pb2.ImageRef(data=png())],
    )
    return build_prompt_inputs(p, tok)


def _manual(model, inputs, response, temperature=1.0):
    ids = torch.tensor([inputs.input_ids + response])
    with torch.no_grad():
        types = (ids == model.config.image_token_id).int()  # Qwen2.5-VL's M-RoPE positions for the image tokens
        logits = model(input_ids=ids, pixel_values=inputs.pixel_values, image_grid_thw=inputs.image_grid_thw,
                       mm_token_type_ids=types).logits
    logp = torch.log_softmax(logits[0].float() / temperature, -1)
    p = len(inputs.input_ids)
    return torch.stack([logp[p - 1 + t, tok] for t, tok in enumerate(response)])


def test_matches_manual_forward_per_response(tiny, png) -> None:
    from shared.model.logprobs import response_logprobs

    model, tok = tiny
    inputs = _inputs(tok, png)
    responses = [tok("<think>5</think><answer>5</answer>")["input_ids"], tok("4")["input_ids"], []]
    with torch.no_grad():
        got = response_logprobs(model, inputs, responses, temperature=0.7)
    assert [len(g) for g in got] == [len(r) for r in responses]
    for g, r in zip(got[:2], responses[:2]):
        torch.testing.assert_close(g, _manual(model, inputs, r, 0.7), atol=1e-4, rtol=1e-4)
    assert torch.all(got[0] < 0)


def test_gradients_flow_and_entropy_is_valid(tiny, png) -> None:
    from shared.model.logprobs import response_logprobs

    model, tok = tiny
    inputs = _inputs(tok, png)
    logps, ents = response_logprobs(model, inputs, [tok("12")["input_ids"], tok("7")["input_ids"]], with_entropy=True)
    (-(logps[0].sum() + logps[1].sum())).backward()
    grad = model.model.language_model.embed_tokens.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.model.visual.parameters())  # frozen
    vocab = model.config.text_config.vocab_size
    assert all(torch.all((e >= 0) & (e <= torch.log(torch.tensor(float(vocab))) + 1e-4)) for e in ents)
    model.zero_grad(set_to_none=True)


def test_generate_never_emits_suppressed_tokens(tiny, png) -> None:
    from shared.model.io import generation_stop_ids, suppressed_token_ids

    model, tok = tiny
    inputs = _inputs(tok, png)
    torch.manual_seed(0)
    out = model.generate(
        input_ids=torch.tensor([inputs.input_ids] * 4),
        pixel_values=inputs.pixel_values.repeat(4, 1),
        image_grid_thw=inputs.image_grid_thw.repeat(4, 1),
        do_sample=True,
        temperature=1.5,
        max_new_tokens=40,
        suppress_tokens=suppressed_token_ids(tok),
        eos_token_id=generation_stop_ids(tok),
        pad_token_id=tok.pad_token_id,
    )
    new = out[:, len(inputs.input_ids) :]
    assert new.shape[1] > 0
    assert not set(new.flatten().tolist()) & set(suppressed_token_ids(tok))
