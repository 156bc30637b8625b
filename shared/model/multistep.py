"""The small world's version-3 family: problems a worked solution gets right one fact a step.

`repeat` (difficulty 1-4 = `times`): start from the drawn digit and add a given amount (2-9) `times` times. A
worked solution reads the digit, then writes one step a sentence (`5 + 3 = 8, 2 left.`): every step is a
one-fact sum of values written just before it, and the countdown says when to stop. A direct answer has to read,
multiply and add in one token (docs/MODEL.md measures how often the tiny base manages it). Difficulty 1 is one
sum and can be answered directly. A check is a second pass from the image (the read and the steps again;
shared/model/styles.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from shared.model.drawing import GRID, SIZE, cell_box, text_font

FAMILIES_V3 = ("repeat",)
DIFFICULTIES = (1, 2, 3, 4)  # the number of steps
AMOUNTS = (2, 9)  # the amount added at each step, inclusive
RESPONSE_TOKENS = 384  # max_response_tokens of a version-3 run: the longest slip-then-fix solution fits
REVISION = 3  # of the version-3 generator: part of the cached data folder's name (shared/model/cache.py)


@dataclass
class Chain:
    """`start`, then `+ x` applied `times` times; `reads` are what the solution reads off the image first."""

    reads: list[str]
    start: int
    x: int
    times: int

    def values(self) -> list[int]:
        """The running values, the number read first."""
        return [self.start + i * self.x for i in range(self.times + 1)]

    @property
    def result(self) -> int:
        return self.values()[-1]

    def head(self) -> str:
        """How every worked pass opens: the reads, then how many steps."""
        return " ".join([*self.reads, f"{self.times} left."])

    def text(self) -> str:
        """One pass: the head, then one step a sentence with the steps still to go."""
        values = self.values()
        steps = [f"{values[i]} + {self.x} = {values[i + 1]}, {self.times - 1 - i} left." for i in range(self.times)]
        return " ".join([self.head(), *steps])


@dataclass
class ChainProblem:
    task: str
    question: str
    answer: str
    image: Image.Image
    chain: Chain
    difficulty: int

    @property
    def value(self) -> str:
        return self.answer


def _digit_image(value: int, rng: random.Random) -> Image.Image:
    """One bold digit in a random cell of the 4x4 grid."""
    img = Image.new("RGB", (SIZE, SIZE), "white")
    x0, y0, x1, y1 = cell_box(rng.randrange(GRID * GRID), pad=0)
    ImageDraw.Draw(img).text(((x0 + x1) // 2, (y0 + y1) // 2), str(value), font=text_font(26), fill="black",
                             anchor="mm", stroke_width=1, stroke_fill="black")
    return img


def _repeat(rng: random.Random, k: int) -> ChainProblem:
    start, x = rng.randint(1, 9), rng.randint(*AMOUNTS)
    chain = Chain([f"The number is {start}."], start, x, k)
    times = "1 time" if k == 1 else f"{k} times"
    q = f"Start from the number in the picture and add {x} to it, {times}. What number do you get?"
    return ChainProblem("repeat", q, str(chain.result), _digit_image(start, rng), chain, k)


_MAKERS = {"repeat": _repeat}


def make_chain_problem(rng: random.Random, family: str | None = None, difficulty: int | None = None) -> ChainProblem:
    """One v3 problem; a random family and difficulty (DIFFICULTIES) unless given."""
    return _MAKERS[family or rng.choice(FAMILIES_V3)](rng, difficulty or rng.choice(DIFFICULTIES))
