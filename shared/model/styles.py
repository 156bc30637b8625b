"""Corpus version 10 (the v3 world): every solution style under the same prompt, all final answers correct.

Styles of the think section (docs/MODEL.md gives the shares and why):
- `direct`: "Quick answer: 11." (short; right on easy items, a guess on hard ones);
- `step`: "Step by step: The number is 2. 3 left. 2 + 3 = 5, 2 left. 5 + 3 = 8, 1 left. 8 + 3 = 11, 0 left.";
- `checked`: the steps, each sum checked by counting on from its first number ("2 + 3 = 5, let me check: 3 2,
  4 1, 5 0."), the pass going on from where the count ends;
- `slip`: as checked, with one sum off (not trained on): the count ends elsewhere, and "Wait, 2 + 3 = 5, not
  6." fixes it where it happens.
Every style's answer is the last result written just before it.
The checked and slip styles open alike ("Work, then check:"): checking is one decision at the first word,
and it pays off in the base's own samples (the gate in tests/model/test_eval.py).
Prompts: the instruct system prompt with the think/answer layout, the chat with the `\\boxed{}` suffix, or
(the pretrained-mode base, no chat data) plain text with or without the R1-zero template.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from shared.model.multistep import Chain, ChainProblem

STYLES_V3 = ("direct", "step", "checked", "slip")
OPENERS = {"direct": "Quick answer:", "step": "Step by step:", "checked": "Work, then check:", "slip": "Work, then check:"}


@dataclass(frozen=True)
class StyleMix:
    """Shares of the solution styles (direct is the plurality: greedy decoding of the base answers directly)."""

    direct: float = 0.40
    step: float = 0.15
    checked: float = 0.25
    slip: float = 0.20
    boxed: float = 0.20  # chat corpus: share under the \\boxed{} prompt (the rest: the instruct prompt, tagged)
    template: float = 0.50  # plain corpus: share under the R1-zero template (the rest: the bare question)
    tagged: float = 0.50  # plain corpus, under the template: share in the think/answer layout

    def pick(self, rng: random.Random) -> str:
        r = rng.random() * (self.direct + self.step + self.checked + self.slip)
        for name in STYLES_V3:
            r -= getattr(self, name)
            if r < 0:
                return name
        return "step"


NO_CHECKS = StyleMix(direct=0.55, step=0.45, checked=0.0, slip=0.0)  # the ablation's corpus: direct stays the plurality


def _count_on(a: int, x: int) -> str:
    """`a + x` counted on by ones with a countdown of what is left to add: `10 2, 11 1, 12 0` for 9 + 3."""
    return ", ".join(f"{a + j} {x - j}" for j in range(1, x + 1))


def _checked_steps(c: Chain, rng: random.Random, slip_at: int | None) -> list[tuple[str, bool]]:
    """The steps of a pass that checks each sum by counting on from its first number (`9 + 3 = 12, let me check:
    10 2, 11 1, 12 0. 2 left.`) and goes on from where the count ends. At `slip_at` the sum is off by 1 or 2
    (not trained on): the count ends elsewhere and the fix says so (`Wait, 9 + 3 = 12, not 13.`)."""
    parts: list[tuple[str, bool]] = []
    values = c.values()
    for i in range(c.times):
        a, b, left = values[i], values[i + 1], c.times - 1 - i
        total, check = f" {a} + {c.x} =", f", let me check: {_count_on(a, c.x)}."
        if i != slip_at:
            parts.append((f"{total} {b}{check} {left} left.", True))
            continue
        wrong = b + rng.choice([d for d in (-2, -1, 1, 2) if b + d >= 0])
        parts += [(total, True), (f" {wrong}", False), (f"{check} Wait,{total} {b}, not {wrong}. {left} left.", True)]
    return parts


def solution_parts(p: ChainProblem, style: str, rng: random.Random) -> list[tuple[str, bool]]:
    """The think text of `p` in `style`, as (piece, trained) pieces. The checked styles check every sum right
    after writing it by counting on; a slipped sum is noticed where it happens and fixed from the count. The
    slipped number is not trained on (`trained` False): the base learns to notice and fix a slip, not to make
    one (retry data with the error masked, Ye et al. 2024)."""
    c = p.chain
    if style == "direct":
        return [(f"{OPENERS['direct']} {p.answer}.", True)]
    if style == "step":
        return [(f"{OPENERS['step']} {c.text()}", True)]
    head = (f"{OPENERS[style]} {c.head()}", True)
    return [head, *_checked_steps(c, rng, rng.randrange(c.times) if style == "slip" else None)]


def solution(p: ChainProblem, style: str, rng: random.Random) -> str:
    """The think text of `p` in `style` (solution_parts joined)."""
    return "".join(piece for piece, _ in solution_parts(p, style, rng))


class Document(NamedTuple):
    """One corpus document: the prompt, the response (with its stop token) and the character spans of the
    response that are not trained on (each a number after a space: it tokenizes alike alone and in place)."""

    prompt: str
    response: str
    untrained: tuple[tuple[int, int], ...] = ()


def render_v3_document(p: ChainProblem, rng: random.Random, image_tokens: int, mix: StyleMix, plain: bool
                       ) -> Document:
    """One document of the chat or the plain corpus for `p`."""
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, render_prompt
    from shared.model.synthetic import problem_messages

    messages = problem_messages(p, "")
    parts = solution_parts(p, mix.pick(rng), rng)
    body = "".join(piece for piece, _ in parts)

    def doc(prompt: str, before: str, after: str) -> Document:
        spans, at = [], len(before)
        for piece, trained in parts:
            if not trained:
                spans.append((at, at + len(piece)))
            at += len(piece)
        return Document(prompt, before + body + after, tuple(spans))

    boxed_end = f" The answer is \\boxed{{{p.answer}}}."
    if plain:
        if rng.random() < mix.template:
            prompt = render_prompt(messages, [image_tokens], "pretrained")
            if rng.random() < mix.tagged:
                return doc(prompt, "<think>", f"</think><answer>\\boxed{{{p.answer}}}</answer><|endoftext|>")
            return doc(prompt, "", boxed_end + "<|endoftext|>")
        return doc(render_prompt(messages, [image_tokens], "question"), "", boxed_end + "<|endoftext|>")
    if rng.random() < mix.boxed:
        return doc(render_prompt(messages, [image_tokens], "boxed"), "", boxed_end + "<|im_end|>")
    prompt = render_prompt(messages, [image_tokens], "instruct", INSTRUCT_SYSTEM_PROMPT)
    return doc(prompt, "<think>", f"</think><answer>{p.answer}</answer><|im_end|>")
