"""make-base's recipe pieces: the white-blind random vision tower, and read-first worked solutions."""

from __future__ import annotations

import random
import re


def test_null_background_makes_a_white_patch_embed_to_zero_but_keeps_shapes() -> None:
    import torch
    from PIL import Image

    from shared.model.images import preprocess_images
    from shared.model.io import new_tiny_model
    from shared.model.pretrain import null_background
    from shared.model.synthetic import make_problem

    model, _ = new_tiny_model(0)
    embed = model.model.visual.patch_embed
    white, _ = preprocess_images([Image.new("RGB", (56, 56), "white")])
    drawn, _ = preprocess_images([make_problem(random.Random(1), "count", mc=False).image])
    with torch.no_grad():
        before = embed(white).norm(dim=-1).max().item()
        null_background(model)
        after, shapes = embed(white).norm(dim=-1).max().item(), embed(drawn).norm(dim=-1)
    assert before > 1.0 and after < 1e-4 * before
    assert shapes.max().item() > 0.5  # the drawn objects still reach the features


def test_solutions_read_the_inputs_before_the_answer() -> None:
    from shared.model.synthetic import LETTERS, make_problem

    rng = random.Random(2)
    for _ in range(200):
        p = make_problem(rng, mc=False)
        text = " ".join(p.steps)
        if p.task == "count":
            seen = re.match(r"The shapes: ([^.]+)\.", text).group(1).split(", ")
            counted = re.search(r"The \w+ shapes: ([^.]+)\.", text).group(1).split(", ")
            assert len(seen) >= len(counted) and counted[-1].startswith(f"{p.value} ")
        elif p.task == "bar":
            values = dict(re.findall(r"([A-D]) (\d)", p.steps[0]))
            assert list(values) == list(LETTERS)
            asked = re.search(r"value of bar ([A-D])", p.question)
            assert (values[asked.group(1)] if asked else max(values, key=values.get)) == p.value
        elif p.task == "angle":
            x = re.search(r"AOB is (\d+)°", p.question).group(1)
            assert p.steps[0] == f"AOB is {x}°."
