"""The vllm backend on the real engine: behaviour log-probs, in-place weight versions, caches, image sizes."""

from __future__ import annotations

import pytest
import torch

from services.rollout.backends.base import WeightLoadError
from shared.model.images import image_token_count
from tests.rollout.conftest import perturbed
from tests.vllm.conftest import generate, hf_model, image_prompt, text_prompt, worst_diff

pytestmark = pytest.mark.vllm
BOUND = 1e-3  # float32


def test_logprobs_match_teacher_forcing_for_image_and_text_in_one_batch(engine, tiny_vllm_path):
    prompts = [image_prompt((56, 84), seed=0), text_prompt(2), image_prompt((120, 90), seed=1, pid="img:1")]
    inputs, out = generate(engine, prompts, n=2)
    diff = worst_diff(hf_model(tiny_vllm_path), inputs, out)
    print(f"vllm behaviour vs teacher-forced HF, image + text batch: max abs diff {diff:.2e}")
    assert diff < BOUND


@pytest.mark.parametrize("size", [(12, 20), (1600, 1300)], ids=["below-min-pixels", "above-max-pixels"])
def test_image_grid_and_token_count_equal_the_projects(engine, tiny_vllm_path, size):
    from transformers import AutoProcessor

    from shared.model.images import preprocess_images
    from shared.model.prompts import load_image

    p = image_prompt(size, seed=3)
    inputs, out = generate(engine, [p], n=1)
    _, grid = preprocess_images([load_image(p.images[0].data)], engine.recipe.min_pixels, engine.recipe.max_pixels)
    vllm_processor = AutoProcessor.from_pretrained(str(tiny_vllm_path), **engine.mm_processor_kwargs)
    theirs = vllm_processor.image_processor(images=[load_image(p.images[0].data)], return_tensors="pt")
    assert theirs["image_grid_thw"].tolist() == grid.tolist() == inputs[0].image_grid_thw.tolist()
    from vllm import SamplingParams

    from services.rollout.backends.base import GenRequest

    seen = engine.llm.generate([engine.engine_prompt(GenRequest(p, inputs[0]))], SamplingParams(max_tokens=1),
                               use_tqdm=False)[0].prompt_token_ids
    assert len(seen) == len(inputs[0].input_ids)
    pads = seen.count(engine.image_pad_id)
    assert pads == image_token_count(grid)[0]
    pixels = grid[0, 1].item() * grid[0, 2].item() * 14 * 14
    assert engine.recipe.min_pixels <= pixels <= engine.recipe.max_pixels


def test_a_bad_version_is_refused_naming_its_first_bad_tensor(engine, tiny_vllm_path):
    good = hf_model(tiny_vllm_path).state_dict()  # the served version (tests that load others load this one back)
    before = generate(engine, [text_prompt(3)], n=1)
    with pytest.raises(WeightLoadError, match=r"tensor model\.language_model\.layers\.0\.mlp\.gate_prj\.weight is not"):
        engine.load_weights({**good, "model.language_model.layers.0.mlp.gate_prj.weight": torch.zeros(256, 128)})
    bad_shape = dict(good)
    bad_shape["model.visual.blocks.1.attn.qkv.weight"] = torch.zeros(192, 65)
    with pytest.raises(WeightLoadError, match=r"tensor model\.visual\.blocks\.1\.attn\.qkv\.weight has shape \(192, 65\)"):
        engine.load_weights(bad_shape)
    untied = dict(good)
    untied["lm_head.weight"] = good["lm_head.weight"] + 1.0
    with pytest.raises(WeightLoadError, match="tied"):
        engine.load_weights(untied)
    after = generate(engine, [text_prompt(3)], n=1)
    assert worst_diff(hf_model(tiny_vllm_path), *after) < BOUND  # still the old version
    assert before[0][0].input_ids == after[0][0].input_ids
