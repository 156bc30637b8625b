"""`eureka eval` end to end on an untrained tiny model, scored by a real reward service subprocess; the base
model's acceptance band when the cached base exists (building it is the slow test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


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
