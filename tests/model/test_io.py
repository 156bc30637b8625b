"""Loading, saving and the project tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_save_load_round_trip_gives_same_logits(tiny, tmp_path: Path) -> None:
    from shared.model.io import load_model, load_tokenizer, save_model

    model, tok = tiny
    ids = torch.tensor([tok("<|im_start|>user\nhow many? 3+4<|im_end|>")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    save_model(model, tok, tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    with torch.no_grad():
        after = again(input_ids=ids).logits
    assert torch.equal(before, after)
    assert load_tokenizer(tmp_path / "copy")("abc<think>")["input_ids"] == tok("abc<think>")["input_ids"]


def test_checkpoint_opens_in_plain_transformers(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert 500_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    assert (tiny_dir / "model.safetensors").is_file()


def test_vision_frozen_by_default_and_unfrozen_on_request(tiny_dir: Path) -> None:
    from shared.model.io import load_model

    frozen = load_model(tiny_dir)
    assert not any(p.requires_grad for p in frozen.model.visual.parameters())
    assert all(p.requires_grad for p in frozen.model.language_model.parameters())
    assert all(p.requires_grad for p in load_model(tiny_dir, freeze_vision=False).model.visual.parameters())


def test_tokenizer_round_trips_text_and_keeps_tags_single(tiny) -> None:
    _, tok = tiny
    text = "<think>3 red circles, wait: re-check. 40°</think><answer>3</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    for tag in ("<think>", "</think>", "<answer>", "</answer>", "<|im_end|>", "<|image_pad|>"):
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    assert tok.decode(tok("<|im_start|>x<|im_end|>")["input_ids"], skip_special_tokens=True) == "x"


def test_stop_and_suppressed_ids(tiny) -> None:
    from shared.model.io import generation_stop_ids, suppressed_token_ids

    _, tok = tiny
    assert generation_stop_ids(tok) == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tok.convert_tokens_to_ids("<|image_pad|>") in suppressed_token_ids(tok)
    assert not set(generation_stop_ids(tok)) & set(suppressed_token_ids(tok))


def test_bad_dtype_and_missing_dir_have_sentences(tiny_dir: Path, tmp_path: Path) -> None:
    from shared.model.io import load_model

    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_dir, dtype="int3")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_make_random_tiny_is_deterministic_by_seed(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from shared.model.io import make_random_tiny

    a = load_file(make_random_tiny(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(make_random_tiny(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(make_random_tiny(tmp_path / "c", seed=4) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
