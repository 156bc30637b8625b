"""Rule-based scoring of one response: answer extraction, format check, math-verify equivalence, letter fallback.

Pure functions, no gRPC or HTTP. `score_item` runs inside a scoring worker process (math-verify's
`signal.alarm` needs a main thread); everything here is also usable directly in tests.
"""

from __future__ import annotations

import re
from decimal import Decimal
from dataclasses import dataclass
from enum import Enum
from typing import Any

INSTRUCT = "instruct"
PRETRAINED = "pretrained"

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_BOXED = "\\boxed{"
_BRACE_TOKEN = re.compile(r"\\boxed\{|\\[{}]|[{}]")

# A multiple-choice reply: "B", "(B)", "B.", "B. 12", "B) 12", "option B", "the answer is (B)".
_LETTER = re.compile(
    r"^(?:the\s+)?(?:(?:correct\s+)?(?:answer|option|choice)\s*(?:is\s*)?[:：]?\s*)?"
    r"[\(\[]?([A-Z])[\)\]]?(?:\s*[.:：)]\s*.*)?$",
    re.IGNORECASE | re.DOTALL,
)
# A number written with thousands or decimal separators and an optional currency sign.
_SEPARATED_NUMBER = re.compile(r"^\s*(?:\\?\$|€|£)?\s*[-+]?\d[\d ,.]*(?:\s*(?:\\?\$|€|£))?\s*$")
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[")  # already inline/display LaTeX (an escaped \$ is a dollar sign)
_GOLD_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")
# A plain number in scientific notation ("3e2", "1.5E-3"): LaTeX would read the e as Euler's number.
_SCIENTIFIC = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d{1,3}\s*$")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
     "hundred": "100", "one hundred": "100", "thousand": "1000", "one thousand": "1000"}


class Status(str, Enum):
    OK = "ok"
    GOLD_UNPARSEABLE = "gold_unparseable"
    TIMEOUT = "timeout"
    INVALID = "invalid"


@dataclass(frozen=True)
class ItemInput:
    response: str
    gold: str
    mode: str = INSTRUCT
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemScore:
    accuracy: float
    format: float
    extracted: str
    status: Status
    detail: str = ""


def extract_answer(response: str, mode: str) -> str | None:
    """Instruct: the first `<answer>…</answer>`; pretrained: the last `\\boxed{…}` with balanced braces."""
    if mode == PRETRAINED:
        return last_boxed(response)
    start = response.find(_ANSWER_OPEN)  # str.find, not a lazy regex: linear even on "<answer>" x 10,000
    end = response.find(_ANSWER_CLOSE, start + len(_ANSWER_OPEN)) if start != -1 else -1
    if end == -1:
        return None
    answer = response[start + len(_ANSWER_OPEN): end].strip()
    return (last_boxed(answer) or answer) if _BOXED in answer else answer  # <answer>\boxed{B}</answer> answers B


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` whose braces balance: one pass with a stack, linear in the text."""
    stack: list[int] = []  # content start of each open brace; -1 for a plain brace
    last: tuple[int, int] | None = None
    for m in _BRACE_TOKEN.finditer(text):
        token = m.group()
        if token == _BOXED:
            stack.append(m.end())
        elif token == "{":
            stack.append(-1)
        elif token == "}" and stack:
            start = stack.pop()
            if start >= 0 and (last is None or start > last[0]):
                last = (start, m.start())
        # an escaped brace (\\{ or \\}) is text, not structure
    return text[last[0]: last[1]].strip() if last else None


def format_score(response: str, mode: str, min_think_chars: int = 300) -> float:
    """1.0 when the response is exactly one `<think>…</think>` then exactly one `<answer>…</answer>`.

    Pretrained mode asks what its prompt (`shared.model.prompts.PRETRAINED_TEMPLATE`) asks: the same
    shape with the final answer in a `\\boxed{}` inside the answer tag; following MM-Eureka's pretrain
    reward, a think section shorter than `min_think_chars` (after stripping) scores 0.
    """
    for tag in (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE):
        if response.count(tag) != 1:
            return 0.0
    m = _FORMAT.fullmatch(response)
    if m is None or not m.group(1).strip() or not m.group(2).strip():
        return 0.0
    if mode == PRETRAINED and (len(m.group(1).strip()) < min_think_chars or last_boxed(m.group(2)) is None):
        return 0.0
    return 1.0


def gold_letter(gold: str) -> str | None:
    """The letter of a multiple-choice gold ("B", "(B)", "B."), or None."""
    m = _GOLD_LETTER.match(gold.strip())
    return m.group(1) if m else None


def answer_letter(answer: str) -> str | None:
    """The one letter a multiple-choice reply names, upper-cased, or None when it names none or several."""
    m = _LETTER.match(answer.strip())
    return m.group(1).upper() if m else None


def _has_expr(parsed: list[Any]) -> bool:
    # math-verify returns [sympy_expr, text] on success and only the text when nothing parsed.
    return any(not isinstance(p, str) for p in parsed)


def _latex(text: str) -> str:
    """Wrap a bare answer as inline LaTeX for math-verify (left alone when it has its own delimiters)."""
    text = _NUMBER_WORDS.get(text.strip().lower().rstrip("."), text)
    if _SCIENTIFIC.match(text):
        text = format(Decimal(text.strip()).normalize(), "f")  # "3e2" -> "300"
    return text if _DELIMITED.search(text) else f"${text}$"


def _with_separators(text: str, parsed: list[Any], timeout_s: int) -> list[Any]:
    """Add math-verify's plain-number reading ("1 000", "2,74", "$1,000.99") that LaTeX reads as a tuple."""
    if not _SEPARATED_NUMBER.match(text):
        return parsed
    from math_verify import ExprExtractionConfig, parse

    plain = text.replace("\\$", "$")
    return parsed + parse(plain, extraction_config=[ExprExtractionConfig()], parsing_timeout=timeout_s)


_GOLD_CACHE: dict[tuple[str, int], list[Any]] = {}  # per worker process; the n samples of a prompt share its gold
_GOLD_CACHE_MAX = 4096


def parse_gold(gold: str, timeout_s: int) -> list[Any]:
    """The gold parsed once per worker process (LRU of 4096): a group's n samples, and every later group of the
    same prompt, reuse it. Only parses that found an expression are kept, so a timeout under load is retried."""
    from math_verify import parse

    key = (gold, timeout_s)
    if (hit := _GOLD_CACHE.pop(key, None)) is not None:
        _GOLD_CACHE[key] = hit  # most recently used goes last
        return hit
    parsed = _with_separators(gold, parse(_latex(gold), parsing_timeout=timeout_s), timeout_s)
    if _has_expr(parsed):
        if len(_GOLD_CACHE) >= _GOLD_CACHE_MAX:
            del _GOLD_CACHE[next(iter(_GOLD_CACHE))]
        _GOLD_CACHE[key] = parsed
    return parsed


def parse_answer(answer: str, timeout_s: int) -> list[Any]:
    """The answer as LaTeX first; only when that yields no expression, math-verify's string/LaTeX/expr search."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse

    parsed = parse(_latex(answer), parsing_timeout=timeout_s)
    if not _has_expr(parsed):
        cfg = [StringExtractionConfig(), LatexExtractionConfig(), ExprExtractionConfig()]
        parsed = parse(answer, extraction_config=cfg, parsing_timeout=timeout_s)
    return _with_separators(answer, parsed, timeout_s)


def accuracy_score(answer: str, gold: str, options: tuple[str, ...], timeout_s: int,
                   gold_parsed: list[Any] | None = None) -> float:
    """1.0 when the extracted answer equals the gold (math-verify, or the multiple-choice letter)."""
    from math_verify import verify

    letter = gold_letter(gold)
    if letter is not None:
        if answer_letter(answer) == letter:
            return 1.0
        idx = ord(letter) - ord("A")
        if idx >= len(options):
            return 0.0
        gold, gold_parsed = options[idx], None  # the reply may quote the option's text instead of its letter
    elif options and (picked := answer_letter(answer)) is not None and ord(picked) - ord("A") < len(options):
        answer = options[ord(picked) - ord("A")]  # gold is an option's text, the reply names its letter
    if gold_parsed is None:
        gold_parsed = parse_gold(gold, timeout_s)
    answer_parsed = parse_answer(answer, timeout_s)
    return 1.0 if verify(gold_parsed, answer_parsed, timeout_seconds=timeout_s) else 0.0


def score_item(item: ItemInput, min_think_chars: int = 300, timeout_s: int = 5) -> ItemScore:
    """Accuracy, format and the extracted answer of one item; an unparseable gold is an error status scored 0."""
    gold = item.gold.strip()
    if not gold:
        return ItemScore(0.0, 0.0, "", Status.GOLD_UNPARSEABLE, "the gold answer is empty; send the reference answer")
    gold_parsed = None if gold_letter(gold) is not None else parse_gold(gold, timeout_s)
    if gold_parsed is not None and not _has_expr(gold_parsed):
        return ItemScore(0.0, 0.0, "", Status.GOLD_UNPARSEABLE,
                         f"math-verify cannot parse the gold answer {gold[:80]!r}; fix it in the dataset")
    fmt = format_score(item.response, item.mode, min_think_chars)
    answer = extract_answer(item.response, item.mode)
    if answer is None or not answer:
        return ItemScore(0.0, fmt, "", Status.OK)
    return ItemScore(accuracy_score(answer, gold, item.options, timeout_s, gold_parsed), fmt, answer, Status.OK)
