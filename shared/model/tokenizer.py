"""The project's character-level tokenizer (built with `tokenizers`, saved as a PreTrainedTokenizerFast).

Qwen's chat and vision special tokens and the think/answer tags are single tokens; every other
character is one token, so any text the small world produces round-trips exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Special tokens (never split, removed by skip_special_tokens) in id order, then the tags (kept on decode).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
]
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
EXTRA_CHARS = "°×÷√π∠△·−≤≥"
CHARS = ["\n"] + [chr(c) for c in range(32, 127)] + list(EXTRA_CHARS)
# Spare rows keep the embedding a multiple of 8 and leave room for later tokens without resizing.
VOCAB_SIZE = 128


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer, deterministically: same ids on every machine."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + TAG_TOKENS + CHARS)}
    assert len(vocab) <= VOCAB_SIZE, "character table grew past VOCAB_SIZE"
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<unk>", "<|endoftext|>", "<|im_end|>")],
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    tok.add_tokens(TAG_TOKENS)  # already in the vocab: registers them as unsplittable, not special
    tok.padding_side = "left"
    return tok
