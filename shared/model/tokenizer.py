"""The project tokenizer: a small BPE (built with `tokenizers`) over the small world's text, saved as a
PreTrainedTokenizerFast; the table ships as shared/model/tokenizer.json (regenerate: python -m shared.model.tokenizer).

Qwen's chat and vision special tokens and the think/answer tags are single tokens; every character
of CHARS is in the alphabet, so any text the small world produces round-trips exactly. BPE (rather
than characters) keeps prompts and responses short, which is what makes CPU training and rollout fast.
"""

from __future__ import annotations

from pathlib import Path
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
VOCAB_SIZE = 1024  # embedding rows; the trained table holds fewer (the trainer runs out of merges)
TABLE = Path(__file__).with_name("tokenizer.json")


def _training_texts() -> list[str]:
    """Deterministic sample of what the small world says: prompts and worked solutions of every style."""
    import random

    from shared.model.corpus import CorpusMix, render_document
    from shared.model.synthetic import make_problem

    rng = random.Random("tokenizer")
    texts = []
    for _ in range(4000):
        prompt, response = render_document(make_problem(rng), rng, 0, CorpusMix())
        texts += [prompt, response]
    return texts


def train_table(path: Path = TABLE) -> None:
    """Train the BPE table on the small world's text and write it to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    # Numbers are split from what surrounds them, so "120" is the same token in "= 120.", "{120}" and
    # "<answer>120</answer>": copying the value into the answer is then an identity for the model.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="merged_with_next"), pre_tokenizers.Digits(individual_digits=False)]
    )
    core.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,
        initial_alphabet=CHARS,
        limit_alphabet=len(CHARS),
        show_progress=False,
    )
    core.train_from_iterator(_training_texts(), trainer=trainer)
    core.save(str(path))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer from the shipped table: same ids on every machine."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(TABLE)),
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<unk>", "<|endoftext|>", "<|im_end|>")],
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    tok.add_tokens(TAG_TOKENS)  # already in the table: registers them as unsplittable, not special
    tok.padding_side = "left"
    return tok


if __name__ == "__main__":
    train_table()
    print(f"wrote {TABLE}")
