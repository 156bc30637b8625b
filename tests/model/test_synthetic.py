"""The small world: deterministic, well-formed, exact answers; the corpus layout mix."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from pathlib import Path


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_make_synthetic_cli_is_deterministic_and_readable(tmp_path: Path) -> None:
    from shared.dataset import read_jsonl

    def run(out: Path, seed: int) -> None:
        cmd = [sys.executable, "-m", "eureka_cli", "data", "make-synthetic", "--out", str(out),
               "--train", "30", "--heldout", "10", "--seed", str(seed)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    run(tmp_path / "a", 1)
    run(tmp_path / "b", 1)
    run(tmp_path / "c", 2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    train, heldout = read_jsonl(tmp_path / "a" / "train.jsonl"), read_jsonl(tmp_path / "a" / "heldout.jsonl")
    assert (len(train.records), len(heldout.records), train.skipped) == (30, 10, [])
    assert all(len(r.image_paths) == 1 and r.image_paths[0].is_file() for r in train.records)
    assert {r.id for r in train.records}.isdisjoint({r.id for r in heldout.records})


def test_answers_are_exact() -> None:
    from shared.model.synthetic import DIGIT_MAX, FAMILIES, GRID, LETTERS, make_problem

    rng = random.Random(5)
    values: dict[str, set[str]] = {}
    for _ in range(400):
        p = make_problem(rng)
        assert p.task.split("_")[0] in FAMILIES
        values.setdefault(p.task.split("_")[0], set()).add(p.value)
        if p.task.startswith("angle"):
            x = int(re.search(r"AOB is (\d+)°", p.question).group(1))
            assert int(p.value) == (90 if "right angle" in p.question else 180) - x
        if p.task.endswith("_mc"):
            options = dict(re.findall(r"([A-D])\. (\S+)", p.question.split("Choices:")[1]))
            assert p.answer in LETTERS and options[p.answer] == p.value and len(set(options.values())) == 4
        else:
            assert p.answer == p.value
        assert p.image.size == (112, 112)
        assert p.value in " ".join(p.steps)
    # only small answer ranges, so the tiny base can learn to solve them (docs/MODEL.md)
    assert values["count"] <= {str(n) for n in range(1, 5)}
    assert values["add"] <= {str(n) for n in range(2, 2 * DIGIT_MAX + 1)}
    assert values["compare"] <= {str(n) for n in range(2, DIGIT_MAX + 1)}
    assert values["bar"] <= {str(n) for n in range(1, GRID + 1)} | set(LETTERS)
    assert values["angle"] <= {str(n) for n in (15, 30, 45, 60, 75, 30, 60, 90, 120, 150)}


def test_synthetic_cache_folder_names_the_generator_version() -> None:
    from shared.model.cache import synthetic_dir
    from shared.model.synthetic import GENERATOR_VERSION

    assert synthetic_dir(3).name == f"synthetic-v{GENERATOR_VERSION}-seed3"


def test_count_image_has_the_counted_colour() -> None:
    from shared.model.synthetic import COLOURS, make_problem

    p = make_problem(random.Random(3), "count", mc=False)
    colour = re.search(r"many (\w+) shapes", p.question).group(1)
    pixels = {c for _, c in p.image.getcolors(maxcolors=1 << 16)}
    assert COLOURS[colour] in pixels


def test_corpus_mix_gates_tags_on_multiple_choice() -> None:
    from shared.model.corpus import CorpusMix, render_document
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT
    from shared.model.synthetic import make_problem

    rng, mix = random.Random(0), CorpusMix()
    tagged = {True: [], False: []}
    for _ in range(1500):
        p = make_problem(rng)
        prompt, response = render_document(p, rng, 16, mix, style="instruct")
        assert INSTRUCT_SYSTEM_PROMPT in prompt and response.endswith("<|im_end|>")
        has = response.startswith("<think>")
        if has:
            assert re.fullmatch(r"<think>[^<]+</think><answer>[^<]+</answer><\|im_end\|>", response)
        tagged[p.task.endswith("_mc")].append(has)
    mc, open_ = (sum(v) / len(v) for v in (tagged[True], tagged[False]))
    assert abs(mc - mix.tagged_mc) < 0.08 and abs(open_ - mix.tagged_open) < 0.04
    prompt, response = render_document(make_problem(rng), rng, 16, mix, style="plain")
    assert "<think>" not in response and "system" not in prompt
