"""Reflection-word rate: the share of responses with a reflective phrase (the "aha moment" signal)."""

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
