"""The `hf` backend: transformers `generate` with sampling, behaviour log-probs recorded step by step.

A logits processor placed first (the GenerationConfig sets every other processor to neutral, whatever
the checkpoint's generation_config.json says) keeps `log_softmax(raw_logits / T)` of the current step
and masks the vision tokens; a stopping criterion, called once the step's token is appended, gathers
that token's log-prob. Only one vocabulary-sized row per sequence is held, never the whole history.
Temperature and top_p are then applied by transformers' own warpers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from services.rollout.backends.base import (
    Backend,
    Completion,
    GenerationAborted,
    GenRequest,
    SamplingSpec,
    WeightLoadError,
    check_state_dict,
    finish,
)

if TYPE_CHECKING:
    import torch


def _recorder(temperature: float, suppress: torch.Tensor, abort: threading.Event) -> tuple[Any, Any, list]:
    """A (logits processor, stopping criterion, gathered log-probs) triple sharing one generate call's state."""
    import torch
    from transformers import LogitsProcessor, StoppingCriteria

    state: dict[str, torch.Tensor] = {}
    gathered: list[torch.Tensor] = []

    class Record(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            state["step"] = torch.log_softmax(scores if temperature == 1.0 else scores / temperature, dim=-1)
            return scores.index_fill_(1, suppress, float("-inf")) if suppress.numel() else scores

    class Gather(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            gathered.append(state["step"].gather(1, input_ids[:, -1:]).squeeze(1))
            return torch.full((input_ids.shape[0],), abort.is_set(), dtype=torch.bool, device=input_ids.device)

    return Record(), Gather(), gathered


def check_tied(current: dict[str, torch.Tensor], incoming: dict[str, torch.Tensor]) -> None:
    """Names that share one tensor in the model (tied embeddings) must arrive with equal values."""
    import torch

    first: dict[int, str] = {}
    for name, tensor in current.items():
        if name not in incoming:
            continue
        other = first.setdefault(tensor.data_ptr(), name)
        if other != name and not torch.equal(incoming[other], incoming[name]):
            raise WeightLoadError(f"{name} and {other} are tied in the served model but arrived with different values")


class HfBackend(Backend):
    """transformers `generate` on one device; a worker batch (its prompts x n sequences) per `generate` call."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32") -> None:
        import torch

        from shared.model.io import generation_stop_ids, load_model, load_tokenizer, suppressed_token_ids

        super().__init__()
        self.device = device
        self.model = load_model(model_path, dtype=dtype, device=device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = load_tokenizer(model_path)
        self.stop_ids = generation_stop_ids(self.tokenizer)
        self.suppress = torch.tensor(suppressed_token_ids(self.tokenizer), dtype=torch.long, device=device)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[-1]

    def generation_config(self, spec: SamplingSpec) -> Any:
        """Sampling at `spec` with every other transformers processor neutral."""
        from transformers import GenerationConfig

        return GenerationConfig(
            do_sample=True, temperature=spec.temperature, top_p=spec.top_p, top_k=0, min_p=None, typical_p=1.0,
            epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
            max_new_tokens=spec.max_new_tokens, num_return_sequences=spec.n, num_beams=1,
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id, suppress_tokens=None, begin_suppress_tokens=None,
            renormalize_logits=False, use_cache=True, return_dict_in_generate=False,
        )

    def generate(
        self, requests: list[GenRequest], spec: SamplingSpec, abort: threading.Event
    ) -> list[list[Completion]]:
        """Every request's `n` samples from one `generate` call (prompts left-padded into one batch)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from shared.model.prompts import batch_inputs

        with self.lock:
            if abort.is_set():
                raise GenerationAborted("the worker is draining")
            record, gather, gathered = _recorder(spec.temperature, self.suppress, abort)
            inputs = batch_inputs([r.inputs for r in requests], self.pad_id, self.device, self.model.dtype,
                                  self.model.config.image_token_id)
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    generation_config=self.generation_config(spec),
                    logits_processor=LogitsProcessorList([record]),
                    stopping_criteria=StoppingCriteriaList([gather]),
                )
            if abort.is_set():
                raise GenerationAborted("the worker is draining")
        new = out[:, inputs["input_ids"].shape[1] :]  # rows: request 0's n samples, then request 1's, ...
        logprobs = torch.stack(gathered[: new.shape[1]], dim=1) if new.shape[1] else new.float()
        stops = set(self.stop_ids)
        rows = [finish(new[i].tolist(), logprobs[i].tolist(), stops, spec.max_new_tokens) for i in range(new.shape[0])]
        return [rows[i * spec.n : (i + 1) * spec.n] for i in range(len(requests))]

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        import torch

        with self.lock:
            current = self.model.state_dict()
            check_state_dict(current, state_dict)
            check_tied(current, state_dict)
            with torch.no_grad():
                for name, tensor in state_dict.items():
                    current[name].copy_(tensor.to(current[name].device, dtype=current[name].dtype))
