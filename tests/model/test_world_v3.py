"""The v3 small world: exact multi-step answers, slips that change the result, every corpus style under the
same prompt with a correct final answer, checks that pass again from the image, and lengths that grow with
difficulty."""

from __future__ import annotations

import random
import re

import pytest



def test_repeat_answers_are_exact_one_sum_a_step() -> None:
    from shared.model.multistep import AMOUNTS, DIFFICULTIES, make_chain_problem

    rng = random.Random(0)
    for _ in range(200):
        p = make_chain_problem(rng)
        c = p.chain
        assert p.task == "repeat" and p.image.size == (112, 112) and p.difficulty in DIFFICULTIES
        assert c.times == p.difficulty and str(c.result) == p.answer and AMOUNTS[0] <= c.x <= AMOUNTS[1]
        asked = f"add {c.x} to it, {c.times} {'time' if c.times == 1 else 'times'}."
        assert c.reads == [f"The number is {c.start}."] and asked in p.question
        assert str(c.start) not in p.question.replace(asked, "")  # read off the image
        steps = re.findall(r"(\d+) \+ (\d+) = (\d+), (\d+) left\.", c.text())
        assert [int(n) for *_, n in steps] == list(range(p.difficulty - 1, -1, -1)) and steps[-1][2] == p.answer
        assert all(int(a) + int(x) == int(v) for a, x, v, _ in steps)
        assert all(steps[i][0] == steps[i - 1][2] for i in range(1, len(steps)))  # each step uses the last value


def test_every_style_ends_right_and_only_the_slip_revises() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.styles import solution
    from shared.reflection import is_effective_reflection, is_reflective, response_style

    rng = random.Random(0)
    for _ in range(300):
        p = make_chain_problem(rng)
        texts = {s: solution(p, s, rng) for s in ("direct", "step", "checked", "slip")}
        for style, text in texts.items():
            last = re.findall(r"(?:= |answer: )(\d+)", text)[-1]  # the last result written
            assert last == p.answer, (style, text)
        assert response_style(texts["direct"]) == "direct" and not is_reflective(texts["step"])
        assert response_style(texts["step"]) == "step"
        assert response_style(texts["checked"]) == "checked" and "Wait" not in texts["checked"]
        assert response_style(texts["slip"]) == "fixed" and texts["slip"].count("Wait,") == 1
        # the checked pass is the step pass with every sum checked right after it, by counting on from its first
        # number with a countdown of what is left to add
        sums = re.findall(r"(\d+) \+ (\d+) = (\d+)", texts["step"])
        checked = re.findall(r"(\d+) \+ (\d+) = (\d+), let me check: ([^.]+)\.", texts["checked"])
        assert [c[:3] for c in checked] == sums
        for a, x, b, count in checked:
            assert count == ", ".join(f"{int(a) + j} {int(x) - j}" for j in range(1, int(x) + 1))
            assert count.endswith(f"{b} 0")
        # a slip: one sum off; the count ends at the right value and the fix says so where it happens
        slip = re.search(r"(\d+) \+ (\d+) = (\d+), let me check: [^.]+ (\d+) 0\. Wait, \1 \+ \2 = \4, not \3\.",
                         texts["slip"])
        assert slip is not None and int(slip.group(4)) == int(slip.group(1)) + int(slip.group(2)) != int(slip.group(3))
        assert is_effective_reflection(texts["slip"], True)
        false_alarm = texts["checked"].replace(" 0. ", f" 0. Wait, {sums[0][0]} + {sums[0][1]} = {sums[0][2]}, "
                                               f"not {sums[0][2]}. ", 1)
        assert response_style(false_alarm) == "fixed" and not is_effective_reflection(false_alarm, True)
        assert not is_effective_reflection(texts["checked"], True)
        assert not is_effective_reflection(texts["slip"], False)


def test_corpus_puts_every_style_under_the_same_prompt() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT, PRETRAINED_TEMPLATE
    from shared.model.styles import StyleMix, render_v3_document
    from shared.reflection import response_style

    rng, mix = random.Random(1), StyleMix()
    styles: dict[str, int] = {}
    for _ in range(2000):
        prompt, response, _ = render_v3_document(make_chain_problem(rng), rng, 16, mix, plain=False)
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
    assert all("<|im_start|>" not in p and r.endswith("<|endoftext|>") and "\\boxed{" in r for p, r, _ in plain)
    assert any(p.startswith(PRETRAINED_TEMPLATE.split("{")[0][:40]) and r.startswith("<think>") for p, r, _ in plain)


def test_no_checks_corpus_has_no_reflection() -> None:
    from shared.model.multistep import make_chain_problem
    from shared.model.styles import NO_CHECKS, render_v3_document
    from shared.reflection import reflection_rate

    rng = random.Random(2)
    responses = [render_v3_document(make_chain_problem(rng), rng, 16, NO_CHECKS, plain=False)[1] for _ in range(500)]
    assert reflection_rate(responses) == 0.0


def test_worked_solutions_grow_with_difficulty() -> None:
    from shared.model.multistep import DIFFICULTIES, RESPONSE_TOKENS, make_chain_problem
    from shared.model.styles import solution
    from shared.model.tokenizer import build_tokenizer

    tok, rng = build_tokenizer(), random.Random(3)
    lengths: dict[tuple[str, int], list[int]] = {}
    for _ in range(400):
        p = make_chain_problem(rng)
        for style in ("direct", "step", "checked", "slip"):
            lengths.setdefault((style, p.difficulty), []).append(len(tok(solution(p, style, rng))["input_ids"]))
    mean = {k: sum(v) / len(v) for k, v in lengths.items()}
    for d in DIFFICULTIES:
        assert mean["direct", d] < mean["step", d] < mean["checked", d] < mean["slip", d]
    for style in ("step", "checked", "slip"):
        assert all(mean[style, d] < mean[style, d + 1] for d in DIFFICULTIES[:-1])
    assert max(max(v) for v in lengths.values()) < RESPONSE_TOKENS - 16  # room for the tags and the stop token


def test_v2_stays_selectable(tmp_path) -> None:
    import json

    from shared.model.synthetic import write_split

    v2 = [json.loads(line) for line in write_split(tmp_path / "v2", "heldout", 20, 0, 2).read_text().splitlines()]
    v3 = [json.loads(line) for line in write_split(tmp_path / "v3", "heldout", 20, 0, 3).read_text().splitlines()]
    assert {r["task"].split("_")[0] for r in v2} <= {"count", "add", "compare", "bar", "angle"}
    assert "difficulty" not in v2[0] and {r["task"] for r in v3} == {"repeat"}
    assert {r["difficulty"] for r in v3} <= {1, 2, 3, 4}


def test_the_slip_is_not_trained_on() -> None:
    """A slip-then-fix document trains the notice and the fix, never the slip: the labels of the slipped number
    are -100, every other response token is trained, and the ids are the response's own tokenization."""
    from shared.model.multistep import make_chain_problem
    from shared.model.pretrain import response_labels
    from shared.model.styles import StyleMix, render_v3_document
    from shared.model.tokenizer import build_tokenizer

    tok, rng = build_tokenizer(), random.Random(4)
    slips = StyleMix(direct=0, step=0, checked=0, slip=1)
    for i in range(200):
        doc = render_v3_document(make_chain_problem(rng), rng, 16, slips, plain=i % 2 == 0)
        ids, labels = response_labels(tok, doc)
        assert ids == tok(doc.response, add_special_tokens=False)["input_ids"]
        ((start, end),) = doc.untrained
        wrong = doc.response[start:end]
        assert tok.decode([t for t, label in zip(ids, labels) if label == -100]) == wrong and wrong[1:].isdigit()
        assert all(label in (-100, t) for t, label in zip(ids, labels))
        assert doc.response[end:].startswith(", let me check:")  # a slip is in a sum, never in a count
        assert f"not {wrong.strip()}." in doc.response[end:]  # the notice and the fix are trained

    step = render_v3_document(make_chain_problem(rng), rng, 16, StyleMix(direct=0, step=1, checked=0, slip=0), False)
    ids, labels = response_labels(tok, step)
    assert step.untrained == () and labels == ids


def test_the_base_trains_with_the_positions_rollout_and_learner_use() -> None:
    """make-base's forward gets `mm_token_type_ids`, so the base learns M-RoPE positions, the ones the rollout
    (generate), the learner's log-probs and evaluation give it; without them transformers gives an image
    prompt text positions, and a base trained that way reads its image at other relative positions."""
    import torch

    from shared.model.io import new_tiny_model
    from shared.model.multistep import make_chain_problem
    from shared.model.pretrain import make_batch
    from shared.model.styles import StyleMix

    model, tok = new_tiny_model(0)
    batch = make_batch([make_chain_problem(random.Random(i)) for i in range(3)], random.Random(0), tok, StyleMix())
    image = batch["input_ids"] == model.config.image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), image) and image.sum(1).tolist() == [16, 16, 16]
    with torch.no_grad():
        mrope = model(**batch).logits
        text = model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
    # the positions matter to the forward the base is trained with (a random model's logits already differ)
    assert (mrope - text).abs().max() > 1e-3


def test_evaluation_reports_length_and_accuracy_by_difficulty() -> None:
    """`eureka eval` (and so summary.json) gives each difficulty its own accuracy and mean length."""
    from shared.model.evaluate import summarize

    rows = [{"id": f"p{d}-{i}", "task": "repeat", "difficulty": d, "accuracy": float(i < d), "format": 1.0,
             "length": 10 * d + i, "text": "Quick answer: 3.", "extracted": "3"} for d in (1, 2, 4) for i in range(4)]
    levels = summarize(rows, samples=1)["difficulty"]
    assert set(levels) == {"1", "2", "4"}
    assert [levels[k]["mean_length"] for k in ("1", "2", "4")] == [11.5, 21.5, 41.5]
    assert [levels[k]["accuracy"] for k in ("1", "2", "4")] == [0.25, 0.5, 1.0]
