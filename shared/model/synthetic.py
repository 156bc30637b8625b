"""The small world: synthetic visual math problems drawn with Pillow, with exact answers.

Families: `count` (1-4 shapes of a colour), `add` and `compare` (two bold digits 1-5 drawn), `bar`
(read a bar chart, heights 1-4 cells), `angle` (a drawn angle on a straight line or in a right angle,
five values each); any problem may become a multiple-choice variant (`<family>_mc`, gold answer a
letter). Images are 112x112: a 4x4 grid of 28-pixel cells, one object (or one bar unit) per cell, so
each merged vision token of Qwen2.5-VL sees one object. The ranges are small on purpose: the tiny
base must learn to solve them in a few CPU minutes (docs/MODEL.md). Everything is deterministic by seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from shared.model.drawing import CELL, COLOURS, GRID, LETTERS, SHAPES, SIZE, cell_box, draw_shape, text_font
from shared.model.multistep import make_chain_problem

DIGIT_MAX = 5  # add/compare draw digits 1..DIGIT_MAX
FAMILIES = ("count", "add", "compare", "bar", "angle")
MC_SHARE = 0.25
# Bump when the generator changes what problems look like: the cached data folders carry it in their name.
# Version 2: the families above; version 3: the multi-step families of shared/model/multistep.py.
GENERATOR_VERSION = 2  # the default world until a v3 base passes the style gate (docs/MODEL.md)
GENERATOR_VERSIONS = (2, 3)


@dataclass
class Problem:
    task: str  # family, or "<family>_mc" for a multiple-choice variant
    question: str
    answer: str  # gold: a number, or a letter for multiple choice
    image: Image.Image
    steps: list[str] = field(default_factory=list)  # the worked solution, one short sentence each
    value: str = ""  # the value the steps arrive at (== answer unless multiple choice)


def _count(rng: random.Random) -> Problem:
    colour = rng.choice(list(COLOURS))
    n = rng.randint(1, 4)
    others = rng.randint(1, 3)
    cells = sorted(rng.sample(range(GRID * GRID), n + others))
    targets = set(rng.sample(cells, n))
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    seen, names = [], []
    for k in cells:
        shape = rng.choice(SHAPES)
        c = colour if k in targets else rng.choice([x for x in COLOURS if x != colour])
        draw_shape(draw, k, shape, c)
        seen.append(f"{c} {shape}")
        if k in targets:
            names.append(f"{len(names) + 1} {shape}")
    # read first (every shape in cell order), then the counted ones numbered: the count copies the last number
    steps = [f"The shapes: {', '.join(seen)}.", f"The {colour} shapes: {', '.join(names)}.", f"That is {n}."]
    return Problem("count", f"How many {colour} shapes are there?", str(n), img, steps, str(n))


def _two_numbers(rng: random.Random, distinct: bool) -> tuple[Image.Image, int, int]:
    a = rng.randint(1, DIGIT_MAX)
    b = rng.choice([x for x in range(1, DIGIT_MAX + 1) if x != a]) if distinct else rng.randint(1, DIGIT_MAX)
    k1, k2 = sorted(rng.sample(range(GRID * GRID), 2))
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    for k, v in ((k1, a), (k2, b)):
        x0, y0, x1, y1 = cell_box(k, pad=0)
        draw.text(((x0 + x1) // 2, (y0 + y1) // 2), str(v), font=text_font(26), fill="black", anchor="mm", stroke_width=1, stroke_fill="black")
    return img, a, b


def _add(rng: random.Random) -> Problem:
    img, a, b = _two_numbers(rng, distinct=False)
    steps = [f"The numbers are {a} and {b}.", f"{a} + {b} = {a + b}."]
    return Problem("add", "What is the sum of the two numbers?", str(a + b), img, steps, str(a + b))


def _compare(rng: random.Random) -> Problem:
    img, a, b = _two_numbers(rng, distinct=True)
    steps = [f"The numbers are {a} and {b}.", f"{max(a, b)} is larger."]
    return Problem("compare", "Which number is larger?", str(max(a, b)), img, steps, str(max(a, b)))


def _bar(rng: random.Random) -> Problem:
    values = [rng.randint(1, GRID) for _ in LETTERS]
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    for i, v in enumerate(values):  # one grid cell per unit: a merged vision token is either bar or background
        draw.rectangle((i * CELL + 2, SIZE - v * CELL, (i + 1) * CELL - 3, SIZE - 1), fill=(60, 110, 200))
    read = "The bars are " + ", ".join(f"{k} {v}" for k, v in zip(LETTERS, values)) + "."  # read first, by letter
    if rng.random() < 0.5 and values.count(max(values)) == 1:
        top = LETTERS[values.index(max(values))]
        steps = [read, f"The tallest is {top}."]
        return Problem("bar", "Bars A-D go left to right. Which bar is the tallest?", top, img, steps, top)
    i = rng.randrange(len(LETTERS))
    steps = [read, f"Bar {LETTERS[i]} reaches {values[i]}."]
    q = f"Bars A-D go left to right. What is the value of bar {LETTERS[i]}?"
    return Problem("bar", q, str(values[i]), img, steps, str(values[i]))


def _angle(rng: random.Random) -> Problem:
    import math

    right = rng.random() < 0.4
    total = 90 if right else 180
    x = rng.randrange(total // 6, total, total // 6)  # 15..75 or 30..150: five values each
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    o = (SIZE // 2, SIZE - 24)
    length = 46
    draw.line((o[0] - length, o[1], o[0], o[1]), fill="black", width=2)  # OA, to the left
    c_end = (o[0], o[1] - length) if right else (o[0] + length, o[1])
    draw.line((*o, *c_end), fill="black", width=2)
    t = math.radians(180 - x)  # OB is x degrees away from OA
    b_end = (o[0] + length * math.cos(t), o[1] - length * math.sin(t))
    draw.line((*o, *b_end), fill=(200, 30, 30), width=2)
    font = text_font(11)
    for label, (px, py) in (("A", (o[0] - length - 8, o[1] - 6)), ("O", (o[0] - 3, o[1] + 4)), ("B", b_end), ("C", c_end)):
        draw.text((px, py - 10 if label in "BC" else py), label, font=font, fill="black")
    if right:
        q = f"Angle AOC is a right angle and angle AOB is {x}°. Find angle BOC."
    else:
        q = f"AOC is a straight line and angle AOB is {x}°. Find angle BOC."
    steps = [f"AOB is {x}°.", f"AOB + BOC = {total}°.", f"{total} - {x} = {total - x}."]
    return Problem("angle", q, str(total - x), img, steps, str(total - x))


_MAKERS = {"count": _count, "add": _add, "compare": _compare, "bar": _bar, "angle": _angle}


def _distractors(rng: random.Random, value: str) -> list[str]:
    if value in LETTERS:
        return [x for x in LETTERS if x != value][:3]
    v = int(value)
    step = next((s for s in (15, 10, 5) if v >= 2 * s and v % s == 0), 1)
    pool = [v + step * d for d in (-3, -2, -1, 1, 2, 3) if v + step * d >= 0]
    return rng.sample(pool, 3)


def _as_choice(rng: random.Random, p: Problem) -> Problem:
    options = _distractors(rng, p.value) + [p.value]
    rng.shuffle(options)
    letter = LETTERS[options.index(p.value)]
    listing = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    steps = p.steps + [f"So the choice is {letter}."]
    return Problem(f"{p.task}_mc", f"{p.question}\nChoices: {listing}", letter, p.image, steps, p.value)


def make_problem(rng: random.Random, family: str | None = None, mc: bool | None = None) -> Problem:
    """One problem; a random family and multiple-choice coin unless given."""
    p = _MAKERS[family or rng.choice(FAMILIES)](rng)
    if mc if mc is not None else rng.random() < MC_SHARE:
        p = _as_choice(rng, p)
    return p


def problem_messages(p: Any, image_ref: str) -> list[dict]:
    """The MM-Eureka chat of a problem: one user turn with the image then the question."""
    return [{"role": "user", "content": [{"type": "image", "image": image_ref}, {"type": "text", "text": p.question}]}]


def make_any(rng: random.Random, version: int = GENERATOR_VERSION) -> Any:
    """One problem of generator `version`: a Problem (2) or a multistep.ChainProblem (3)."""
    if version not in GENERATOR_VERSIONS:
        raise ValueError(f"generator version {version} is unknown; use one of {GENERATOR_VERSIONS}")
    return make_problem(rng) if version == 2 else make_chain_problem(rng)


def write_split(out: Path, split: str, n: int, seed: int, version: int = GENERATOR_VERSION) -> Path:
    """Write `<out>/<split>.jsonl` and its images under `<out>/images/`; returns the JSONL path.
    Version 3 records also carry `difficulty` (1-3)."""
    rng = random.Random(f"{split}:{seed}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / f"{split}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            p = make_any(rng, version)
            rel = f"images/{split}-{i:06d}.png"
            p.image.save(out / rel, format="PNG", optimize=False)
            record = {"id": f"{split}-{i}", "message": json.dumps(problem_messages(p, rel)), "answer": p.answer, "task": p.task}
            if version >= 3:
                record["difficulty"] = p.difficulty
            f.write(json.dumps(record) + "\n")
    return path
