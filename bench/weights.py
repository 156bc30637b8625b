"""Weight stream throughput: a verified pull (`shared.weights.pull_weights`) vs raw loopback TCP, same bytes, same run.

For a 100 MB and a 1 GB state dict (float32 tensors of 4 MiB), a child process plays the learner: it
serves the version over the gRPC WeightService, or writes the same safetensors bytes, in the same
4 MiB chunks, to a plain TCP socket. The parent pulls: gRPC chunks with per-chunk XXH3-64 and the
XXH3-128 digest of the whole into one buffer, then the load into tensors (what a rollout worker gets), against
`recv_into` one buffer allocated the same way (the ceiling), and, for reference, the same TCP read
that also computes the chunk checksums and the digest (what the checks cost apart from the transport).
One untimed warm-up of each path, then the paths alternate; medians of the repeats are reported.
`ratio` compares the verified byte stream with raw TCP (both deliver bytes in one buffer);
`pull_with_load_ratio` adds the load into tensors. Writes bench/results/weights.json.

    nice -n 5 .venv/bin/python bench/weights.py [--sizes-mb 100 1000] [--repeats 5] [--chunk-mb 0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import GrpcConfig, SecurityConfig  # noqa: E402
from shared.grpc_client import create_channel, wait_serving  # noqa: E402
from shared.malloc import reuse_freed_memory  # noqa: E402
from shared.redis_proc import free_port  # noqa: E402
from shared.weights import DEFAULT_CHUNK_BYTES  # noqa: E402
from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)

RESULTS = RESULTS_DIR / "weights.json"
TENSOR_ELEMS = 1 << 20  # 4 MiB of float32


def make_state_dict(mb: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(mb)
    n = max(1, mb * (1 << 20) // (4 * TENSOR_ELEMS))
    return {f"layers.{i}.weight": torch.rand(TENSOR_ELEMS, generator=g) for i in range(n)}


def serve_grpc(mb: int, port: int, ready) -> None:
    from shared.grpc_server import GrpcServer
    from shared.weights import WeightStore, add_weight_service

    reuse_freed_memory()  # as the learner does
    store = WeightStore()
    store.publish(1, make_state_dict(mb))
    server = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=port, grpc_cfg=GrpcConfig(),
                        security=SecurityConfig()).start()
    ready.set()
    server.wait()


def serve_tcp(mb: int, port: int, ready) -> None:
    """The same safetensors bytes, written in the weight stream's chunks (4 MiB) to each connection."""
    from shared.weights import serialize_state_dict

    reuse_freed_memory()  # the baseline's processes run as the weight stream's do
    blob = memoryview(serialize_state_dict(make_state_dict(mb)))
    with socket.create_server(("127.0.0.1", port)) as srv:
        ready.set()
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(len(blob).to_bytes(8, "little"))
                for offset in range(0, len(blob), DEFAULT_CHUNK_BYTES):
                    conn.sendall(blob[offset : offset + DEFAULT_CHUNK_BYTES])


def tcp_pull(port: int, verify: bool = False) -> int:
    """Read the bytes into one buffer allocated as the weight stream allocates its own (`np.empty`: no memset).

    With `verify`, also compute what the weight stream checks (XXH3-64 of each 4 MiB chunk once it is in,
    the XXH3-128 digest of the whole) inline: a reference that prices the checks apart from the transport."""
    import numpy as np
    import xxhash

    from shared.weights.frames import chunk_checksum

    with socket.create_connection(("127.0.0.1", port)) as s:
        head = b""
        while len(head) < 8:
            head += s.recv(8 - len(head))
        total = int.from_bytes(head, "little")
        buf = np.empty(total, dtype=np.uint8)
        view, got, checked, digest = memoryview(buf), 0, 0, xxhash.xxh3_128(seed=1)
        while got < total:
            n = s.recv_into(view[got:], total - got)
            if n == 0:
                raise ConnectionError("sender closed early")
            got += n
            while verify and checked < got and (got - checked >= DEFAULT_CHUNK_BYTES or got == total):
                chunk = view[checked : min(checked + DEFAULT_CHUNK_BYTES, got)]
                chunk_checksum(chunk)
                digest.update(chunk)
                checked += len(chunk)
        return got


def grpc_pull(channel, chunk_bytes: int) -> tuple[int, float, float]:
    """The two phases of `pull_weights`: stream + verify (bytes), then load into tensors; (bytes, s, s)."""
    from shared.weights.pull import assemble, open_weight_stream  # pull_weights' steps, timed apart
    from shared.weights.safetensors_io import state_dict_from_buffer

    t = time.perf_counter()
    version, blob = assemble(open_weight_stream(channel, 1, 600, chunk_bytes), 1)
    streamed = time.perf_counter()
    state_dict_from_buffer(blob)
    assert version == 1
    return len(blob), streamed - t, time.perf_counter() - streamed


def measure(mb: int, repeats: int, chunk_bytes: int) -> dict:
    ctx = mp.get_context("spawn")
    gport, tport = free_port(), free_port()
    ready = [ctx.Event(), ctx.Event()]
    procs = [ctx.Process(target=serve_grpc, args=(mb, gport, ready[0]), daemon=True),
             ctx.Process(target=serve_tcp, args=(mb, tport, ready[1]), daemon=True)]
    for p in procs:
        p.start()
    try:
        for r in ready:
            if not r.wait(300):
                raise RuntimeError("a sender did not start in 300 s")
        channel = create_channel(f"127.0.0.1:{gport}", GrpcConfig(deadline_s=600), SecurityConfig())
        wait_serving(channel, timeout_s=60)
        grpc_pull(channel, chunk_bytes)  # one untimed warm-up of each path: lazy imports, connection, windows
        tcp_pull(tport)
        rates: dict[str, list[float]] = {"stream": [], "pull": [], "tcp": [], "tcp_verified": []}
        for i in range(repeats):
            nbytes, stream_s, load_s = grpc_pull(channel, chunk_bytes)
            mb_total = nbytes / (1 << 20)
            rates["stream"].append(mb_total / stream_s)
            rates["pull"].append(mb_total / (stream_s + load_s))
            t = time.perf_counter()
            tcp_pull(tport)
            rates["tcp"].append(mb_total / (time.perf_counter() - t))
            t = time.perf_counter()
            tcp_pull(tport, verify=True)
            rates["tcp_verified"].append(mb_total / (time.perf_counter() - t))
            print(f"  {mb} MB repeat {i + 1}/{repeats}: weight stream {rates['stream'][-1]:,.0f} MB/s (with load into"
                  f" tensors {rates['pull'][-1]:,.0f}), raw TCP {rates['tcp'][-1]:,.0f} MB/s (computing the same"
                  f" checks {rates['tcp_verified'][-1]:,.0f})", flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        return {"state_dict_mb": round(mb_total), "weight_stream_mb_s": round(med["stream"], 1),
                "raw_tcp_mb_s": round(med["tcp"], 1), "ratio": round(med["stream"] / med["tcp"], 3),
                "pull_with_load_mb_s": round(med["pull"], 1),
                "pull_with_load_ratio": round(med["pull"] / med["tcp"], 3),
                "tcp_with_same_checks_mb_s": round(med["tcp_verified"], 1),
                "ratio_vs_tcp_with_same_checks": round(med["stream"] / med["tcp_verified"], 3),
                "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()}}
    finally:
        for p in procs:
            p.kill()
            p.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-mb", type=int, default=0, help="chunk size asked for (0 = server default, as rollout)")
    args = parser.parse_args()
    reuse_freed_memory()  # as the rollout worker does; the TCP reader shares this process
    load_start = load_1m()
    print(f"load average (1 min) at start {load_start:.2f} on {os.cpu_count()} cpus", flush=True)
    results = []
    for mb in args.sizes_mb:
        print(f"state dict of {mb} MB: starting the senders", flush=True)
        results.append(measure(mb, args.repeats, args.chunk_mb << 20))
        r = results[-1]
        print(f"{mb} MB: weight stream {r['weight_stream_mb_s']:,.0f} MB/s, raw TCP {r['raw_tcp_mb_s']:,.0f} MB/s,"
              f" ratio {r['ratio']:.2f} (vs TCP computing the same checks {r['ratio_vs_tcp_with_same_checks']:.2f})",
              flush=True)
    out = {
        "ratio": min(r["ratio"] for r in results),
        "target_ratio": 0.5,
        "sizes": results,
        "chunk_bytes": (args.chunk_mb << 20) or DEFAULT_CHUNK_BYTES,  # 0 asks for the server default
        "what": "weight stream = gRPC chunks parsed from their wire bytes + per-chunk XXH3-64 + offsets + XXH3-128 of"
                " the whole, copied into one buffer (bytes verified); pull_with_load adds the load into tensors (views"
                " of that buffer); baseline = the same bytes sent in the same 4 MiB chunks over loopback TCP, recv_into"
                " one buffer allocated the same way (np.empty); tcp_with_same_checks also computes the same XXH3s",
        "load_average_1m": {"start": load_start, "end": load_1m()},
        "machine": machine(),
    }
    write_result(out, RESULTS)
    print(f"ratio (worst size) {out['ratio']:.2f} (target >= 0.5); wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
