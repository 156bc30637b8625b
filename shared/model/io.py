"""Load and save Qwen2.5-VL checkpoints (HF layout, safetensors) and make the tiny project model.

Any local checkpoint directory works (a real Qwen2.5-VL on a GPU machine or the tiny base here);
what is saved opens again in plain `transformers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.model.images import MAX_PIXELS, MIN_PIXELS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLForConditionalGeneration

_DTYPES = ("float32", "bfloat16", "float16")

# The tiny architecture shared by make_random_tiny and the tiny base (make-base).
TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
)
TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=2,
    out_hidden_size=128,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
)


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _check_dir(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a checkpoint directory (no config.json); pass a saved model directory")
    return p


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved next to the model (left padding, as generation wants)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(_check_dir(path)))
    tok.padding_side = "left"
    return tok


def load_model(
    path: str | Path, dtype: str = "float32", device: str = "cpu", freeze_vision: bool = True
) -> Qwen2_5_VLForConditionalGeneration:
    """A Qwen2.5-VL model in eval mode; the vision tower's parameters frozen when asked."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load floods service logs
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(_check_dir(path)), dtype=_torch_dtype(dtype))
    model.to(device)
    model.eval()
    set_vision_frozen(model, freeze_vision)
    return model


def set_vision_frozen(model: Any, frozen: bool) -> None:
    """Freeze (or unfreeze) the vision tower, merger included."""
    for p in model.model.visual.parameters():
        p.requires_grad_(not frozen)


def save_model(model: Any, tokenizer: Any, path: str | Path, min_pixels: int = MIN_PIXELS,
               max_pixels: int = MAX_PIXELS) -> None:
    """Save weights (safetensors, in the model's dtype), config, tokenizer and the processor files in the HF layout."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(p), safe_serialization=True)
    tokenizer.save_pretrained(str(p))
    write_processor_files(p, tokenizer, min_pixels, max_pixels)


# Qwen2-VL's chat layout (render_chat's, no default system prompt): each image part is one placeholder.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_processor_files(path: str | Path, tokenizer: Any, min_pixels: int = MIN_PIXELS,
                          max_pixels: int = MAX_PIXELS) -> None:
    """What vLLM and `AutoProcessor` need beside the weights: `preprocessor_config.json` (the image bounds the
    project resizes to), `chat_template.jinja`, and a `generation_config.json` stopping at the stop tokens."""
    import json

    from shared.model import images

    p = Path(path)
    processor = {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "do_convert_rgb": True, "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(images.IMAGE_MEAN), "image_std": list(images.IMAGE_STD),
        "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": images.PATCH_SIZE, "temporal_patch_size": images.TEMPORAL_PATCH_SIZE,
        "merge_size": images.MERGE_SIZE,
    }
    (p / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    (p / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    if not (p / "generation_config.json").is_file():
        stops = generation_stop_ids(tokenizer)
        config = {"eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id, "do_sample": True}
        (p / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")


def generation_stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a response: `<|im_end|>` and `<|endoftext|>`."""
    return [_token_id(tokenizer, t) for t in ("<|im_end|>", "<|endoftext|>")]


def suppressed_token_ids(tokenizer: Any) -> list[int]:
    """Image/video/vision special tokens: never generated (a generated pad token breaks the vision forward)."""
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>")
    ids = [tokenizer.convert_tokens_to_ids(t) for t in names]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def _token_id(tokenizer: Any, token: str) -> int:
    i = tokenizer.convert_tokens_to_ids(token)
    if i is None or (i == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"tokenizer has no {token} token; use a Qwen2.5-VL tokenizer")
    return int(i)


def tiny_config(tokenizer: Any) -> Any:
    """The tiny Qwen2.5-VL config over the project tokenizer (about 1.3M parameters)."""
    from transformers import Qwen2_5_VLConfig

    from shared.model.tokenizer import VOCAB_SIZE

    ids = {t: _token_id(tokenizer, t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    eos, pad = _token_id(tokenizer, "<|im_end|>"), _token_id(tokenizer, "<|endoftext|>")
    text = dict(TINY_TEXT, vocab_size=VOCAB_SIZE, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(TINY_VISION),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def new_tiny_model(seed: int = 0) -> tuple[Any, Any]:
    """An untrained tiny model and the project tokenizer (deterministic by seed)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from shared.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = tiny_config(tok)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=generation_stop_ids(tok), pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.eval()
    return model, tok


def make_random_tiny(path: str | Path, seed: int = 0) -> Path:
    """Write an UNTRAINED tiny Qwen2.5-VL and the project tokenizer to `path`; returns the path."""
    model, tok = new_tiny_model(seed)
    save_model(model, tok, path)
    return Path(path)
