"""Corpus version 6 (the v3 world): every solution style under the same prompt, all final answers correct.

Styles of the think section (docs/MODEL.md gives the shares and why):
- `direct`: "Quick answer: 10." (short; right on easy items, a guess on hard ones);
- `step`: "Step by step: <reads> 3 + 5 = 8. 8 + 2 = 10." (`sum` reads one digit per step: "then 2: 8 + 2 = 10.");
- `checked`: the reads and steps, then "Let me check:" and the reads and steps again, from the image,
  then "It matches: 10.";
- `slip`: a first pass with a slip carried onwards (a misread digit or a wrong sum), the second pass
  disagreeing ("That gives 10, not 11."), then "Wait, let me re-check." and a third pass, right.
The checked and slip styles open alike ("Work, then check:"), so a sampled slip the model notices in
its own check is fixed, and checking pays off in the base's own samples. Prompts: the instruct system
prompt with the think/answer layout, the chat with the `\\boxed{}` suffix, or (the pretrained-mode base,
no chat data) plain text with or without the R1-zero template.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.model.multistep import DIGIT_MAX, Chain, ChainProblem

STYLES_V3 = ("direct", "step", "checked", "slip")
OPENERS = {"direct": "Quick answer:", "step": "Step by step:", "checked": "Work, then check:", "slip": "Work, then check:"}


@dataclass(frozen=True)
class StyleMix:
    """Shares of the solution styles (direct is the plurality: greedy decoding of the base answers directly)."""

    direct: float = 0.45
    step: float = 0.30
    checked: float = 0.18
    slip: float = 0.07
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


NO_CHECKS = StyleMix(direct=0.55, step=0.45, checked=0.0, slip=0.0)  # the ablation's corpus


def _slip(rng: random.Random, chain: Chain) -> tuple[str, int]:
    """A first pass gone wrong, and its result: a misread operand (one-read-per-step chains, half the time)
    or an arithmetic slip, carried onwards."""
    at = rng.randrange(len(chain.ops))
    if chain.step_read and rng.random() < 0.5:
        x = chain.ops[at][1]
        wrong = chain.misread(at, rng.choice([d for d in (-1, 1) if 1 <= x + d <= DIGIT_MAX]))
        return wrong.text(), wrong.result
    value = chain.values()[at + 1]
    d = rng.choice([d for d in (-2, -1, 1, 2) if value + d >= 0])
    return chain.text(at, d), chain.values(at, d)[-1]


def solution(p: ChainProblem, style: str, rng: random.Random) -> str:
    """The think text of `p` in `style`. The check is a second pass from the image (reads and steps
    again), so it catches a slip of the first pass, a misread included."""
    c = p.chain
    if style == "direct":
        return f"{OPENERS['direct']} {p.answer}."
    right = c.text()
    if style == "step":
        return f"{OPENERS['step']} {right}"
    if style == "checked":
        return f"{OPENERS['checked']} {right} Let me check: {right} It matches: {p.answer}."
    wrong, got = _slip(rng, c)
    return (f"{OPENERS['slip']} {wrong} Let me check: {right} That gives {p.answer}, not {got}. "
            f"Wait, let me re-check. {right}")


def render_v3_document(p: ChainProblem, rng: random.Random, image_tokens: int, mix: StyleMix, plain: bool
                       ) -> tuple[str, str]:
    """(prompt text, response text with its stop token) for one problem of the chat or the plain corpus."""
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, render_prompt
    from shared.model.synthetic import problem_messages

    messages = problem_messages(p, "")
    body = solution(p, mix.pick(rng), rng)
    boxed_end = f"{body} The answer is \\boxed{{{p.answer}}}."
    if plain:
        if rng.random() < mix.template:
            prompt = render_prompt(messages, [image_tokens], "pretrained")
            tagged = rng.random() < mix.tagged
            response = f"<think>{body}</think><answer>\\boxed{{{p.answer}}}</answer>" if tagged else boxed_end
        else:
            prompt, response = render_prompt(messages, [image_tokens], "question"), boxed_end
        return prompt, response + "<|endoftext|>"
    if rng.random() < mix.boxed:
        return render_prompt(messages, [image_tokens], "boxed"), boxed_end + "<|im_end|>"
    prompt = render_prompt(messages, [image_tokens], "instruct", INSTRUCT_SYSTEM_PROMPT)
    return prompt, f"<think>{body}</think><answer>{p.answer}</answer><|im_end|>"
