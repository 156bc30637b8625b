"""Rollout throughput: tokens/s of one worker through the whole service path vs a bare `generate` loop, same run.

The same tiny Qwen2.5-VL (random weights, the tiny base's architecture), the same prompts (a picture and a
question each), the same sampling (n samples, temperature 1, top_p 1, stop on <|im_end|>, max response
length) and the same torch thread count on both paths. Service path: redis, the buffer and reward
services and one `eureka rollout serve` process pulling its weights from a weight stream; the clock
runs from EnqueuePrompts to the last group read back by a learner-style SampleGroups (claim, weight
check, generation with behaviour log-probs, Verify, PutGroups included; `worker_generate_share` is the
part of that time the worker spent inside `generate`). A round's prompts arrive in claims of
`--claim-prompts` (the worker's default, 4): the worker scores and puts one claim while it generates
the next. Bare path: `model.generate` in this process on the same claims, each left-padded into one
batch (as the worker's hf backend batches a claim), tokens counted up to the stop. The two alternate
round by round.
Writes bench/results/rollout.json.

`--backend vllm` (in the vLLM venv: `make bench-rollout_vllm`): the worker runs the vllm backend and the
baseline is vLLM's own offline `LLM.generate` in this process on the same claims (image pads collapsed, the
same sampling, no log-probs); writes bench/results/rollout_vllm.json.

    .venv/bin/python bench/rollout.py [--rounds 3] [--prompts 8] [--claim-prompts 4] [--samples 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, rollout_pb2, rollout_pb2_grpc  # noqa: E402

from shared.config import GrpcConfig, SecurityConfig  # noqa: E402
from shared.grpc_client import create_channel, wait_serving  # noqa: E402
from shared.grpc_server import GrpcServer  # noqa: E402
from shared.malloc import reuse_freed_memory  # noqa: E402
from shared.redis_proc import free_port, start_redis  # noqa: E402
from shared.weights import WeightStore, add_weight_service  # noqa: E402
from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)

RESULTS = RESULTS_DIR / "rollout.json"
EUREKA = [sys.executable, "-m", "eureka_cli"]


def channel(port: int):
    return create_channel(f"127.0.0.1:{port}", GrpcConfig(deadline_s=120), SecurityConfig())


def make_prompts(first: int, n: int) -> list[common_pb2.Prompt]:
    from PIL import Image

    out = []
    for i in range(first, first + n):
        buf = io.BytesIO()
        Image.new("RGB", (56 + 28 * (i % 3), 84), (40 * (i % 6), 120, 200)).save(buf, "PNG")
        msgs = [{"role": "user", "content": [{"type": "image", "image": f"{i}.png"},
                                             {"type": "text", "text": f"How many shapes are there? ({i})"}]}]
        out.append(common_pb2.Prompt(prompt_id=f"bench:0:{i}", messages_json=json.dumps(msgs), answer=str(i % 7),
                                     images=[common_pb2.ImageRef(data=buf.getvalue())], cursor=i))
    return out


def bare_round(model, tok, prompts, samples: int, max_tokens: int, claim: int) -> tuple[int, float]:
    """The baseline: plain `generate` on the round's prompts, each claim of `claim` left-padded into one batch
    as the worker's backend batches it; (tokens up to the stop, seconds)."""
    import torch

    from shared.model.io import generation_stop_ids
    from shared.model.prompts import batch_inputs, build_prompt_inputs

    stops = set(generation_stop_ids(tok))
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(prompts), claim):
        kwargs = batch_inputs([build_prompt_inputs(p, tok) for p in prompts[first : first + claim]], tok.pad_token_id,
                              image_token_id=model.config.image_token_id)
        with torch.inference_mode():
            out = model.generate(**kwargs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_tokens, num_return_sequences=samples,
                                 eos_token_id=sorted(stops), pad_token_id=tok.pad_token_id)
        for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
            tokens += next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
    return tokens, time.perf_counter() - start


def bare_round_vllm(llm, tok, prompts, samples: int, max_tokens: int, claim: int) -> tuple[int, float]:
    """The vllm baseline: vLLM's offline `generate` on the round's claims, one call a claim; (tokens, seconds)."""
    from vllm import SamplingParams

    from services.rollout.backends.vllm import collapse_image_pads
    from shared.model.io import generation_stop_ids
    from shared.model.prompts import build_prompt_inputs, load_image

    params = SamplingParams(n=samples, temperature=1.0, top_p=1.0, max_tokens=max_tokens,
                            stop_token_ids=generation_stop_ids(tok), detokenize=False)
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(prompts), claim):
        batch = [{"prompt_token_ids": collapse_image_pads(build_prompt_inputs(p, tok).input_ids, pad),
                  "multi_modal_data": {"image": [load_image(r.data, r.uri) for r in p.images]}}
                 for p in prompts[first : first + claim]]
        for out in llm.generate(batch, params, use_tqdm=False):
            tokens += sum(len(c.token_ids) for c in out.outputs)
    return tokens, time.perf_counter() - start


def service_round(buffer, prompts, cursor: int) -> tuple[int, float, float]:
    """Enqueue the prompts and read their groups back; (response tokens, seconds, worker generate seconds)."""
    start = time.perf_counter()
    buffer.EnqueuePrompts(buffer_pb2.EnqueuePromptsRequest(prompts=prompts, cursor_start=cursor,
                                                           cursor_end=cursor + len(prompts)))
    tokens, got, batches = 0, 0, {}
    while got < len(prompts):
        reply = buffer.SampleGroups(buffer_pb2.SampleGroupsRequest(
            consumer="bench", num_groups=1, policy_version=0, max_staleness=1000, filter_low=0.0, filter_high=1.0,
            wait_ms=60_000), timeout=90)
        for sg in reply.groups:
            tokens += sum(len(s.response_token_ids) for s in sg.group.samples)
            batches[sg.group.generate_seconds] = True  # one value per generation batch
            got += 1
        buffer.AckGroups(buffer_pb2.AckGroupsRequest(consumer="bench", entry_ids=[g.entry_id for g in reply.groups]))
    return tokens, time.perf_counter() - start, sum(batches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per round")
    parser.add_argument("--claim-prompts", type=int, default=4, help="prompts per claim = per generation batch")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each path")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--kv-share", type=float, default=0.1, help="vllm: gpu_memory_utilization of each engine")
    parser.add_argument("--compile", action="store_true", help="vllm: torch.compile / CUDA graphs (GPU runs)")
    args = parser.parse_args()
    reuse_freed_memory()  # as the rollout worker does: the bare loop runs in this process alike

    import torch

    from shared.model.io import load_model, load_tokenizer, make_random_tiny

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    model_path = make_random_tiny(tmp / "model", seed=0)
    model, tok = load_model(model_path), load_tokenizer(model_path)
    for p in model.parameters():
        p.requires_grad_(False)
    redis = start_redis(tmp / "redis")
    store = WeightStore()
    store.publish(0, model.state_dict())
    bare, results, worker_args = bare_round, RESULTS, []
    if args.backend == "vllm":
        from services.rollout.backends.vllm import engine_args
        from services.rollout.config import RolloutConfig

        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        vllm_cfg = {"gpu_memory_utilization": args.kv_share, "enforce_eager": not args.compile}
        cfg = RolloutConfig(backend="vllm", claim_batch_prompts=args.claim_prompts, vllm=vllm_cfg,
                            recipe={"n_samples": args.samples, "max_response_tokens": args.max_tokens})
        llm = LLM(**engine_args(str(model_path), cfg))
        model, results = llm, RESULTS_DIR / "rollout_vllm.json"
        bare = bare_round_vllm
        worker_args = ["--backend", "vllm", "--vllm.gpu-memory-utilization", str(args.kv_share),
                       "--vllm.enforce-eager", json.dumps(not args.compile)]
    weights = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(),
                         security=SecurityConfig()).start()
    ports = {name: free_port() for name in ("buffer", "reward", "rollout")}
    logs = open(tmp / "services.log", "w")  # noqa: SIM115
    procs = [
        subprocess.Popen([*EUREKA, "buffer", "serve", "--port", str(ports["buffer"]), "--metrics-port", "0",
                          "--redis.url", redis.url], env={**os.environ, "EUREKA_REDIS__PASSWORD": redis.password},
                         cwd=REPO, stdout=logs, stderr=logs),
        subprocess.Popen([*EUREKA, "reward", "serve", "--grpc-port", str(ports["reward"]), "--http-port",
                          str(free_port()), "--metrics-port", "0", "--workers", "1"],
                         cwd=REPO, stdout=logs, stderr=logs),
        subprocess.Popen([*EUREKA, "rollout", "serve", "--port", str(ports["rollout"]), "--metrics-port", "0",
                          "--buffer-address", f"127.0.0.1:{ports['buffer']}",
                          "--reward-address", f"127.0.0.1:{ports['reward']}",
                          "--learner-address", f"127.0.0.1:{weights.port}", "--model-path", str(model_path),
                          "--worker-id", "bench", "--claim-batch-prompts", str(args.claim_prompts),
                          "--claim-wait-ms", "500",
                          "--cpu-threads", str(args.threads), "--recipe.n-samples", str(args.samples),
                          "--recipe.max-response-tokens", str(args.max_tokens), *worker_args],
                         cwd=REPO, stdout=logs, stderr=logs),
    ]
    try:
        print("starting redis, buffer, reward and one rollout worker", flush=True)
        for name in ("buffer", "reward", "rollout"):
            wait_serving(channel(ports[name]), timeout_s=180)  # rollout: SERVING once weights are loaded
        status = rollout_pb2_grpc.RolloutServiceStub(channel(ports["rollout"]))
        assert status.GetStatus(rollout_pb2.GetStatusRequest()).state == rollout_pb2.WORKER_STATE_RUNNING
        buffer = buffer_pb2_grpc.BufferServiceStub(channel(ports["buffer"]))
        print("warm-up round (not timed)", flush=True)
        service_round(buffer, make_prompts(0, 2), 0)  # also: the worker's first generate
        bare(model, tok, make_prompts(0, 2), args.samples, args.max_tokens, args.claim_prompts)
        cursor = 2
        totals = {"service": [0, 0.0], "bare": [0, 0.0]}
        generating = 0.0  # seconds the worker spent inside generate during the service rounds
        for r in range(args.rounds):
            prompts = make_prompts(cursor, args.prompts)
            for path in ("bare", "service") if r % 2 == 0 else ("service", "bare"):
                if path == "bare":
                    tokens, seconds = bare(model, tok, prompts, args.samples, args.max_tokens, args.claim_prompts)
                else:
                    tokens, seconds, gen_s = service_round(buffer, prompts, cursor)
                    generating += gen_s
                totals[path][0] += tokens
                totals[path][1] += seconds
                rate = tokens / seconds
                print(f"  round {r + 1}/{args.rounds} {path}: {tokens} tokens in {seconds:.2f}s = {rate:,.0f} tokens/s",
                      flush=True)
            cursor += args.prompts
        service_tps = totals["service"][0] / totals["service"][1]
        bare_tps = totals["bare"][0] / totals["bare"][1]
        out = {
            "service_tokens_per_s": round(service_tps, 1),
            "bare_generate_tokens_per_s": round(bare_tps, 1),
            "ratio": round(service_tps / bare_tps, 3),
            "worker_generate_share": round(generating / totals["service"][1], 3),
            "target_ratio": 0.85,
            "rounds": args.rounds, "prompts_per_round": args.prompts, "prompts_per_claim": args.claim_prompts,
            "samples_per_prompt": args.samples,
            "max_response_tokens": args.max_tokens, "torch_threads": args.threads,
            "service_tokens": totals["service"][0], "bare_tokens": totals["bare"][0],
            "backend": args.backend,
            "model": "tiny Qwen2.5-VL (random weights), float32, CPU",
            "load_average_1m": load_1m(),
            "machine": machine(),
        }
        write_result(out, results)
        print(f"service {service_tps:,.0f} tokens/s vs bare generate {bare_tps:,.0f} tokens/s: ratio {out['ratio']:.2f}"
              f" (target >= 0.85); wrote {results}")
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        weights.stop(grace=0)
        redis.stop()


if __name__ == "__main__":
    raise SystemExit(main())
