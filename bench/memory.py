"""Peak memory of one learner training step, the learner's step against the full-logits one, in the same run.

    python bench/memory.py        (make bench-memory)  ->  bench/results/memory.json

Each measurement runs in a fresh process (host RSS sampled every millisecond; on a GPU
`torch.cuda.max_memory_allocated`): a random-init Qwen2.5-VL of growing size with the real vocabulary
(151,936), one prompt and two responses of 1k and 4k tokens, forward + backward + AdamW step.
`new`: hidden states only, log-probs and entropy in checkpointed chunks, gradient checkpointing (the
learner's step). `old`: full [rows, tokens, vocab] fp32 logits, log-softmax and entropy, no checkpointing;
measured at 1k tokens (at 4k it needs several GB a row and is projected from 1k, marked so). A second
table measures the chunked log-probs alone at two vocabularies and two lengths: its extra memory has no
vocab x length term. The Qwen2.5-VL-7B projection uses the measured per-token factor under the documented
GPU profile (ZeRO-3, bf16, gradient checkpointing, 8 GPUs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import RESULTS_DIR, load_1m, machine, write_result  # noqa: E402  (bench/report.py)

VOCAB = 151_936
SIZES = {"s": (64, 2, 128), "m": (128, 4, 256), "l": (256, 4, 512)}  # hidden, layers, intermediate
ROWS = 1
PROMPT_TOKENS = 32
CHUNK_TOKENS = 256  # positions per chunk here (the learner default is 1024: one chunk is the whole 1k row)
# Qwen2.5-VL-7B (config.json of the Hub checkpoint) and the GPU profile of the projection.
Q7B = {"params": 8_292_166_656, "vision_params": 676_550_144, "hidden": 3584, "layers": 28, "vocab": VOCAB,
       "micro_batch_tokens": 7168, "gpus": 8, "gpu_bytes": 80 * 10**9}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Highest value of `read` (RSS by default) seen while running (a sampling thread)."""

    def __init__(self, read: Callable[[], int] = _rss) -> None:
        self.read = read
        self.base, self.peak, self._stop = read(), 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.001)

    def __enter__(self) -> "Peak":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.read())


def _model(size: str):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from shared.model.io import new_tiny_model, tiny_config

    _, tok = new_tiny_model(0)
    hidden, layers, inter = SIZES[size]
    cfg = tiny_config(tok)
    t = cfg.text_config
    t.vocab_size, t.num_hidden_layers, t.intermediate_size = VOCAB, layers, inter
    head_dim = t.hidden_size // t.num_attention_heads if getattr(t, "head_dim", None) is None else t.head_dim
    t.head_dim, t.hidden_size = head_dim, hidden  # the tiny's head size keeps its rope sections valid
    t.num_attention_heads = t.num_key_value_heads = hidden // head_dim
    if hasattr(t, "layer_types"):
        t.layer_types = ["full_attention"] * layers
    cfg.tie_word_embeddings = False
    cfg.vision_config.out_hidden_size = hidden
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.model.visual.requires_grad_(False)
    return model


def one_step(size: str, mode: str, tokens: int) -> dict:
    """Peak RSS of one step above the built model (run in its own process)."""
    import torch

    from services.learner.logprobs import PromptFeatures, response_hidden, token_logprobs
    from shared.model.logprobs import response_logprobs
    from shared.model.prompts import PromptInputs

    torch.set_num_threads(1)
    model = _model(size)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    prompt = list(range(100, 100 + PROMPT_TOKENS))
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(200, 20000, (tokens,), generator=g).tolist() for _ in range(ROWS)]
    if mode == "new":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    built = _rss()
    with Peak() as peak:
        if mode == "new":
            out = response_hidden(model, [(PromptFeatures(prompt), r) for r in responses], 0, "cpu")
            logp, ent = token_logprobs(model.lm_head, out.hidden, out.targets, 1.0, CHUNK_TOKENS)
            loss = -(logp * out.mask).sum() / out.mask.sum() - 0.0 * ent.sum()
        else:
            lp, ent = response_logprobs(model, PromptInputs(prompt, None, None), responses, with_entropy=True)
            loss = -torch.cat(lp).mean() - 0.0 * torch.cat(ent).sum()
        loss.backward()
        opt.step()
    return {"size": size, "mode": mode, "tokens": tokens, "params": params, "built_rss_bytes": built,
            "step_peak_bytes": peak.peak - built}


def chunk_only(vocab: int, tokens: int) -> dict:
    """Extra peak memory of the chunked log-probs and entropy (forward + backward) on random hidden states."""
    import torch

    from services.learner.logprobs import token_logprobs

    torch.set_num_threads(1)
    head = torch.nn.Linear(64, vocab, bias=False)
    hidden = torch.randn(1, tokens, 64, requires_grad=True)
    targets = torch.randint(0, vocab, (1, tokens))
    before = _rss()
    with Peak() as peak:
        logp, ent = token_logprobs(head, hidden, targets, 1.0, CHUNK_TOKENS)
        (logp.sum() + ent.sum()).backward()
    return {"vocab": vocab, "tokens": tokens, "extra_peak_bytes": peak.peak - before}


def _child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench/memory.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def projection(steps: list[dict]) -> dict:
    """Qwen2.5-VL-7B per GPU under ZeRO-3 (bf16 weights and grads, fp32 master + Adam, all partitioned over the
    GPUs), the frozen tower replicated in bf16, one log-prob chunk of logits, and activations from the measured
    slope of the new step's peak with length (bytes per token per layer per hidden unit between 1k and 4k on the
    largest size; fp32 here, halved for bf16; it holds the recomputed layer's working set too)."""
    hidden, layers, _ = SIZES["l"]
    peak = {s["tokens"]: s["step_peak_bytes"] for s in steps if s["mode"] == "new" and s["size"] == "l"}
    per_unit = (peak[4096] - peak[1024]) / ((4096 - 1024) * ROWS) / (layers * hidden)
    q = Q7B
    trainable = q["params"] - q["vision_params"]
    states = (q["params"] * 2 + trainable * (2 + 12)) / q["gpus"]
    tower = q["vision_params"] * 2
    activations = per_unit / 2 * q["micro_batch_tokens"] * q["layers"] * q["hidden"]
    logits = 1024 * q["vocab"] * 4 * 5  # one chunk of the learner default: logits, softmax, products, gradient (fp32)
    total = states + tower + activations + logits
    return {"per_gpu_bytes": int(total), "under_80_gb": total < q["gpu_bytes"],
            "parts_bytes": {"zero3_states": int(states), "vision_tower": int(tower),
                            "activations": int(activations), "logprob_chunk": int(logits)},
            "activation_bytes_per_token_layer_unit_fp32": per_unit, "profile": q}


def main() -> None:
    steps = []
    for size in SIZES:
        for tokens in (1024, 4096):
            steps.append(_child("step", size, "new", str(tokens)))
        steps.append(_child("step", size, "old", "1024"))
    for s in steps:
        s["bytes_per_token"] = s["step_peak_bytes"] / (s["tokens"] * ROWS)
        s["built_bytes_per_param"] = s["built_rss_bytes"] / s["params"]
    for size in SIZES:  # the old step at 4k: its logits terms grow with tokens x vocab, projected linearly
        old = next(s for s in steps if s["size"] == size and s["mode"] == "old")
        steps.append({**old, "tokens": 4096, "step_peak_bytes": old["step_peak_bytes"] * 4, "measured": False})
    chunks = [_child("chunk", str(v), str(t)) for v in (32_768, VOCAB) for t in (1024, 4096)]
    e = {(c["vocab"], c["tokens"]): c["extra_peak_bytes"] for c in chunks}
    interaction = (e[(VOCAB, 4096)] - e[(VOCAB, 1024)]) - (e[(32_768, 4096)] - e[(32_768, 1024)])
    full_term = (VOCAB - 32_768) * (4096 - 1024) * 4  # one fp32 [tokens, vocab] tensor's share of that difference
    write_result({
        "bench": "memory", "machine": machine(), "load_1m": load_1m(), "measure": "host RSS peak above the built model",
        "rows": ROWS, "chunk_tokens": CHUNK_TOKENS, "steps": steps,
        "new_vs_old_at_1k": {size: next(s["step_peak_bytes"] for s in steps if s["size"] == size and s["mode"] == "new"
                                        and s["tokens"] == 1024) /
                             next(s["step_peak_bytes"] for s in steps if s["size"] == size and s["mode"] == "old"
                                  and s["tokens"] == 1024) for size in SIZES},
        "chunked_logprobs": {"extra_peak_bytes": chunks, "vocab_x_length_interaction_bytes": interaction,
                             "one_full_fp32_logits_term_bytes": full_term},
        "projection_qwen2_5_vl_7b": projection(steps),
    }, RESULTS_DIR / "memory.json")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "step":
        print(json.dumps(one_step(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "chunk":
        print(json.dumps(chunk_only(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
