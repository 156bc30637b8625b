"""Eureka against TRL's GRPOTrainer: same tiny base, data, verifier, samples per step and steps, in one run.

Both train the cached tiny Qwen2.5-VL on the synthetic train split with image prompts (TRL's VLM path
runs without torchvision: a Qwen2.5-VL processor over the PIL image processor, no video processor,
and a chat template that renders exactly Eureka's instruct prompt; the bench checks the token ids and
pixel values agree before training). Per step: 8 prompts x 8 samples, lr 2e-4 cosine to 2e-5,
temperature 1, 48 response tokens, clip 0.2, no KL, vision tower frozen. TRL's reward function calls
the same `eureka reward serve` over gRPC (accuracy + 0.5 x format), so there is one verifier.
Eureka runs as `eureka up` (async, its default processes); TRL as one process on the same machine,
one after the other. Wall-clock: launch to final checkpoint on disk (services or trainer start-up,
model load, every step, save), evaluations excluded; both are then evaluated by the same command
(`eureka eval --greedy --limit N` on the held-out split). Writes bench/results/peer_trl.json.

What differs by design: Eureka trains each step on 8 groups that pass its online filter (mean accuracy in
[0.1, 0.9]), so it generates more than it trains on (`groups_filtered`), and runs async (samples up to
max_staleness versions old, importance-corrected); TRL trains on-policy on the 8 groups it sampled, where a
group with equal rewards contributes nothing. Prompt order differs (Eureka's buffer cursor, TRL's sampler).

    make bench-peer_trl    # .venv-bench/bin/python bench/peer_trl.py [--steps 20] [--eval-limit 200] [--trl-threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "gen")]

from eureka_cli.local.config import SMALL_WORLD_RECIPE as RECIPE  # noqa: E402  (what `eureka up` trains with)
from eureka_cli.local.config import UpConfig  # noqa: E402
from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)



def eureka_cmd(*words: str) -> list[str]:
    return [sys.executable, "-m", "eureka_cli", *words]


def run_eval(model: Path, heldout: Path, limit: int, out: Path) -> dict[str, Any]:
    """The held-out greedy evaluation both systems get (`eureka eval`), as a child process."""
    subprocess.run(eureka_cmd("eval", "--model", str(model), "--data", str(heldout), "--limit", str(limit), "--greedy",
                              "--system-prompt", json.dumps(RECIPE.system_prompt), "--out", str(out)),
                   check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def run_eureka(args: argparse.Namespace, work: Path, data: tuple[Path, Path, Path], base_eval: Path) -> dict[str, Any]:
    """`eureka up` for args.steps; train time = launch until learner/final is saved."""
    train, heldout, base = data
    run_dir = work / "eureka"
    run_dir.mkdir(parents=True)
    shutil.copy(base_eval, run_dir / "eval_base.json")  # eureka up reuses it: the base is evaluated once
    final = run_dir / "learner" / "final" / "config.json"
    start = time.monotonic()
    proc = subprocess.Popen(eureka_cmd("up", "--run-dir", str(run_dir), "--steps", str(args.steps),
                                       "--eval-limit", str(args.eval_limit), "--seed", str(args.seed),
                                       "--train-data", str(train), "--heldout-data", str(heldout),
                                       "--model-path", str(base)))
    train_s = None
    while proc.poll() is None:
        if train_s is None and final.exists():
            train_s = time.monotonic() - start
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"eureka up exited with {proc.returncode}; see {run_dir}")
    total_s = time.monotonic() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    final_eval = json.loads((run_dir / "eval_final.json").read_text())
    return {"train_wall_s": round(train_s or total_s, 1), "wall_with_final_eval_s": round(total_s, 1),
            "steps": summary["steps"], "samples": summary["samples"], **dropped_groups(run_dir),
            "final": final_eval["overall"], "run_dir": str(run_dir)}


def dropped_groups(run_dir: Path) -> dict[str, int]:
    """Groups the learner dropped (online filter, staleness): generated and scored, but not trained on."""
    rows = [json.loads(line) for line in (run_dir / "learner" / "metrics.jsonl").read_text().splitlines() if line]
    return {"groups_filtered": sum(r.get("filtered", 0) for r in rows),
            "groups_stale": sum(r.get("stale", 0) for r in rows)}


def make_processor(tokenizer: Any) -> Any:
    """A Qwen2.5-VL processor without a video processor (whose class check needs torchvision)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kw: Any):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kw)

    # render_chat with the small world's system prompt (the MM-Eureka instruct one) as a chat template.
    system = INSTRUCT_SYSTEM_PROMPT.replace("{", "{{ '{' }}")
    template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + system + "<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|>"
        "<|vision_end|>{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return ImageTextProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer, chat_template=template)


def trl_rows(path: Path) -> list[dict[str, Any]]:
    """TRL conversational rows: the chat with an image placeholder, the image path, the gold answer."""
    from shared.dataset import read_jsonl

    rows = []
    for rec in read_jsonl(path).records:
        content = []
        for m in rec.messages:
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            content += [{"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p["text"]}
                        for p in parts]
        if len(rec.image_paths) != 1:
            raise ValueError(f"record {rec.id} has {len(rec.image_paths)} images; the bench expects one per prompt")
        rows.append({"prompt": [{"role": "user", "content": content}], "image": str(rec.image_paths[0]),
                     "answer": rec.answer})
    return rows


def check_same_prompt(processor: Any, tokenizer: Any, path: Path) -> None:
    """TRL's rendering of the first records must equal Eureka's (token ids, grid, pixel values)."""
    import torch
    from PIL import Image

    from shared.dataset import read_jsonl, record_to_prompt
    from shared.model.prompts import build_prompt_inputs

    for i, (rec, row) in enumerate(zip(read_jsonl(path).records[:4], trl_rows(path)[:4])):
        ref = build_prompt_inputs(record_to_prompt(rec, "check", i), tokenizer, system_prompt=RECIPE.system_prompt)
        msgs = [{"role": "user", "content": [{**p, "image": Image.open(row["image"])} if p["type"] == "image" else p
                                             for p in row["prompt"][0]["content"]]}]
        out = processor.apply_chat_template([msgs], add_generation_prompt=True, tokenize=True, return_dict=True)
        same = (list(out["input_ids"][0]) == ref.input_ids
                and torch.equal(torch.as_tensor(out["image_grid_thw"]), ref.image_grid_thw)
                and torch.allclose(torch.as_tensor(out["pixel_values"]).float(), ref.pixel_values, atol=1e-5))
        if not same:
            raise RuntimeError(f"TRL's prompt for {rec.id} differs from Eureka's; the comparison would be unfair")


def run_trl(args: argparse.Namespace, work: Path, train: Path, base: Path) -> dict[str, Any]:
    """GRPOTrainer for args.steps with the reward service as its reward function; saves work/trl/final."""
    start = time.monotonic()
    import torch
    from datasets import Dataset, Image
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from eureka.v1 import reward_pb2, reward_pb2_grpc
    from services.learner.engine import cosine_lr
    from shared.model.evaluate import reward_channel
    from shared.model.io import load_model, load_tokenizer, save_model, suppressed_token_ids

    r = RECIPE
    torch.set_num_threads(args.trl_threads)
    out_dir = work / "trl"
    tok = load_tokenizer(base)
    processor = make_processor(tok)
    check_same_prompt(processor, tok, train)
    dataset = Dataset.from_list(trl_rows(train)).cast_column("image", Image())
    model = load_model(base, freeze_vision=r.freeze_vision)
    # Eureka's optimizer and schedule exactly (services/learner/engine.py): AdamW, warmup then cosine to min_lr.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=r.lr, betas=r.adam_betas,
                                  weight_decay=r.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr(step, args.steps, r.lr, r.min_lr, r.warmup_ratio) / r.lr)
    stats: list[tuple[float, float, float]] = []  # (accuracy, format, total) of every scored completion

    with reward_channel() as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)

        def eureka_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            req = reward_pb2.VerifyRequest(format_weight=r.format_weight, items=[
                reward_pb2.VerifyItem(response=t, gold=g, mode=reward_pb2.REWARD_MODE_INSTRUCT, item_id=str(i))
                for i, (t, g) in enumerate(zip(texts, answer))])
            results = stub.Verify(req, timeout=120).results
            stats.extend((x.accuracy, x.format, x.total) for x in results)
            return [x.total for x in results]

        class Progress(TrainerCallback):
            def on_step_end(self, targs: Any, state: Any, control: Any, **_: Any) -> None:
                last = stats[-r.n_samples * r.rollout_batch_prompts:] or [(0.0, 0.0, 0.0)]
                acc, fmt, rew = (sum(x[k] for x in last) / len(last) for k in range(3))
                el = time.monotonic() - start
                eta = el / state.global_step * (args.steps - state.global_step)
                print(f"  trl step {state.global_step}/{args.steps}  reward {rew:.3f}  accuracy {acc:.3f}  "
                      f"format {fmt:.3f}  {el:.0f}s elapsed, ETA {eta:.0f}s", flush=True)

        config = GRPOConfig(
            output_dir=str(out_dir), max_steps=args.steps, seed=args.seed, use_cpu=True, bf16=False,
            per_device_train_batch_size=r.n_samples * r.rollout_batch_prompts, gradient_accumulation_steps=1,
            num_generations=r.n_samples, num_iterations=1, max_completion_length=r.max_response_tokens,
            temperature=r.temperature, top_p=r.top_p, top_k=0, beta=r.kl_coef, epsilon=r.clip_eps,
            loss_type="dapo", scale_rewards="group", max_grad_norm=r.grad_clip, gradient_checkpointing=False,
            generation_kwargs={"suppress_tokens": suppressed_token_ids(tok)},
            report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, log_level="warning",
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=eureka_reward, args=config, train_dataset=dataset,
                              processing_class=processor, callbacks=[Progress()], optimizers=(optimizer, scheduler))
        trainer.remove_callback(PrinterCallback)  # our progress line instead of a dict per step
        trainer.train()
        save_model(trainer.model, tok, out_dir / "final")
    train_s = time.monotonic() - start
    log = [h for h in trainer.state.log_history if "reward" in h]
    return {"train_wall_s": round(train_s, 1), "steps": trainer.state.global_step, "samples": len(stats),
            "first_step_reward": log[0]["reward"] if log else None,
            "last_step_reward": log[-1]["reward"] if log else None,
            "model_dir": str(out_dir / "final")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="training steps for both (8 prompts x 8 samples each)")
    ap.add_argument("--eval-limit", type=int, default=200, help="held-out problems in each greedy evaluation")
    ap.add_argument("--trl-threads", type=int, default=1,
                    help="torch CPU threads of the TRL process (1: on a busy 2-core machine 2 threads ran 2x slower)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-path", type=Path, default=None, help="base checkpoint (default: the cached tiny base)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "runs" / "bench-peer_trl", help="emptied at the start")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "peer_trl.json")
    args = ap.parse_args()
    import trl

    load_start = load_1m()  # other work on the machine skews both wall-clocks alike; recorded
    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    from eureka_cli.local.run import prepare

    # The files and base `eureka up` would use by default, passed to it explicitly so both sides share them.
    train, heldout, base = prepare(UpConfig(seed=args.seed, model_path=args.model_path))
    print(f"peer_trl: {args.steps} steps of {RECIPE.rollout_batch_prompts} prompts x {RECIPE.n_samples} samples, "
          f"image prompts, held-out eval on {args.eval_limit} problems", flush=True)
    print("base: evaluating", flush=True)
    base_eval = run_eval(base, heldout, args.eval_limit, args.work_dir / "eval_base.json")
    print("eureka: eureka up", flush=True)
    eureka = run_eureka(args, args.work_dir, (train, heldout, base), args.work_dir / "eval_base.json")
    print("trl: GRPOTrainer", flush=True)
    peer = run_trl(args, args.work_dir, train, base)
    print("trl: evaluating", flush=True)
    trl_eval = run_eval(Path(peer["model_dir"]), heldout, args.eval_limit, args.work_dir / "trl_eval_final.json")
    peer["final"] = trl_eval["overall"]
    keys = ("accuracy", "format", "mean_length", "reflection_rate")
    result = {
        "prompts": "image (text question with the image; TRL's VLM path without torchvision)",
        "steps": args.steps, "recipe": RECIPE.model_dump(mode="json"),
        "eval": f"eureka eval --greedy --limit {args.eval_limit}",
        "data": {"train": str(train), "heldout": str(heldout), "base": str(Path(base).resolve())},
        "trl_version": trl.__version__, "trl_threads": args.trl_threads,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_1m": {"start": load_start, "end": load_1m()},
        "machine": machine(),
        "base": {k: base_eval["overall"][k] for k in keys},
        "eureka": {**{k: v for k, v in eureka.items() if k != "final"}, **{k: eureka["final"][k] for k in keys}},
        "trl": {**{k: v for k, v in peer.items() if k != "final"}, **{k: peer["final"][k] for k in keys}},
    }
    result["speedup_eureka_over_trl"] = round(peer["train_wall_s"] / eureka["train_wall_s"], 3)
    result["accuracy_gain"] = {name: round(result[name]["accuracy"] - result["base"]["accuracy"], 4)
                               for name in ("eureka", "trl")}
    write_result(result, args.out)
    print(f"train wall-clock: eureka {eureka['train_wall_s']}s, trl {peer['train_wall_s']}s "
          f"(trl/eureka = {result['speedup_eureka_over_trl']}x)")
    print(f"held-out accuracy: base {result['base']['accuracy']:.3f}, eureka {result['eureka']['accuracy']:.3f}, "
          f"trl {result['trl']['accuracy']:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
