"""Random lines (good records, random JSON, wrong types, deep nesting, non-UTF-8 bytes) through
`read_jsonl`: good records are kept, every bad line is skipped with a sentence that names it, nothing raises."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dataset import read_jsonl
from tests.hostile.conftest import OUTCOMES, count
from tests.hostile.protogen import TEXT

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
                    max_leaves=8)
CHAT = '[{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]'
GOOD = st.builds(lambda i, a: json.dumps({"id": f"r{i}", "message": CHAT, "answer": a}),
                 st.integers(0, 10**6), TEXT.filter(lambda a: a.strip() and "\n" not in a and "\r" not in a))
NEAR = st.builds(lambda k, v: json.dumps({"id": "x", "message": CHAT, "answer": "1", k: v}),
                 st.sampled_from(["message", "answer", "id", "messages", "task"]), JSON)
IMAGE = st.builds(
    lambda ref: json.dumps({"message": json.dumps([{"role": "user", "content": [{"type": "image", "image": ref}]}]),
                            "answer": "1"}),
    st.one_of(TEXT, JSON))
LINE = st.one_of(GOOD, NEAR, IMAGE, JSON.map(json.dumps), TEXT,
                 st.sampled_from(["[" * 100_000, '{"a":' * 50_000, "{", "null", '"x"', "1e999"]))
RAW = st.one_of(LINE.map(lambda s: s.replace("\n", " ").replace("\r", " ").encode()),
                st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")), st.just(b'{"answer": "\xff\xfe"}'))


@SETTINGS
@given(lines=st.lists(RAW, min_size=1, max_size=50))
def test_random_lines_are_kept_or_skipped_with_their_line_number(lines) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "data.jsonl")
        path.write_bytes(b"\n".join(lines) + b"\n")
        count("dataset lines", len(lines))
        result = read_jsonl(path)
    numbered = [n for n, line in enumerate(lines, start=1) if line.strip()]
    assert len(result.records) + len(result.skipped) == len(numbered)
    named = [int(re.match(rf"{re.escape(str(path))}:(\d+): .+", s).group(1)) for s in result.skipped]
    assert set(named) <= set(numbered) and len(set(named)) == len(named)
    OUTCOMES["dataset records"] += len(result.records)
    OUTCOMES["dataset skipped"] += len(result.skipped)
