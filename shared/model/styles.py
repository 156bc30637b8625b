"""Corpus version 5 (the v3 world): every solution style under the same prompt, all final answers correct.

Styles of the think section (docs/MODEL.md gives the shares and why):
- `direct`: "Quick answer: 10." (short; right on easy items, a guess on hard ones);
- `step`: "Step by step: <reads> 3 + 5 = 8. 8 + 2 = 10." (`sum` reads one digit per step: "Next 2. 8 + 2 = 10.");
- `checked`: the steps, then "Let me check: <an independent recomputation> It matches: 10.";
- `slip`: the steps with a slip carried onwards, the check disagreeing ("That gives 10, not 11."),
  then "Wait, let me re-check." and the steps again, right.
The checked and slip styles open alike ("Work, then check:"), so a sampled slip the model notices in
its own check is fixed, and checking pays off in the base's own samples. Prompts: the instruct system
prompt with the think/answer layout, the chat with the `\\boxed{}` suffix, or (the pretrained-mode base,
no chat data) plain text with or without the R1-zero template.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.model.multistep import Chain, ChainProblem, steps_text

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


def _slip(rng: random.Random, chain: Chain) -> tuple[int, int]:
    at = rng.randrange(len(chain.ops))
    values = chain.values()
    options = [d for d in (-2, -1, 1, 2) if values[at + 1] + d >= 0]
    return at, rng.choice(options)


def _check(chain: Chain, first: int) -> tuple[str, bool, int, int]:
    values, target = chain.check_values(first)
    return " ".join(steps_text(chain.check_ops, values)), values[-1] == target, values[-1], target


def solution(p: ChainProblem, style: str, rng: random.Random) -> str:
    """The think text of `p` in `style`."""
    c = p.chain
    if style == "direct":
        return f"{OPENERS['direct']} {p.answer}."
    reads = " ".join(c.reads)
    right = " ".join(steps_text(c.ops, c.values(), c.step_reads))
    if style == "step":
        return f"{OPENERS['step']} {reads} {right}"
    if style == "checked":
        check, _, _, _ = _check(c, c.result)
        return f"{OPENERS['checked']} {reads} {right} Let me check: {check} It matches: {p.answer}."
    at, d = _slip(rng, c)
    slipped = c.values(at, d)
    check, _, got, target = _check(c, slipped[-1])
    wrong = " ".join(steps_text(c.ops, slipped, c.step_reads))
    return (f"{OPENERS['slip']} {reads} {wrong} Let me check: {check} That gives {got}, not {target}. "
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
