"""Reward throughput: the service over gRPC (batches of 64) vs a single-process loop calling math-verify directly.

Both score the same 2,000 distinct items (integers, decimals, fractions, LaTeX, percentages, sets,
multiple choice; right and wrong answers) in the same run. The baseline is the naive in-process loop a
reward function would run (`score_item`: extraction + math-verify parse/verify, one item after another);
the service is a real `eureka reward serve` process with its default pool. Writes bench/results/reward.json.

    .venv/bin/python bench/reward.py [--items 2000] [--batch 64] [--workers 2] [--clients 2]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from report import RESULTS_DIR, load_1m, machine, write_result  # bench/report.py

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "gen")]


def make_items(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(response, gold, mode) triples, all distinct so math-verify's caches do not flatter either side."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        kind = i % 8
        gold, right, wrong = {
            0: (str(a), str(a), str(a + 1)),
            1: (f"{a}.{b}", f"{a}.{b}", f"{a}.{b + 1}"),
            2: (f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"{b}/{a}"),
            3: (f"{a}\\sqrt{{{b}}}", f"{a}\\sqrt{{{b}}}", f"{a}\\sqrt{{{b + 1}}}"),
            4: (f"{a}\\%", f"{a}", f"{a + 2}\\%"),
            5: (f"\\{{{a},{b}\\}}", f"\\{{{b},{a}\\}}", f"\\{{{a},{b + 1}\\}}"),
            6: ("ABCD"[a % 4], f"({'ABCD'[a % 4]}) {a}", "ABCD"[(a + 1) % 4]),
            7: (f"{a}\\pi", f"{a}\\pi", f"{a + 1}\\pi"),
        }[kind]
        answer = right if rng.random() < 0.5 else wrong
        items.append((f"<think>step {i}: compute carefully</think><answer>{answer}</answer>", gold, "instruct"))
    return items


def progress(label: str, done: int, total: int, start: float) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    print(f"\r{label}: {done}/{total} items, {rate:.0f} items/s", end="", flush=True)


def run_baseline(items: list[tuple[str, str, str]]) -> tuple[float, list[float]]:
    """Wall seconds, CPU seconds and accuracies of the in-process loop over `items`."""
    from services.reward.core import ItemInput, score_item

    start, cpu, accuracies = time.perf_counter(), time.process_time(), []
    for i, (response, gold, mode) in enumerate(items):
        accuracies.append(score_item(ItemInput(response, gold, mode), 300, 5).accuracy)
        if i % 50 == 0:
            progress("  baseline (in-process loop)", i, len(items), start)
    elapsed = time.perf_counter() - start
    progress("  baseline (in-process loop)", len(items), len(items), start)
    print()
    return elapsed, time.process_time() - cpu, accuracies


def tree_cpu_s(root: int) -> float:
    """User+system CPU seconds of a process and all its live descendants (Linux /proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += stats.get(pid, (0, 0.0))[1]
        frontier.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A real `eureka reward serve` process and a gRPC stub to it."""

    def __init__(self, workers: int) -> None:
        import grpc
        import httpx

        from eureka.v1 import reward_pb2_grpc

        grpc_port, http_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EUREKA_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eureka_cli", "reward", "serve", "--grpc-port", str(grpc_port), "--http-port",
             str(http_port), "--metrics-port", "0", "--workers", str(workers)], cwd=REPO, env=env)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("reward server did not become ready")
            time.sleep(0.2)
        self.stub = reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def run(self, items: list[tuple[str, str, str]], batch: int, clients: int) -> tuple[float, float, list[float], list[float]]:
        """Wall seconds, server CPU seconds, per-batch latencies and accuracies of `items` sent in batches."""
        cpu = tree_cpu_s(self.proc.pid)
        from eureka.v1 import reward_pb2

        batches = [
            reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response=r, gold=g, item_id=str(i + j))
                                            for j, (r, g, _) in enumerate(items[i: i + batch])])
            for i in range(0, len(items), batch)
        ]
        latencies: list[float] = []
        accuracies: dict[int, float] = {}
        lock, cursor, done = threading.Lock(), [0], [0]
        start = time.perf_counter()

        def client() -> None:
            while True:
                with lock:
                    if cursor[0] >= len(batches):
                        return
                    request = batches[cursor[0]]
                    cursor[0] += 1
                t = time.perf_counter()
                reply = self.stub.Verify(request, timeout=300)
                with lock:
                    if len(request.items) == batch:  # p99 is reported for full batches only
                        latencies.append(time.perf_counter() - t)
                    accuracies.update({int(r.item_id): r.accuracy for r in reply.results})
                    done[0] += len(reply.results)
                    progress(f"  service (gRPC, batches of {batch})", done[0], len(items), start)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        print()
        elapsed = time.perf_counter() - start
        return elapsed, tree_cpu_s(self.proc.pid) - cpu, latencies, [accuracies[i] for i in range(len(items))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2, help="concurrent gRPC callers (a rollout fleet sends in parallel)")
    parser.add_argument("--rounds", type=int, default=8, help="baseline and service alternate over this many slices")
    args = parser.parse_args()
    items = make_items(args.items)
    from services.reward.core import ItemInput, score_item

    score_item(ItemInput("<answer>1/2</answer>", "0.5"), 300, 5)  # warm sympy here, as each worker does
    service = Service(args.workers)
    load_before = load_1m()
    base_s = serv_s = base_cpu = serv_cpu = 0.0
    base_acc: list[float] = []
    serv_acc: list[float] = []
    latencies: list[float] = []
    try:
        service.run(make_items(args.batch, seed=1), args.batch, 1)  # warm-up on other items, not timed
        # Interleave rounds so both sides see the same background load on a shared machine.
        chunk = -(-len(items) // (args.rounds * args.batch)) * args.batch
        for r in range(args.rounds):
            part = items[r * chunk: (r + 1) * chunk]
            print(f"round {r + 1}/{args.rounds} ({len(part)} items)")
            seconds, cpu, acc = run_baseline(part)
            base_s, base_cpu, base_acc = base_s + seconds, base_cpu + cpu, base_acc + acc
            seconds, cpu, lat, acc = service.run(part, args.batch, args.clients)
            serv_s, serv_cpu, latencies, serv_acc = serv_s + seconds, serv_cpu + cpu, latencies + lat, serv_acc + acc
    finally:
        service.close()
    load_after = load_1m()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    result = {
        "items": len(items), "batch": args.batch, "workers": args.workers, "clients": args.clients,
        "rounds": args.rounds, "cpus": os.cpu_count(),
        "baseline_items_per_s": round(len(items) / base_s, 1), "service_items_per_s": round(len(items) / serv_s, 1),
        "ratio": round(base_s / serv_s, 2), "p99_batch_latency_s": round(p99, 4),
        "median_batch_latency_s": round(statistics.median(latencies), 4), "batches": len(latencies),
        # CPU per item does not depend on other tenants: it shows the service's overhead over the bare loop,
        # and (workers x baseline CPU / service CPU) is the ratio two idle cores would give.
        "baseline_cpu_ms_per_item": round(1000 * base_cpu / len(items), 2),
        "service_cpu_ms_per_item": round(1000 * serv_cpu / len(items), 2),
        "ratio_on_idle_cores_from_cpu": round(min(args.workers, os.cpu_count() or 1) * base_cpu / serv_cpu, 2),
        "accuracy_agreement": sum(a == b for a, b in zip(base_acc, serv_acc)) / len(items),
        "baseline_mean_accuracy": round(sum(base_acc) / len(items), 3),
        "load_average_1m": {"start": load_before, "end": load_after},
        "machine": machine(),
    }
    out = RESULTS_DIR / "reward.json"
    write_result(result, out)
    print(f"ratio service/baseline = {result['ratio']} (target >= 1.5 on 2 cores); wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
