"""What every benchmark records beside its figures, and how it writes them to bench/results/."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS_DIR = Path(__file__).with_name("results")


def machine() -> str:
    """The machine a figure was measured on (figures of different machines are not comparable)."""
    return f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}"


def load_1m() -> float:
    """The 1-minute load average: other work on a shared machine skews every wall-clock alike."""
    return round(os.getloadavg()[0], 2)


def write_result(result: dict, path: Path) -> None:
    """Write the result as JSON (the file the README's figures come from) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")
