"""The small world's version-3 families: problems a tiny model solves one read or one fact per step.

Each problem is a chain: read the inputs off the image, then a few one-fact steps (`a + b = c`),
so a worked solution is causally more accurate than a direct answer (the model would have to read
and add several values in one token). Difficulty 1-3 is the number of steps; difficulty 1 can be
answered directly. A chain's pass (its reads and steps, `Chain.text`) can be done again from the
image, independently of a first pass: the corpus's checked and slip-then-fix styles do that
(shared/model/styles.py).

Families: `sum` (2-4 bold digits 1-5), `redblue` (red plus blue shapes among others), `range`
(tallest minus shortest of 2-4 bars), `chain` (a countdown-style walk: start at the drawn digit,
add and subtract what the text says).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from shared.model.drawing import CELL, GRID, LETTERS, SHAPES, SIZE, cell_box, draw_shape, text_font

FAMILIES_V3 = ("sum", "redblue", "range", "chain")
DIGIT_MAX = 5


@dataclass
class Chain:
    """start, then `value op x` per step. `step_read` (e.g. "then {x}:"), when set, is read before each step:
    the operand comes off the image one read per step, so a misread can slip into a step."""

    reads: list[str]
    start: int
    ops: list[tuple[str, int]]
    step_read: str | None = None

    def values(self, slip_at: int | None = None, slip: int = 0) -> list[int]:
        """The running values, optionally with a slip of `slip` at step `slip_at` carried onwards."""
        out = [self.start]
        for i, (op, x) in enumerate(self.ops):
            v = out[-1] + x if op == "+" else out[-1] - x
            out.append(v + slip if i == slip_at else v)
        return out

    @property
    def result(self) -> int:
        return self.values()[-1]

    def misread(self, at: int, slip: int) -> Chain:
        """The chain as read with the operand of step `at` off by `slip` (the step reads show it)."""
        ops = list(self.ops)
        op, x = ops[at]
        ops[at] = (op, x + slip)
        return Chain(self.reads, self.start, ops, self.step_read)

    def text(self, slip_at: int | None = None, slip: int = 0) -> str:
        """One pass: the reads, then one sentence per step (`3 + 5 = 8.`; `then 5: 3 + 5 = 8.` with a `step_read`)."""
        reads = [self.step_read.format(x=x) for _, x in self.ops] if self.step_read else None
        values = self.values(slip_at, slip)
        eqs = [f"{values[i]} {op} {x} = {values[i + 1]}." for i, (op, x) in enumerate(self.ops)]
        return " ".join([*self.reads, *([f"{r} {e}" for r, e in zip(reads, eqs)] if reads else eqs)])


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


def _digits_image(values: list[int], rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    for k, v in zip(sorted(rng.sample(range(GRID * GRID), len(values))), values):
        x0, y0, x1, y1 = cell_box(k, pad=0)
        draw.text(((x0 + x1) // 2, (y0 + y1) // 2), str(v), font=text_font(26), fill="black", anchor="mm",
                  stroke_width=1, stroke_fill="black")
    return img


def _sum(rng: random.Random, d: int) -> ChainProblem:
    values = [rng.randint(1, DIGIT_MAX) for _ in range(d + 1)]
    img = _digits_image(values, rng)  # drawn in cell order: the reads list them in that order
    # One read per step: the first number, then each next one beside the step that adds it.
    chain = Chain([f"First {values[0]}."], values[0], [("+", v) for v in values[1:]], step_read="then {x}:")
    return ChainProblem("sum", "What is the sum of the numbers?", str(chain.result), img, chain, d)


def _redblue(rng: random.Random, d: int) -> ChainProblem:
    red, blue = rng.randint(1, d), rng.randint(1, d)
    others = rng.randint(d - 1, d)
    cells = sorted(rng.sample(range(GRID * GRID), red + blue + others))
    colours = ["red"] * red + ["blue"] * blue + [rng.choice(("green", "yellow")) for _ in range(others)]
    rng.shuffle(colours)
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    seen = []
    for k, c in zip(cells, colours):
        shape = rng.choice(SHAPES)
        draw_shape(draw, k, shape, c)
        seen.append(f"{c} {shape}")
    reads = [f"The shapes: {', '.join(seen)}.", f"Red {red}, blue {blue}."]
    chain = Chain(reads, red, [("+", blue)])
    return ChainProblem("redblue", "How many shapes are red or blue?", str(red + blue), img, chain, d)


def _range(rng: random.Random, d: int) -> ChainProblem:
    n = d + 1
    values = [rng.randint(1, GRID) for _ in range(n)]
    while max(values) == min(values):
        values = [rng.randint(1, GRID) for _ in range(n)]
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    for i, v in enumerate(values):
        draw.rectangle((i * CELL + 2, SIZE - v * CELL, (i + 1) * CELL - 3, SIZE - 1), fill=(60, 110, 200))
    hi, lo = max(values), min(values)
    reads = ["The bars are " + ", ".join(f"{k} {v}" for k, v in zip(LETTERS, values)) + ".",
             f"The tallest is {hi}, the shortest {lo}."]
    chain = Chain(reads, hi, [("-", lo)])
    q = f"Bars {LETTERS[0]}-{LETTERS[n - 1]} go left to right. How much taller is the tallest bar than the shortest?"
    return ChainProblem("range", q, str(hi - lo), img, chain, d)


def _walk(rng: random.Random, d: int) -> ChainProblem:
    while True:
        start = rng.randint(1, 9)
        ops = [(rng.choice("+-"), rng.randint(1, 4)) for _ in range(d)]
        chain = Chain([f"The number is {start}."], start, ops)
        if all(0 <= v <= 15 for v in chain.values()):
            break
    words = {"+": "add", "-": "subtract"}
    said = ", then ".join(f"{words[op]} {x}" for op, x in ops)
    q = f"Start from the number in the picture, {said}. What number do you get?"
    return ChainProblem("chain", q, str(chain.result), _digits_image([start], rng), chain, d)


_MAKERS = {"sum": _sum, "redblue": _redblue, "range": _range, "chain": _walk}


def make_chain_problem(rng: random.Random, family: str | None = None, difficulty: int | None = None) -> ChainProblem:
    """One v3 problem; a random family and difficulty (1-3) unless given."""
    return _MAKERS[family or rng.choice(FAMILIES_V3)](rng, difficulty or rng.randint(1, 3))
