"""Weight fan-out: seconds to deliver one version to N rollout workers, by broadcast vs by N gRPC pulls, same run.

For a 100 MB and a 1 GB state dict (float32 tensors of 4 MiB) and N = 1, 2, 4 worker processes, this
process plays learner rank 0: a gRPC WeightService over a WeightStore, and a BroadcastHub (gloo on
127.0.0.1). Each worker process holds a channel and a joined BroadcastReceiver. The gRPC path: every
worker pulls the version at once (`pull_weights`: checksums, digest, one buffer, tensors), timed until the
last one has it. The broadcast path: `BroadcastHub.send` to the N joined workers, timed until every worker
reported its digest verified. One untimed warm-up of each, then the paths alternate; medians are reported.
`ratio` = gRPC seconds / broadcast seconds. The projection for 7B to 16 pods over 100 Gb/s comes from the
measured per-byte costs (see `project`). Writes bench/results/fanout.json.

    nice -n 5 .venv/bin/python bench/fanout.py [--sizes-mb 100 1000] [--workers 1 2 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import GrpcConfig, SecurityConfig  # noqa: E402
from shared.malloc import reuse_freed_memory  # noqa: E402
from shared.redis_proc import free_port  # noqa: E402
from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)

RESULTS = RESULTS_DIR / "fanout.json"
TENSOR_ELEMS = 1 << 20  # 4 MiB of float32
BUCKET_BYTES = 64 << 20
LINK_BYTES_S = 100e9 / 8  # 100 Gb/s
QWEN_7B_BYTES, QWEN_7B_VISION_BYTES = 16.6e9, 1.35e9  # bf16 (the vision tower is frozen: not broadcast)


def make_state_dict(mb: int, version: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(version)
    n = max(1, mb * (1 << 20) // (4 * TENSOR_ELEMS))
    return {f"layers.{i}.weight": torch.rand(TENSOR_ELEMS, generator=g) for i in range(n)}


def worker(name: str, weights_port: int, broadcast_json: str, conn) -> None:
    """A rollout worker's weight side: pulls on command, and a receiver that stays joined."""
    reuse_freed_memory()
    from shared.grpc_client import create_channel
    from shared.weights import pull_weights
    from shared.weights.group import BroadcastConfig
    from shared.weights.receive import BroadcastReceiver

    channel = create_channel(f"127.0.0.1:{weights_port}", GrpcConfig(max_message_bytes=64 << 20), SecurityConfig())
    receiver = BroadcastReceiver(BroadcastConfig.model_validate_json(broadcast_json), name)
    receiver.start()
    while (cmd := conn.recv()) is not None:
        if cmd == "join":
            receiver.pulled({})  # no frozen tensors in this bench: the digest of nothing
        elif cmd[0] == "pull":
            version, sd = pull_weights(channel, cmd[1], timeout_s=600)
            del sd
        elif cmd == "take":  # what a worker does between batches: load the staged version, hand its buffer back
            receiver.take()
            receiver.recycle()
        conn.send("ok")
    receiver.stop()


def run_size(mb: int, counts: list[int], repeats: int) -> dict:
    from shared.grpc_server import GrpcServer
    from shared.weights import WeightStore, add_weight_service
    from shared.weights.group import BroadcastConfig
    from shared.weights.hub import BroadcastHub

    store = WeightStore()
    server = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0,
                        grpc_cfg=GrpcConfig(max_message_bytes=64 << 20, workers=16), security=SecurityConfig())
    server.start()
    cfg = BroadcastConfig(enabled=True, address=f"127.0.0.1:{free_port()}", bucket_bytes=BUCKET_BYTES,
                          join_timeout_s=60, op_timeout_s=600, retries=0)
    hub = BroadcastHub(cfg)
    version = 0
    sd = make_state_dict(mb, version)
    hub.send(version, sd)  # no member yet: publishes the (empty) frozen set
    store.publish(version, sd)
    ctx = mp.get_context("spawn")
    rows = []
    for n in counts:
        pipes, procs = [], []
        for i in range(n):
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker, args=(f"w{i}", server.port, cfg.model_dump_json(), b), daemon=True)
            p.start()
            pipes.append(a)
            procs.append(p)

        def all_do(cmd) -> float:
            start = time.perf_counter()
            for c in pipes:
                c.send(cmd)
            for c in pipes:
                c.recv()
            return time.perf_counter() - start

        all_do("join")
        times: dict[str, list[float]] = {"grpc": [], "broadcast": []}
        for rep in range(repeats + 1):  # the first of each is a warm-up
            t = all_do(("pull", version))
            if rep:
                times["grpc"].append(t)
            while hub.joined() != {f"w{i}" for i in range(n)}:
                time.sleep(0.01)
            version += 1
            start = time.perf_counter()
            result = hub.send(version, sd)
            t = time.perf_counter() - start
            assert len(result.members) == n, result
            store.publish(version, sd)
            all_do("take")
            if rep:
                times["broadcast"].append(t)
        for c in pipes:
            c.send(None)
        for p in procs:
            p.join(30)
        g, b = statistics.median(times["grpc"]), statistics.median(times["broadcast"])
        rows.append({"workers": n, "grpc_s": round(g, 3), "broadcast_s": round(b, 3), "ratio": round(g / b, 2),
                     "grpc_runs_s": [round(x, 3) for x in times["grpc"]],
                     "broadcast_runs_s": [round(x, 3) for x in times["broadcast"]]})
        print(f"{mb} MB to {n}: grpc {g:.3f} s, broadcast {b:.3f} s, ratio {g / b:.2f}", flush=True)
    server.stop(0)
    bytes_ = sum(t.numel() * t.element_size() for t in sd.values())
    return {"size_mb": mb, "bytes": bytes_, "rows": rows}


def project(size: dict) -> dict:
    """7B (bf16, 16.6 GB, 1.35 GB of it the frozen vision tower) to 16 pods over 100 Gb/s, from measured costs.

    gRPC: every pod pulls the whole version from one server process, so the server's measured cost per byte
    delivered (at the largest N) applies to 16 x 16.6 GB, and the server's 100 Gb/s link bounds it from below.
    Broadcast: a pipelined collective (NCCL ring or tree) sends the trainable bytes once whatever the number of
    members; its cost per byte is the measured one of a single member, bounded by the link."""
    rows = size["rows"]
    last = rows[-1]
    grpc_per_byte = last["grpc_s"] / (last["workers"] * size["bytes"])
    bcast_per_byte = rows[0]["broadcast_s"] / size["bytes"]
    grpc_s = 16 * QWEN_7B_BYTES * max(grpc_per_byte, 1 / LINK_BYTES_S)
    trainable = QWEN_7B_BYTES - QWEN_7B_VISION_BYTES
    bcast_s = trainable * max(bcast_per_byte, 1 / LINK_BYTES_S)
    return {"model": "Qwen2.5-VL-7B bf16", "pods": 16, "link_gbit_s": 100,
            "grpc_server_s_per_gb": round(grpc_per_byte * 1e9, 3), "broadcast_s_per_gb": round(bcast_per_byte * 1e9, 3),
            "grpc_s": round(grpc_s, 1), "broadcast_s": round(bcast_s, 1), "ratio": round(grpc_s / bcast_s, 1),
            "broadcast_at_link_rate_s": round(trainable / LINK_BYTES_S, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    reuse_freed_memory()
    load_start = load_1m()
    sizes = [run_size(mb, args.workers, args.repeats) for mb in args.sizes_mb]
    at4 = [next((r["ratio"] for r in s["rows"] if r["workers"] == 4), None) for s in sizes]
    write_result({
        "bench": "fanout", "machine": machine(), "load_average_1m": {"start": load_start, "end": load_1m()},
        "backend": "gloo (CPU, 127.0.0.1)",
        "bucket_bytes": BUCKET_BYTES, "repeats": args.repeats, "sizes": sizes,
        "ratio_at_4": dict(zip([f"{s['size_mb']}MB" for s in sizes], at4, strict=True)), "target_ratio_at_4": 2.0,
        "projection_7b_16_pods_100gbit": project(sizes[-1]),
    }, RESULTS)


if __name__ == "__main__":
    main()
