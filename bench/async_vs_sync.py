"""Async against sync: wall-clock of the same RL run in `--mode async` and `--mode sync`, same seed and base.

Both runs are `eureka up` on the small world with the same seed, base model, data, recipe and number of
steps; sync is the OpenRLHF/MM-Eureka schedule (rollout waits for every new version), async lets rollout
run up to `max_staleness` versions ahead. The figure is the training wall-clock (services healthy to the
learner's last step) to reach the held-out accuracy both runs end at; `same_accuracy` says whether the two
final held-out accuracies agree within `--tolerance`. Writes bench/results/async_vs_sync.json.

    .venv/bin/python bench/async_vs_sync.py [--steps 30] [--eval-limit 120] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from report import RESULTS_DIR, load_1m, machine, write_result  # bench/report.py

RESULTS = RESULTS_DIR / "async_vs_sync.json"


def run_mode(mode: str, root: Path, args: argparse.Namespace) -> dict:
    run_dir = root / mode
    cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), "--mode", mode,
           "--steps", str(args.steps), "--eval-limit", str(args.eval_limit), "--seed", str(args.seed)]
    if args.model_path:
        cmd += ["--model-path", args.model_path]
    print(f"[{mode}] {' '.join(cmd[2:])}", flush=True)
    start = time.monotonic()
    with open(root / f"{mode}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"[{mode}] eureka up exited with {code}; see {root / f'{mode}.log'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"[{mode}] done in {time.monotonic() - start:.0f}s: train {summary['train_time_s']}s, "
          f"held-out accuracy {summary['base']['accuracy']:.3f} -> {summary['final']['accuracy']:.3f}", flush=True)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-limit", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--model-path", default="", help="base checkpoint (default: the cached tiny base)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="eureka-async-sync-") as tmp:
        runs = {mode: run_mode(mode, Path(tmp), args) for mode in ("async", "sync")}
    a, s = runs["async"], runs["sync"]
    result = {
        "steps": args.steps,
        "async": {"train_time_s": a["train_time_s"], "final_accuracy": a["final"]["accuracy"],
                  "base_accuracy": a["base"]["accuracy"], "final_format": a["final"]["format"]},
        "sync": {"train_time_s": s["train_time_s"], "final_accuracy": s["final"]["accuracy"],
                 "base_accuracy": s["base"]["accuracy"], "final_format": s["final"]["format"]},
        "speedup": round(s["train_time_s"] / a["train_time_s"], 3),
        "same_accuracy": abs(a["final"]["accuracy"] - s["final"]["accuracy"]) <= args.tolerance,
        "tolerance": args.tolerance,
        "load_average_1m": load_1m(),
        "machine": machine(),
        "backend": "hf (CPU)",
    }
    write_result(result, RESULTS)
    print(f"speedup (sync / async train time) = {result['speedup']}, same accuracy: {result['same_accuracy']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
