"""The v3 small world: exact multi-step answers, slips that change the result, every corpus style under the
same prompt with a correct final answer, checks that pass again from the image, and lengths that grow with
difficulty."""

from __future__ import annotations

import random
import re

import pytest



@pytest.mark.parametrize("family", ["sum", "redblue", "range", "chain"])
def test_answers_are_exact_and_checks_agree(family: str) -> None:
    from shared.model.multistep import make_chain_problem

    rng = random.Random(family)
    for _ in range(200):
        p = make_chain_problem(rng, family)
        c = p.chain
        assert p.image.size == (112, 112) and 1 <= p.difficulty <= 3
        assert len(c.ops) == (1 if family in ("redblue", "range") else p.difficulty)
        assert str(c.result) == p.answer
        assert c.values(0, 1)[-1] != c.result  # a slip carried onwards changes the result
        if family == "sum":
            reads = re.findall(r"(?:First|then) (\d)", c.text())
            assert sum(map(int, reads)) == int(p.answer) and len(reads) == p.difficulty + 1
            wrong = c.misread(0, 1)
            assert wrong.result == c.result + 1 and f"then {c.ops[0][1] + 1}:" in wrong.text()
        if family == "range":
            bars = [int(v) for v in re.findall(r"[A-D] (\d)", c.reads[0])]
            assert max(bars) - min(bars) == int(p.answer) and len(bars) == p.difficulty + 1
        if family == "redblue":
            seen = c.reads[0]
            assert seen.count("red ") + seen.count("blue ") == int(p.answer)


def test_every_style_ends_right_and_only_the_slip_revises() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.styles import solution
    from shared.reflection import is_effective_reflection, is_reflective, response_style

    rng = random.Random(0)
    for _ in range(300):
        p = make_chain_problem(rng)
        texts = {s: solution(p, s, rng) for s in ("direct", "step", "checked", "slip")}
        for style, text in texts.items():
            last = re.findall(r"\d+", text)[-1]
            assert last == p.answer, (style, text)
        assert response_style(texts["direct"]) == "direct" and not is_reflective(texts["step"])
        assert response_style(texts["step"]) == "step"
        assert response_style(texts["checked"]) == "checked" and f"It matches: {p.answer}." in texts["checked"]
        assert response_style(texts["slip"]) == "fixed" and "Wait, let me re-check." in texts["slip"]
        # the check is a second pass from the image: the reads and steps again, after "Let me check:"
        first, check = texts["checked"].removeprefix("Work, then check: ").split(" Let me check: ")
        assert check == f"{first} It matches: {p.answer}." and first == texts["step"].removeprefix("Step by step: ")
        wrong, rest = texts["slip"].removeprefix("Work, then check: ").split(" Let me check: ")
        assert wrong != first and rest.startswith(first) and rest.endswith(f"re-check. {first}")
        assert is_effective_reflection(texts["slip"], p.answer, True)
        assert not is_effective_reflection(texts["checked"], p.answer, True)
        assert not is_effective_reflection(texts["slip"], p.answer, False)


def test_corpus_puts_every_style_under_the_same_prompt() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, PRETRAINED_TEMPLATE
    from shared.model.styles import StyleMix, render_v3_document
    from shared.reflection import response_style

    rng, mix = random.Random(1), StyleMix()
    styles: dict[str, int] = {}
    for _ in range(2000):
        prompt, response = render_v3_document(make_chain_problem(rng), rng, 16, mix, plain=False)
        if INSTRUCT_SYSTEM_PROMPT in prompt:
            assert re.fullmatch(r"<think>[^<]+</think><answer>\d+</answer><\|im_end\|>", response)
            style = response_style(response)
            styles[style] = styles.get(style, 0) + 1
    n = sum(styles.values())
    assert abs(n / 2000 - (1 - mix.boxed)) < 0.04
    total = mix.direct + mix.step + mix.checked + mix.slip
    for style, share in (("direct", mix.direct), ("step", mix.step), ("checked", mix.checked), ("fixed", mix.slip)):
        assert abs(styles[style] / n - share / total) < 0.04, styles
    plain = [render_v3_document(make_chain_problem(rng), rng, 16, mix, plain=True) for _ in range(200)]
    assert all("<|im_start|>" not in p and r.endswith("<|endoftext|>") and "\\boxed{" in r for p, r in plain)
    assert any(p.startswith(PRETRAINED_TEMPLATE.split("{")[0][:40]) and r.startswith("<think>") for p, r in plain)


def test_no_checks_corpus_has_no_reflection() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.styles import NO_CHECKS, render_v3_document
    from shared.reflection import reflection_rate

    rng = random.Random(2)
    responses = [render_v3_document(make_chain_problem(rng), rng, 16, NO_CHECKS, plain=False)[1] for _ in range(500)]
    assert reflection_rate(responses) == 0.0


def test_worked_solutions_grow_with_difficulty() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.styles import solution
    from shared.model.tokenizer import build_tokenizer

    tok, rng = build_tokenizer(), random.Random(3)
    lengths: dict[tuple[str, int], list[int]] = {}
    for _ in range(400):
        p = make_chain_problem(rng)
        for style in ("direct", "step", "checked", "slip"):
            lengths.setdefault((style, p.difficulty), []).append(len(tok(solution(p, style, rng))["input_ids"]))
    mean = {k: sum(v) / len(v) for k, v in lengths.items()}
    for d in (1, 2, 3):
        assert mean["direct", d] < mean["step", d] < mean["checked", d] < mean["slip", d]
    for style in ("step", "checked", "slip"):
        assert mean[style, 1] < mean[style, 2] < mean[style, 3]
    assert max(max(v) for v in lengths.values()) < 192  # `--world 3` runs use max_response_tokens 192


def test_v2_stays_selectable(tmp_path) -> None:
    import json

    from shared.model.synthetic import write_split

    v2 = [json.loads(line) for line in write_split(tmp_path / "v2", "heldout", 20, 0, 2).read_text().splitlines()]
    v3 = [json.loads(line) for line in write_split(tmp_path / "v3", "heldout", 20, 0, 3).read_text().splitlines()]
    assert {r["task"].split("_")[0] for r in v2} <= {"count", "add", "compare", "bar", "angle"}
    assert "difficulty" not in v2[0] and {r["task"] for r in v3} <= {"sum", "redblue", "range", "chain"}
    assert {r["difficulty"] for r in v3} <= {1, 2, 3}
