"""The end-of-run plot: reward, accuracy, format, response length, reflection and response styles against step."""

from __future__ import annotations

import json
from pathlib import Path

CURVES = (
    ("reward", "reward mean"),
    ("accuracy", "accuracy"),
    ("format", "format rate"),
    ("response_tokens", "response length (tokens)"),
    ("reflection_rate", "reflection-phrase rate"),
    ("effective_reflection", "effective reflection"),
    ("styles", "response styles (share)"),  # one line per style
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


def plot_curves(rows: list[dict], out: Path, title: str = "Eureka RL",
                held_out: dict[str, tuple[float, float]] | None = None) -> Path:
    """Write a PNG with one panel per curve (missing metrics are left blank); `held_out` maps a curve's key
    to the (base, final) held-out values, drawn as dashed and solid horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.6 * len(CURVES), 3.2))
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    for ax, (key, label) in zip(axes, CURVES):
        points = [(s, r[key]) for s, r in zip(steps, rows) if r.get(key) is not None]
        series = {name: [(s, v[name]) for s, v in points] for name in points[0][1]} if points and isinstance(
            points[0][1], dict) else {"": points}
        for name, line in series.items():
            if line:
                ax.plot(*zip(*line), marker=".", linewidth=1, label=name or None)
        if key in (held_out or {}):
            base, final = held_out[key]
            ax.axhline(base, color="grey", linestyle="--", linewidth=1, label="held-out base")
            ax.axhline(final, color="black", linewidth=1, label="held-out final")
        if len(series) > 1 or key in (held_out or {}):
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
