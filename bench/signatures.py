"""RL-zero's three signatures on the v3 small world: held-out accuracy, response length and reflection, base
against final, for `eureka up --world 3` in instruct mode, in pretrained mode, and the ablation (a base whose corpus
has no checked solutions: its reflection rate should stay put while accuracy rises).

    nice -n 5 .venv/bin/python bench/signatures.py [--runs instruct pretrained ablation] [--steps N] [--eval-limit M]
    nice -n 5 .venv/bin/python bench/signatures.py --runs --record NAME=RUN_DIR ...

Each run is a full `eureka up` (its base built into the cache when missing) in a fresh folder under
runs/; the figures come from each run's summary.json and go to bench/results/signatures.json (a run
of some of them keeps the others' last figures there). `--record` adds a finished `eureka up` run
under NAME instead, with the settings it ran with (its config.yaml) beside its figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from report import RESULTS_DIR, load_1m, machine, write_result  # bench/report.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = ("instruct", "pretrained", "ablation")


def run_args(name: str) -> list[str]:
    """`eureka up` flags of a run."""
    v3 = ["--world", "3"]  # the default world, named so a recorded run says it
    if name == "pretrained":
        return [*v3, "--recipe.reward-mode", "pretrained"]
    if name == "ablation":
        from shared.model.cache import ensure_base_model
        from shared.model.pretrain import BaseRecipe

        return [*v3, "--model-path", str(ensure_base_model(BaseRecipe(world=3, checks=False)))]
    return v3


def signatures(summary: dict) -> dict:
    """The figures the acceptance reads, from one run's summary.json."""
    keys = ("accuracy_gain", "accuracy_over_best_base_prompt", "length_ratio", "reflection_gain", "wall_time_s")
    out = {k: summary.get(k) for k in keys}
    for side in ("base", "final"):
        s = summary[side]
        out[side] = {k: s.get(k) for k in ("accuracy", "format", "mean_length", "reflection_rate",
                                            "effective_reflection")}
        out[side]["styles"] = {k: v["share"] for k, v in (s.get("styles") or {}).items()}
        out[side]["length_by_difficulty"] = {k: v["mean_length"] for k, v in s.get("difficulty", {}).items()}
    out["base_other_prompt"] = summary.get("base_other_prompt")
    return out


def settings(run_dir: Path) -> dict:
    """What a run ran with, from its config.yaml: the world, steps, held-out size and the recipe's non-default
    fields that the signatures depend on."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    keys = ("reward_mode", "max_response_tokens", "loss_agg", "lr", "n_samples", "rollout_batch_prompts")
    return {"world": cfg["world"], "steps": cfg["steps"], "eval_limit": cfg["eval_limit"],
            "model_path": cfg["model_path"], "recipe": {k: cfg["recipe"][k] for k in keys}}


def recorded(run_dir: Path) -> dict:
    """The result entry of a finished run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "settings": settings(run_dir), **signatures(summary)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", choices=RUNS, default=list(RUNS))
    ap.add_argument("--record", nargs="*", default=[], metavar="NAME=RUN_DIR",
                    help="record a finished eureka up run under NAME (no new run)")
    ap.add_argument("--steps", type=int, default=0, help="learner steps (default: eureka up's)")
    ap.add_argument("--eval-limit", type=int, default=0, help="held-out problems evaluated (default: eureka up's)")
    args = ap.parse_args()
    result: dict = {"bench": "signatures", "machine": machine(), "load_1m_start": load_1m(), "runs": {}}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for item in args.record:
        name, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "summary.json").is_file():
            raise SystemExit(f"--record {item}: give NAME=RUN_DIR, a run folder that holds summary.json")
        result["runs"][name] = recorded(Path(folder))
    for name in args.runs:
        run_dir = Path("runs") / f"signatures-{name}-{stamp}"
        cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), *run_args(name),
               *(["--steps", str(args.steps)] if args.steps else []),
               *(["--eval-limit", str(args.eval_limit)] if args.eval_limit else [])]
        start = time.monotonic()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            result["runs"][name] = {"error": f"eureka up exited {proc.returncode}; see {run_dir}"}
            continue
        result["runs"][name] = {"command_s": round(time.monotonic() - start, 1), **recorded(run_dir)}
    result["load_1m_end"] = load_1m()
    path = RESULTS_DIR / "signatures.json"
    if path.exists():  # a run of some of the RUNS keeps the others' last figures
        result["runs"] = {**json.loads(path.read_text()).get("runs", {}), **result["runs"]}
    write_result(result, path)
    return 0 if all("error" not in r for r in result["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
