"""Extraction, format and letter rules alone (no server): the parts whose edges the corpus cannot isolate."""

from __future__ import annotations

import pytest

from services.reward.core import answer_letter, extract_answer, format_score, gold_letter, last_boxed
from services.reward.openrlhf import response_from_query


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{1}", "1"),
    ("\\boxed{1} then \\boxed{\\frac{a}{b}}", "\\frac{a}{b}"),
    ("\\boxed{\\{1\\}}", "\\{1\\}"),
    ("\\boxed{2} \\boxed{3", "2"),
    ("\\boxed{" * 10_000, None),
    ("no box", None),
])
def test_last_boxed_balances_braces(text, expected) -> None:
    assert last_boxed(text) == expected


def test_first_answer_tag_counts_in_instruct_mode() -> None:
    assert extract_answer("<answer> 1 </answer><answer>2</answer>", "instruct") == "1"
    assert extract_answer("<answer>1", "instruct") is None
    assert extract_answer("<answer>1</answer> \\boxed{2}", "pretrained") == "2"


def test_pretrained_format_needs_a_long_think() -> None:
    short = "<think>" + "x" * 299 + "</think><answer>\\boxed{1}</answer>"
    long = "<think>" + "x" * 300 + "</think><answer>\\boxed{1}</answer>"
    assert format_score(short, "pretrained", 300) == 0.0
    assert format_score(long, "pretrained", 300) == 1.0
    assert format_score(short, "instruct", 300) == 1.0
    assert format_score(long.replace("\\boxed{1}", "1"), "pretrained", 300) == 0.0  # the prompt asks for the box
    assert format_score(short, "pretrained", 0) == 1.0


@pytest.mark.parametrize("reply,letter", [
    ("B", "B"), ("(b)", "B"), ("B. 12", "B"), ("option B", "B"), ("The correct answer is (D)", "D"),
    ("B or C", None), ("Bob", None), ("12", None), ("AB", None),
])
def test_answer_letter(reply, letter) -> None:
    assert answer_letter(reply) == letter


def test_gold_letter_is_upper_case_only() -> None:
    assert gold_letter("(C)") == "C" and gold_letter("x") is None and gold_letter("CD") is None


def test_response_from_query_takes_the_last_assistant_turn() -> None:
    q = "<|im_start|>assistant\nold<|im_end|><|im_start|>user\nq<|im_end|><|im_start|>assistant\n new <|im_end|><|endoftext|>"
    assert response_from_query(q) == "new"
    assert response_from_query("no marker") == ""


def test_gold_is_parsed_once_per_process_and_unparseable_golds_are_not_kept(monkeypatch) -> None:
    from services.reward import core

    monkeypatch.setattr(core, "_GOLD_CACHE", {})
    monkeypatch.setattr(core, "_GOLD_CACHE_MAX", 2)
    first = core.parse_gold("\\frac{3}{4}", 5)
    assert core.parse_gold("\\frac{3}{4}", 5) is first  # the group's other samples reuse the parse
    items = [core.ItemInput(response=f"<think>x</think><answer>{reply}</answer>", gold="0.75")
             for reply in ("3/4", "0.5")]
    assert [core.score_item(i).accuracy for i in items] == [1.0, 0.0]  # a cached gold still verifies both ways
    assert not core._has_expr(core.parse_gold("???", 5))
    assert ("???", 5) not in core._GOLD_CACHE  # only parses with an expression are kept
    core.parse_gold("12", 5)  # a third parseable gold evicts the least recently used ("\\frac{3}{4}")
    assert list(core._GOLD_CACHE) == [("0.75", 5), ("12", 5)]
