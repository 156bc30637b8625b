"""The end-of-run plot: reward, accuracy, format, response length and reflection rate against step."""

from __future__ import annotations

import json
from pathlib import Path

CURVES = (
    ("reward", "reward mean"),
    ("accuracy", "accuracy"),
    ("format", "format rate"),
    ("response_tokens", "response length (tokens)"),
    ("reflection_rate", "reflection-phrase rate"),
)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a metrics JSONL file; a torn last line (crash mid-write) is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(rows: list[dict], out: Path, title: str = "Eureka RL") -> Path:
    """Write a PNG with one panel per curve (missing metrics are left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    for ax, (key, label) in zip(axes, CURVES):
        points = [(s, r[key]) for s, r in zip(steps, rows) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker=".", linewidth=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
