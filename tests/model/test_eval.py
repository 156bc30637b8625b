"""`eureka eval` end to end on an untrained tiny model, scored by a real reward service subprocess; the cached
bases' bands and the v3 style gate before RL (checking pays off in the base's own samples) when they exist
(building the default base is the slow test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.model.multistep import RESPONSE_TOKENS


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.synthetic import write_split

    out = tmp_path_factory.mktemp("syn")
    return write_split(out, "heldout", 120, seed=0)


def test_eval_cli_reports_families_as_json(tiny_dir: Path, heldout: Path, tmp_path: Path) -> None:
    """The JSONL copied away from its images (found again through --image-root), plus two bad lines whose
    reasons are printed and reported."""
    out, data = tmp_path / "report.json", tmp_path / "heldout.jsonl"
    remote = json.dumps([{"role": "user", "content": [{"type": "image", "image": "https://example.com/a.png"}]}])
    data.write_text(heldout.read_text() + "{oops\n" + json.dumps({"message": remote, "answer": "1"}) + "\n")
    cmd = [sys.executable, "-m", "eureka_cli", "eval", "--model", str(tiny_dir), "--data", str(data),
           "--image-root", str(heldout.parent), "--samples", "2", "--limit", "6", "--max-new-tokens", "12",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["skipped_lines"] == 2
    assert report["settings"]["skipped"] == [f"{data}:121: bad JSON (Expecting property name enclosed in double "
                                             "quotes at column 2)",
                                             f"{data}:122: remote image https://example.com/a.png is not fetched; "
                                             "download it and give its path"]
    assert all(f"skipped {line}" in proc.stderr for line in report["settings"]["skipped"])
    overall = report["overall"]
    assert overall["prompts"] == 6 and overall["responses"] == 12
    assert 0.0 <= overall["accuracy"] <= 1.0 and 0.0 <= overall["format"] <= 1.0
    assert 0 < overall["mean_length"] <= 12 and "group_signal" in overall
    assert sum(f["responses"] for f in report["families"].values()) == 12
    assert "family" in proc.stdout and "overall" in proc.stdout


def test_eval_scores_known_answers_through_the_reward_service() -> None:
    from shared.model.evaluate import reward_channel, score

    with reward_channel() as channel:
        res = score(channel, [("<think>3 red.</think><answer>3</answer>", "3"), ("The answer is 3.", "3"),
                              ("<think>x</think><answer>4</answer>", "3"), ("<answer>C</answer>", "C")], "instruct")
    assert [(r.accuracy, r.format) for r in res] == [(1.0, 1.0), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]


def test_eval_scores_the_pretrained_format_with_the_runs_think_floor() -> None:
    """`eureka up` trains with a think floor of 0 (short small-world solutions); its evaluations must score
    the format the same way, not with the reward service's default of 300 characters."""
    from shared.model.evaluate import reward_channel, score

    short = [("<think>Quick answer: 5.</think><answer>\\boxed{5}</answer>", "5")]
    for floor, fmt in ((0, 1.0), (300, 0.0)):
        with reward_channel(min_think_chars=floor) as channel:
            (r,) = score(channel, short, "pretrained")
        assert (r.accuracy, r.format) == (1.0, fmt), floor


def _image_loss_gap(base: Path) -> float:
    """Teacher-forced loss on count and bar solutions with each row's image swapped for another row's,
    minus the loss with the right images: above zero when the base reads its images."""
    import random

    import torch

    from shared.model.corpus import CorpusMix
    from shared.model.io import load_model, load_tokenizer
    from shared.model.pretrain import make_batch
    from shared.model.synthetic import make_problem

    model, tok = load_model(base), load_tokenizer(base)
    rng = random.Random(7)
    problems = [make_problem(rng, family, mc=False) for family in ("count", "bar") for _ in range(8)]
    batch = make_batch(problems, random.Random(0), tok, CorpusMix(plain=1.0, boxed=0.0))
    rows = batch["pixel_values"].view(len(problems), -1, batch["pixel_values"].shape[-1])
    swapped = dict(batch, pixel_values=rows.roll(1, 0).reshape(batch["pixel_values"].shape))
    with torch.no_grad():
        return model(**swapped).loss.item() - model(**batch).loss.item()


def _base_band_check(base: Path, heldout: Path) -> None:
    from eureka_cli.local.config import SMALL_WORLD_RECIPE
    from shared.model.evaluate import EvalSettings, evaluate

    assert _image_loss_gap(base) > 0.05  # the base reads the image (a collapsed vision tower gives ~0)
    system = SMALL_WORLD_RECIPE.system_prompt  # the prompts `eureka up` trains and evaluates with
    greedy = evaluate(EvalSettings(model=base, data=heldout, greedy=True, system_prompt=system), progress=False)
    assert 0.05 <= greedy["overall"]["accuracy"] <= 0.40, greedy["overall"]
    sampled = evaluate(EvalSettings(model=base, data=heldout, samples=8, limit=24, system_prompt=system),
                       progress=False)
    assert sampled["overall"]["format"] < 0.3, sampled["overall"]
    assert sampled["overall"]["group_signal"] > 0.2, sampled["overall"]


def test_cached_base_is_in_the_acceptance_band(heldout: Path) -> None:
    from shared.model.cache import base_is_current, base_model_dir

    if not base_is_current():
        pytest.skip("no current cached base; `eureka make-base` builds it (the slow test does too)")
    _base_band_check(base_model_dir(), heldout)


@pytest.mark.slow
def test_make_base_builds_a_base_in_the_acceptance_band(heldout: Path) -> None:
    from shared.model.cache import base_is_current, base_model_dir, ensure_base_model

    ensure_base_model()
    assert base_is_current()
    _base_band_check(base_model_dir(), heldout)


def _v3_image_loss_gap(base: Path) -> float:
    """Teacher-forced loss on step-by-step solutions with each row's image swapped for another row's, minus
    the loss with the right images: above zero when the base reads its images."""
    import random

    import torch

    from shared.model.io import load_model, load_tokenizer
    from shared.model.multistep import make_chain_problem
    from shared.model.pretrain import make_batch
    from shared.model.styles import StyleMix

    model, tok = load_model(base), load_tokenizer(base)
    rng = random.Random(7)
    problems = [make_chain_problem(rng) for _ in range(16)]
    batch = make_batch(problems, random.Random(0), tok, StyleMix(direct=0, step=1, checked=0, slip=0, boxed=0))
    rows = batch["pixel_values"].view(len(problems), -1, batch["pixel_values"].shape[-1])
    swapped = dict(batch, pixel_values=rows.roll(1, 0).reshape(batch["pixel_values"].shape))
    with torch.no_grad():
        return model(**swapped).loss.item() - model(**batch).loss.item()


V3_TOKENS = RESPONSE_TOKENS  # `--world 3` runs' max_response_tokens: a slip-then-fix answer is not cut


def style_gate(base: Path, heldout: Path, prompts: int = 48) -> dict[str, float]:
    """Accuracy by style in the base's own samples (temperature 1, 8 per prompt, instruct prompt), and of the
    responses that open with "Work, then check:" (`check_opener`: the checked and the slip-then-fix ones)."""
    from eureka_cli.local.config import SMALL_WORLD_RECIPE
    from shared.model.evaluate import EvalSettings, evaluate

    report = evaluate(EvalSettings(model=base, data=heldout, samples=8, limit=prompts, max_new_tokens=V3_TOKENS,
                                   system_prompt=SMALL_WORLD_RECIPE.system_prompt), progress=False)
    styles = report["overall"]["styles"]
    acc = {k: styles[k]["accuracy"] or 0.0 for k in ("direct", "step", "checked", "fixed")}
    opened = [(styles[k]["share"], acc[k]) for k in ("checked", "fixed")]
    acc["check_opener"] = sum(s * a for s, a in opened) / max(sum(s for s, _ in opened), 1e-9)
    return {**acc, **{f"{k}_share": v["share"] for k, v in styles.items()}}


def _v3_band_check(base: Path, heldout: Path) -> None:
    from eureka_cli.local.config import SMALL_WORLD_RECIPE
    from shared.model.evaluate import EvalSettings, evaluate

    assert _v3_image_loss_gap(base) > 0.05  # the base reads the image (a collapsed vision tower gives ~0)
    system = SMALL_WORLD_RECIPE.system_prompt  # the prompts `eureka up` trains and evaluates with
    greedy = evaluate(EvalSettings(model=base, data=heldout, greedy=True, max_new_tokens=V3_TOKENS,
                                   system_prompt=system), progress=False)["overall"]
    # greedy decoding answers directly (the corpus's plurality style): room for RL to lengthen and check
    assert greedy["styles"]["direct"]["share"] > 0.8 and greedy["reflection_rate"] < 0.1, greedy
    assert 0.05 <= greedy["accuracy"] <= 0.6, greedy


def _style_gate_check(gate: dict[str, float]) -> None:
    """The gate before RL: in the base's own samples accuracy rises from direct to step by step to opened with a
    check (checked and fixed alike), and checking is common enough for RL to find it: RL then has a reason to
    select working and checking (docs/MODEL.md, "The gate before RL")."""
    assert gate["checked_share"] + gate["fixed_share"] > 0.1, gate
    assert gate["direct"] < gate["step"] < gate["check_opener"], gate


@pytest.fixture(scope="module")
def heldout_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.synthetic import write_split

    return write_split(tmp_path_factory.mktemp("syn3"), "heldout", 120, seed=0, version=3)


def _cached_v3_base() -> Path:
    from shared.model.cache import base_is_current, base_model_dir
    from shared.model.pretrain import BaseRecipe

    recipe = BaseRecipe(world=3)
    if not base_is_current(recipe=recipe):
        pytest.skip("no current cached v3 base; `eureka make-base --world 3` builds it")
    return base_model_dir(recipe)


def test_cached_v3_base_is_in_the_band(heldout_v3: Path) -> None:
    _v3_band_check(_cached_v3_base(), heldout_v3)


def test_cached_v3_base_passes_the_style_gate(heldout_v3: Path) -> None:
    _style_gate_check(style_gate(_cached_v3_base(), heldout_v3))


@pytest.mark.slow
def test_make_base_v3_passes_the_band_and_the_style_gate(heldout_v3: Path) -> None:
    from shared.model.cache import ensure_base_model
    from shared.model.pretrain import BaseRecipe

    base = ensure_base_model(BaseRecipe(world=3))
    _v3_band_check(base, heldout_v3)
    _style_gate_check(style_gate(base, heldout_v3))
