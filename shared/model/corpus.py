"""The tiny base model's pretraining corpus: chats over synthetic problems with worked solutions.

Most documents are plain worked solutions (no tags) ending with "The answer is X." (no system prompt)
or "\\boxed{X}" (the pretrained-base prompt). A minority carry the MM-Eureka instruct system prompt;
under it the think/answer layout is common for multiple-choice questions and rare for open ones, so
the base starts with low greedy accuracy and a low format rate, while sampled groups hold correct
tagged answers for RL to reinforce. Some solutions re-check a step ("Wait, let me re-check."), a few
after a wrong first try. docs/MODEL.md explains the numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.model.synthetic import Problem, problem_messages

PLAIN_ENDINGS = ("The answer is {a}.", "So the answer is {a}.", "Answer: {a}.")


@dataclass(frozen=True)
class CorpusMix:
    plain: float = 0.50  # no system prompt, "The answer is X."
    boxed: float = 0.15  # pretrained-base prompt (\\boxed{} suffix), "\\boxed{X}"
    # the rest: the instruct system prompt
    tagged_mc: float = 0.65  # under the instruct prompt: share of think/answer layout, multiple choice
    tagged_open: float = 0.10  # ... open questions
    recheck: float = 0.10  # "Wait, let me re-check." then the last step again
    correct: float = 0.05  # a wrong first value, the re-check, then the right one


def _wrong(value: str, rng: random.Random) -> str:
    if value.isdigit():
        return str(max(0, int(value) + rng.choice((-2, -1, 1, 2))))
    return value


def solution_steps(p: Problem, rng: random.Random, mix: CorpusMix) -> str:
    """The worked solution; sometimes with a re-check (and rarely a corrected slip)."""
    steps = list(p.steps)
    k = len(steps) - 1 if not p.task.endswith("_mc") else len(steps) - 2  # the step that states the value
    r = rng.random()
    if r < mix.correct and p.value in steps[k]:
        slip = steps[k][::-1].replace(p.value[::-1], _wrong(p.value, rng)[::-1], 1)[::-1]
        steps[k : k + 1] = [slip, "Wait, let me re-check.", steps[k]]
    elif r < mix.correct + mix.recheck:
        steps[k + 1 : k + 1] = ["Wait, let me re-check.", steps[k]]
    return " ".join(steps)


STYLES = ("plain", "boxed", "instruct")


def choose_style(rng: random.Random, mix: CorpusMix) -> str:
    """A document style drawn by the mix (a training batch shares one style, so rows have similar lengths)."""
    r = rng.random()
    return "plain" if r < mix.plain else "boxed" if r < mix.plain + mix.boxed else "instruct"


def render_document(
    p: Problem, rng: random.Random, image_tokens: int, mix: CorpusMix, style: str | None = None
) -> tuple[str, str]:
    """(prompt text up to the assistant header, response text ending with <|im_end|>)."""
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, render_chat

    messages = problem_messages(p, "")
    body = solution_steps(p, rng, mix)
    style = style or choose_style(rng, mix)
    if style == "plain":
        prompt = render_chat(messages, [image_tokens], "instruct", add_system=False)
        response = f"{body} {rng.choice(PLAIN_ENDINGS).format(a=p.answer)}"
    elif style == "boxed":
        prompt = render_chat(messages, [image_tokens], "boxed")
        response = f"{body} The answer is \\boxed{{{p.answer}}}."
    else:
        prompt = render_chat(messages, [image_tokens], "instruct", INSTRUCT_SYSTEM_PROMPT)
        tagged = rng.random() < (mix.tagged_mc if p.task.endswith("_mc") else mix.tagged_open)
        if tagged:
            response = f"<think>{body}</think><answer>{p.answer}</answer>"
        else:
            response = f"{body} {rng.choice(PLAIN_ENDINGS).format(a=p.answer)}"
    return prompt, response + "<|im_end|>"
