"""Reflection in responses: the reflection-word rate (the "aha moment" signal), the style of a response
(direct, step, checked, fixed) and effective reflection (a fix that turned a wrong value right)."""

from __future__ import annotations

import re

REFLECTION_PATTERNS: tuple[str, ...] = (
    r"\bwait\b",
    r"\bre-?check(ing|ed)?\b",
    r"\blet me (check|verify|double[- ]check|re-?examine|reconsider)\b",
    r"\bdouble[- ]check\b",
    r"\bhowever\b",
    r"\bon second thought\b",
    r"\bre-?evaluate\b",
    r"\bi made a mistake\b",
)
_REFLECTION = re.compile("|".join(REFLECTION_PATTERNS), re.IGNORECASE)


def is_reflective(text: str) -> bool:
    """True when the text holds one of REFLECTION_PATTERNS."""
    return _REFLECTION.search(text) is not None


def reflection_rate(texts: list[str]) -> float:
    """Share of texts with a reflective phrase; 0.0 for no texts."""
    if not texts:
        return 0.0
    return sum(is_reflective(t) for t in texts) / len(texts)


STYLES = ("direct", "step", "checked", "fixed")
_EQUATION = re.compile(r"\d\s*[-+×x*/÷]\s*\d+\s*=\s*\d")
_FIX = re.compile(r"\bwait\b|\bi made a mistake\b|\bon second thought\b", re.IGNORECASE)
_STATED = re.compile(r"(\d+(?:\s*[-+×x*/÷]\s*\d+)+)\s*=\s*(-?\d+(?:\.\d+)?)")  # left side, result


def response_style(text: str) -> str:
    """What a response does, read from its text: `fixed` (a reflection that revises, "Wait, ..."),
    `checked` (another reflective phrase, e.g. "Let me check"), `step` (worked equations, no reflection)
    or `direct` (none of these)."""
    if _FIX.search(text):
        return "fixed"
    if is_reflective(text):
        return "checked"
    return "step" if _EQUATION.search(text) else "direct"


def style_shares(texts: list[str]) -> dict[str, float]:
    """Share of each of STYLES among the texts (zeros for no texts)."""
    styles = [response_style(t) for t in texts]
    return {s: (styles.count(s) / len(styles) if styles else 0.0) for s in STYLES}


def is_effective_reflection(text: str, correct: bool) -> bool:
    """A reflection that turned a wrong value right: the response is correct, and the first equation after a
    fix phrase ("Wait, ...") gives another result than the first equation before it with the same left side
    (the value the fix replaced). A fix of a check that slipped while the value was right is not effective."""
    if not correct:
        return False
    for fix in _FIX.finditer(text):
        after = _STATED.search(text, fix.end())
        if after is None:
            continue
        lhs, result = _spaceless(after.group(1)), after.group(2)
        earlier = next((m.group(2) for m in _STATED.finditer(text, 0, fix.start()) if _spaceless(m.group(1)) == lhs),
                       result)
        if earlier != result:
            return True
    return False


def _spaceless(expr: str) -> str:
    return re.sub(r"\s+", "", expr)
