"""Waiting on a condition in tests, never a fixed sleep: poll until it holds, fail with what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.05,
               ignore: tuple[type[BaseException], ...] = ()) -> T:
    """The first truthy value of `predicate()` within `timeout_s`; AssertionError naming `what` otherwise.
    Exceptions of the `ignore` types count as not yet (a server still starting, say)."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)
