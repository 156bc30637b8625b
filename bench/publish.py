"""Rank 0's host memory while it publishes a version under ZeRO-3: gathered bucket by bucket into the version file
against the consolidated state dict, the same model and run.

    python bench/publish.py        (make bench-publish)  ->  bench/results/publish.json

Two learner processes on 127.0.0.1 (DeepSpeed ZeRO-3, gloo, CPU, fp32 with AdamW) hold a model of 64, then 160
linear layers (4 MiB a layer: 32 and 80 buckets of 8 MiB). Rank 0 samples its anonymous resident memory
(`RssAnon`: the file's pages are the kernel's cache, not counted) every millisecond while it publishes, with the
learner's malloc settings (`shared.malloc`), above what is alive when it starts. `bucketed` is the learner's
publish (`services/learner/gather.write_version` into the version file, then `WeightStore.publish_file`);
`consolidated` gathers DeepSpeed's whole 16-bit state dict on rank 0 and publishes it into the in-memory store. Both
give the same version digest (checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import Peak  # noqa: E402  (bench/memory.py)
from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)

LAYERS, WIDTH = (64, 160), 1024  # models of 64 and 160 linear layers, 4 MiB of fp32 weights each
BUCKET_BYTES = 8 << 20
WORLD = 2


def _anon() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def rank_main(mode: str, layers: int, out_dir: str) -> None:
    """One learner rank: build the ZeRO-3 engine, publish one version, rank 0 prints what it measured."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from services.learner.engine import Engine, init_distributed
    from services.learner.gather import write_version
    from shared.malloc import give_back_freed_memory, reuse_freed_memory
    from shared.weights import WeightStore

    reuse_freed_memory()  # as the learner does
    torch.set_num_threads(1)
    init_distributed()
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    config = {"train_batch_size": WORLD, "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
              "zero_allow_untested_optimizer": True, "steps_per_print": 1 << 30}
    ds, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), optimizer=optimizer,
                                       config=config)
    del model, optimizer
    eng = Engine(ds, None, None, 3)
    store = WeightStore()
    path = Path(out_dir) / "v1.safetensors"
    dist.barrier()
    give_back_freed_memory()  # the base: what is alive, not what set-up freed and malloc kept
    start = time.monotonic()
    with Peak(_anon) as peak:
        if mode == "bucketed":
            digest = write_version(eng, path if rank == 0 else None, 1, BUCKET_BYTES)
            if rank == 0:
                store.publish_file(1, path, digest)
        else:
            sd = eng.consolidated_state_dict()
            if rank == 0:
                store.publish(1, sd)
                del sd
    seconds = time.monotonic() - start
    if rank == 0:
        print(json.dumps({"mode": mode, "model_bytes": model_bytes, "peak_anon_bytes": peak.peak - peak.base,
                          "seconds": round(seconds, 3), "digest": store.snapshot().digest}), flush=True)
    dist.barrier()


def run(mode: str, layers: int) -> dict:
    from shared.redis_proc import free_port

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", mode, str(layers), tmp],
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, text=True)
                 for r in range(WORLD)]
        outs = [p.communicate(timeout=900)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"{mode}: a rank failed ({[p.returncode for p in procs]})")
    return json.loads(outs[0].strip().splitlines()[-1])


def one_size(layers: int) -> dict:
    got = {mode: run(mode, layers) for mode in ("bucketed", "consolidated")}
    if got["bucketed"]["digest"] != got["consolidated"]["digest"]:
        raise SystemExit("the two publishes gave different versions")
    model_bytes = got["bucketed"]["model_bytes"]
    return {
        "layers": layers,
        "model_bytes": model_bytes,
        **{mode: {k: got[mode][k] for k in ("peak_anon_bytes", "seconds")} for mode in got},
        "bucketed_peak_in_buckets": round(got["bucketed"]["peak_anon_bytes"] / BUCKET_BYTES, 2),
        "consolidated_peak_in_models": round(got["consolidated"]["peak_anon_bytes"] / model_bytes, 2),
    }


def main() -> None:
    write_result({"bench": "publish", "machine": machine(), "load_1m": load_1m(), "world_size": WORLD,
                  "bucket_bytes": BUCKET_BYTES, "sizes": [one_size(n) for n in LAYERS]}, RESULTS_DIR / "publish.json")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        rank_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
