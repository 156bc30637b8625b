"""Prompt building: chat template, image pads expanded to the grid, modes and limits."""

from __future__ import annotations

import json

import pytest
import torch

from eureka.v1 import common_pb2


def _prompt(png, n_images: int = 1, text: str = "How many red circles?", parts: bool = True) -> common_pb2.Prompt:
    content = ([{"type": "image"}] * n_images if parts else []) + [{"type": "text", "text": text}]
    return common_pb2.Prompt(
        prompt_id="t:0:0",
        messages_json=json.dumps([{"role": "user", "content": content}]),
        answer="1",
        images=[common_pb2.ImageRef(data=png(100 + 30 * i, 80)) for i in range(n_images)],
    )


def test_image_pads_expand_to_grid(tiny, png) -> None:
    from shared.model.prompts import QWEN_DEFAULT_SYSTEM_PROMPT, build_prompt_inputs

    _, tok = tiny
    inputs = build_prompt_inputs(_prompt(png, 2), tok)
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    grid = inputs.image_grid_thw
    assert grid.tolist() == [[1, 6, 8], [1, 6, 10]]  # 80x100 -> 84x112, 80x130 -> 84x140
    assert inputs.input_ids.count(pad) == int(grid.prod(-1).sum()) // 4
    assert inputs.pixel_values.shape == (int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    text = tok.decode(inputs.input_ids)
    assert text.startswith("<|im_start|>system\n" + QWEN_DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert text.endswith("How many red circles?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|vision_start|>") == 2


def test_images_without_parts_go_first_and_model_accepts_them(tiny, png) -> None:
    from shared.model.prompts import build_prompt_inputs

    model, tok = tiny
    inputs = build_prompt_inputs(_prompt(png, 1, parts=False), tok)
    assert tok.decode(inputs.input_ids).count("<|vision_start|>") == 1
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([inputs.input_ids]),
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.image_grid_thw,
        )
    assert out.logits.shape[1] == len(inputs.input_ids)


def test_system_prompt_of_a_chat_without_one(tiny, png) -> None:
    """Qwen's default unless the recipe sets one ("" for none); a chat's own system message always wins."""
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, QWEN_DEFAULT_SYSTEM_PROMPT, build_prompt_inputs

    _, tok = tiny

    def system(prompt: common_pb2.Prompt, **kw) -> str:
        text = tok.decode(build_prompt_inputs(prompt, tok, **kw).input_ids)
        return text.split("<|im_end|>")[0].removeprefix("<|im_start|>system\n") if "system" in text else ""

    plain, own = _prompt(png, 0), _prompt(png, 0)
    own.messages_json = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}])
    assert system(plain) == QWEN_DEFAULT_SYSTEM_PROMPT
    assert system(plain, system_prompt=INSTRUCT_SYSTEM_PROMPT) == INSTRUCT_SYSTEM_PROMPT
    assert system(plain, system_prompt="") == ""
    assert system(plain, mode="boxed", system_prompt="Reason.") == "Reason."
    assert system(own, system_prompt=INSTRUCT_SYSTEM_PROMPT) == system(own) == "Be brief."


def test_boxed_prompt_has_the_suffix_and_no_system(tiny, png) -> None:
    from shared.model.prompts import PRETRAINED_PROMPT_SUFFIX, build_prompt_inputs

    _, tok = tiny
    text = tok.decode(build_prompt_inputs(_prompt(png, 0), tok, mode="boxed").input_ids)
    assert "system" not in text and "\\boxed{}" in PRETRAINED_PROMPT_SUFFIX
    assert text.endswith(PRETRAINED_PROMPT_SUFFIX + "<|im_end|>\n<|im_start|>assistant\n")


def test_pretrained_mode_is_plain_text_that_states_its_format(tiny, png) -> None:
    from services.reward.core import format_score
    from shared.model.prompts import build_prompt_inputs

    _, tok = tiny
    inputs = build_prompt_inputs(_prompt(png, 1), tok, mode="pretrained")
    text = tok.decode(inputs.input_ids)
    assert "<|im_start|>" not in text and "<|im_end|>" not in text and "system" not in text
    assert text.startswith("A conversation between User and Assistant.") and text.endswith("\nAssistant: ")
    assert "<|vision_start|>" in text and inputs.pixel_values is not None
    # the layout the prompt shows is the one the pretrained format reward scores 1 (answer boxed in the tag)
    shown = text[text.index("i.e., ") + len("i.e., "): text.index(".\nUser:")]
    assert format_score(shown, "pretrained", min_think_chars=0) == 1.0
    assert format_score(shown.replace("\\boxed{answer here}", "answer here"), "pretrained", 0) == 0.0


def test_errors_are_sentences(tiny, png) -> None:
    from shared.model.prompts import build_prompt_inputs

    _, tok = tiny
    with pytest.raises(ValueError, match="max_prompt_tokens=50"):
        build_prompt_inputs(_prompt(png, 1), tok, max_prompt_tokens=50)
    with pytest.raises(ValueError, match="not valid JSON"):
        build_prompt_inputs(common_pb2.Prompt(prompt_id="x", messages_json="{oops"), tok)
    with pytest.raises(ValueError, match="refers to 2 images"):
        p = _prompt(png, 2)
        del p.images[1]
        build_prompt_inputs(p, tok)
    with pytest.raises(ValueError, match="mode"):
        build_prompt_inputs(_prompt(png, 0), tok, mode="chatty")
    with pytest.raises(ValueError, match="not a readable image"):
        p = _prompt(png, 1)
        p.images[0].data = b"not a png"
        build_prompt_inputs(p, tok)


def test_image_from_uri(tiny, png, tmp_path) -> None:
    from shared.model.prompts import build_prompt_inputs

    _, tok = tiny
    f = tmp_path / "a.png"
    f.write_bytes(png())
    p = _prompt(png, 1)
    p.images[0].CopyFrom(common_pb2.ImageRef(uri=f"file://{f}"))
    assert build_prompt_inputs(p, tok).image_grid_thw.tolist() == [[1, 6, 8]]
    p.images[0].CopyFrom(common_pb2.ImageRef(uri=str(tmp_path / "missing.png")))
    with pytest.raises(ValueError, match="does not exist"):
        build_prompt_inputs(p, tok)
