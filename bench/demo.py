"""The demo as a benchmark: `eureka up` with `make demo`'s defaults in a fresh run folder, its `summary.json`
recorded. The baseline is the base model, evaluated on the same held-out problems in the same run (greedy).
The wall time includes building the tiny base when it was not cached (`base_cached` says which).
Writes bench/results/demo.json (the README's demo table comes from it through `bench/report.py`).

    nice -n 5 .venv/bin/python bench/demo.py [--steps 60] [--eval-limit 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from report import RESULTS_DIR, load_1m, machine, write_result  # bench/report.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = RESULTS_DIR / "demo.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from shared.model.cache import base_is_current

    base_cached, load_start = base_is_current(), load_1m()
    with tempfile.TemporaryDirectory(prefix="eureka-demo-") as tmp:
        run_dir = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "eureka_cli", "up", "--run-dir", str(run_dir), "--steps", str(args.steps),
               "--eval-limit", str(args.eval_limit), "--seed", str(args.seed)]
        with open(Path(tmp) / "up.log", "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            print((Path(tmp) / "up.log").read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"eureka up exited with {code}")
        summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("curves", None)
    result = {**summary, "base_cached": base_cached, "eval_problems": args.eval_limit, "seed": args.seed, "backend": "hf (CPU)",
              "load_average_1m": {"start": load_start, "end": load_1m()}, "machine": machine()}
    write_result(result, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
