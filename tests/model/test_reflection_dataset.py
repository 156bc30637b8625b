"""Reflection rate and the MM-Eureka JSONL reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_reflection_rate() -> None:
    from shared.reflection import is_reflective, reflection_rate

    texts = ["Wait, let me re-check the count.", "3 circles.", "However, the bar is 4.", "awaiting"]
    assert [is_reflective(t) for t in texts] == [True, False, True, False]
    assert reflection_rate(texts) == 0.5
    assert reflection_rate([]) == 0.0
    assert is_reflective("Let me check again") and is_reflective("recheck")


def _line(i: int, image: str, answer: object = "3") -> str:
    msg = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": f"q{i}"}]}]
    return json.dumps({"id": f"r{i}", "message": json.dumps(msg), "answer": answer, "task": "count"})


def test_read_jsonl_reports_bad_lines_by_number(tmp_path: Path, png) -> None:
    from shared.dataset import read_jsonl, record_to_prompt

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png())
    lines = [
        _line(0, "img/a.png"),
        "{not json",
        _line(2, "img/missing.png"),
        _line(3, f"file://{tmp_path / 'img' / 'a.png'}", answer=""),
        "",
        _line(5, f"file://{tmp_path / 'img' / 'a.png'}", answer=7),
        json.dumps({"id": "x", "answer": "1"}),
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n")
    res = read_jsonl(f)
    assert [r.id for r in res.records] == ["r0", "r5"]
    assert res.records[1].answer == "7" and res.records[0].task == "count"
    assert len(res.skipped) == 4
    assert res.skipped[0].startswith(f"{f}:2: bad JSON")
    assert f"{f}:3: missing image" in res.skipped[1]
    assert f"{f}:4: no answer" in res.skipped[2]
    assert f"{f}:7:" in res.skipped[3] and "message" in res.skipped[3]
    prompt = record_to_prompt(res.records[0], "train:0:0", cursor=0)
    assert prompt.images[0].data == png() and prompt.answer == "3" and prompt.task == "count"
    assert "img/a.png" not in prompt.messages_json and json.loads(prompt.messages_json)[0]["content"][0] == {"type": "image"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
