"""The hf backend alone: behaviour log-probs equal a teacher-forced pass, stop/suppress rules, atomic weight loads."""

from __future__ import annotations

import io
import json
import threading

import pytest
import torch
from eureka.v1 import common_pb2
from PIL import Image

from services.rollout.backends.base import GenerationAborted, GenRequest, SamplingSpec, WeightLoadError, finish
from services.rollout.backends.hf import HfBackend
from shared.model.io import suppressed_token_ids
from shared.model.logprobs import response_logprobs
from shared.model.prompts import build_prompt_inputs
from tests.rollout.conftest import perturbed


@pytest.fixture(scope="module")
def backend(tiny_path) -> HfBackend:
    torch.manual_seed(0)
    return HfBackend(str(tiny_path))


def image_prompt() -> common_pb2.Prompt:
    buf = io.BytesIO()
    Image.new("RGB", (56, 84), (200, 10, 10)).save(buf, "PNG")
    msgs = [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "How many?"}]}]
    return common_pb2.Prompt(prompt_id="img:0", messages_json=json.dumps(msgs), answer="3",
                             images=[common_pb2.ImageRef(data=buf.getvalue())])


def text_prompt() -> common_pb2.Prompt:
    msgs = [{"role": "user", "content": "1+1?"}]
    return common_pb2.Prompt(prompt_id="txt:0", messages_json=json.dumps(msgs), answer="2")


def sample(backend: HfBackend, inputs, n: int, max_new_tokens: int, abort: threading.Event | None = None):
    spec = SamplingSpec(n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return backend.generate([GenRequest(text_prompt(), inputs)], spec, abort or threading.Event())[0]


def max_diff(backend: HfBackend, inputs, completions, temperature: float) -> float:
    with torch.no_grad():
        ref = response_logprobs(backend.model, inputs, [c.token_ids for c in completions], temperature=temperature)
    return max((torch.tensor(c.logprobs) - r.cpu()).abs().max().item() for c, r in zip(completions, ref, strict=True))


def image_and_text_batch(backend: HfBackend, n: int, max_new_tokens: int, temperature: float) -> float:
    """An image and a text prompt generated in one batch, `n` samples each; the largest |behaviour - teacher-forced|."""
    prompts = (image_prompt(), text_prompt())
    inputs = [build_prompt_inputs(p, backend.tokenizer) for p in prompts]
    spec = SamplingSpec(n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    out = backend.generate([GenRequest(p, i) for p, i in zip(prompts, inputs, strict=True)], spec, threading.Event())
    assert [len(group) for group in out] == [n, n]
    assert all(c.token_ids for group in out for c in group)
    return max(max_diff(backend, i, group, temperature) for i, group in zip(inputs, out, strict=True))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_match_teacher_forcing_with_images(backend, temperature):
    diff = image_and_text_batch(backend, n=4, max_new_tokens=24, temperature=temperature)
    print(f"T={temperature}: behaviour vs teacher-forced max abs diff {diff:.3e}")
    assert diff < 1e-4


def test_checkpoint_generation_config_does_not_leak_into_sampling(backend):
    # A checkpoint asking for greedy-ish sampling with a repetition penalty (as Qwen's release does) must not
    # change what is sampled or recorded: the recorded log-probs still equal the plain tempered softmax.
    saved = backend.model.generation_config
    backend.model.generation_config = type(saved)(**{**saved.to_dict(), "repetition_penalty": 3.0, "top_k": 1,
                                                      "temperature": 0.1, "do_sample": False})
    try:
        inputs = build_prompt_inputs(text_prompt(), backend.tokenizer)
        out = sample(backend, inputs, 6, 24)
    finally:
        backend.model.generation_config = saved
    assert max_diff(backend, inputs, out, 1.0) < 1e-4
    assert len({tuple(c.token_ids) for c in out}) > 1  # sampled, not greedy


def test_stop_tokens_end_responses_and_vision_tokens_are_never_generated(backend):
    inputs = build_prompt_inputs(text_prompt(), backend.tokenizer)
    spec = SamplingSpec(n=16, temperature=1.5, top_p=1.0, max_new_tokens=48)
    out = backend.generate([GenRequest(text_prompt(), inputs)], spec, threading.Event())[0]
    stops, banned = set(backend.stop_ids), set(suppressed_token_ids(backend.tokenizer))
    assert any(c.finish_reason == "stop" for c in out)  # the untrained model stops now and then
    for c in out:
        assert not banned & set(c.token_ids)
        assert not stops & set(c.token_ids[:-1])
        assert (c.token_ids[-1] in stops) == (c.finish_reason == "stop")
        assert c.finish_reason == "stop" or len(c.token_ids) == spec.max_new_tokens


def test_finish_cuts_at_the_first_stop_and_refuses_a_short_row_without_one():
    c = finish([5, 9, 2, 0, 0], [-1.0, -2.0, -3.0, -4.0, -5.0], {2, 0}, 5)
    assert (c.token_ids, c.logprobs, c.finish_reason) == ([5, 9, 2], [-1.0, -2.0, -3.0], "stop")
    assert finish([5, 9, 7], [-1.0] * 3, {2}, 3).finish_reason == "length"
    with pytest.raises(GenerationAborted):
        finish([5, 9], [-1.0] * 2, {2}, 3)


def test_abort_stops_generation(backend):
    abort = threading.Event()
    abort.set()
    inputs = build_prompt_inputs(text_prompt(), backend.tokenizer)
    with pytest.raises(GenerationAborted):
        sample(backend, inputs, 2, 8, abort)


def test_weight_load_is_all_or_nothing(tiny_path):
    b = HfBackend(str(tiny_path))
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    bad_shape = {k: v.clone() for k, v in before.items()}
    name = next(k for k in bad_shape if k.endswith("q_proj.weight"))
    bad_shape[name] = torch.zeros(3, 3)
    unknown = {**{k: v + 1 for k, v in before.items()}, "not.a.weight": torch.zeros(1)}
    for sd, words in ((bad_shape, "shape"), (unknown, "not in the served model"), ({}, "empty")):
        with pytest.raises(WeightLoadError, match=words):
            b.load_weights(sd)
        assert all(torch.equal(before[k], v) for k, v in b.model.state_dict().items())
    new = perturbed(tiny_path, seed=3)
    b.load_weights(new)
    assert all(torch.equal(new[k], v) for k, v in b.model.state_dict().items())
    inputs = build_prompt_inputs(text_prompt(), b.tokenizer)
    assert max_diff(b, inputs, sample(b, inputs, 2, 8), 1.0) < 1e-4  # recorded under the new weights


def test_tied_weights_must_arrive_equal(tiny_path):
    b = HfBackend(str(tiny_path))
    sd = {k: v.clone() for k, v in b.model.state_dict().items()}
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(WeightLoadError, match="tied"):
        b.load_weights(sd)
