"""The backend interface: generate `n` samples per prompt with behaviour log-probs; swap weights atomically.

Behaviour log-probs are `log_softmax(logits / temperature)` over the whole vocabulary at each sampled
token: the same quantity `shared.model.logprobs.response_logprobs` computes in the learner, so the
importance ratio compares like with like (top_p < 1 or the suppressed vision tokens change what is
sampled, not what is recorded).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from eureka.v1 import common_pb2

    from shared.model.prompts import PromptInputs


class GenerationAborted(Exception):
    """Generation stopped early because the worker is draining; the batch is released, not put."""


class WeightLoadError(Exception):
    """A state dict that does not fit the served model; nothing was changed."""


@dataclass(frozen=True)
class GenRequest:
    prompt: common_pb2.Prompt  # as claimed (images as sent)
    inputs: PromptInputs  # the model inputs built from it (image pads expanded)


@dataclass(frozen=True)
class SamplingSpec:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass
class Completion:
    token_ids: list[int]  # response tokens, the stop token included when finish_reason == "stop"
    logprobs: list[float]  # one behaviour log-prob per token
    finish_reason: str  # "stop" or "length"


def finish(token_ids: list[int], logprobs: list[float], stop_ids: set[int], max_new_tokens: int) -> Completion:
    """Cut a raw generated row at its first stop token (kept); padding after it is dropped."""
    for i, tok in enumerate(token_ids):
        if tok in stop_ids:
            return Completion(token_ids[: i + 1], logprobs[: i + 1], "stop")
    if len(token_ids) < max_new_tokens:
        raise GenerationAborted(f"generation stopped after {len(token_ids)} of {max_new_tokens} tokens without a stop")
    return Completion(token_ids, logprobs, "length")


def check_state_dict(current: dict[str, Any], incoming: dict[str, Any]) -> None:
    """Refuse unknown names and shape changes before anything is copied (so a load is all or nothing)."""
    if not incoming:
        raise WeightLoadError("the pulled state dict is empty")
    unknown = [k for k in incoming if k not in current]
    if unknown:
        raise WeightLoadError(f"{len(unknown)} tensors are not in the served model, e.g. {unknown[:3]}")
    for name, tensor in incoming.items():
        if tuple(tensor.shape) != tuple(current[name].shape):
            raise WeightLoadError(
                f"tensor {name} has shape {tuple(tensor.shape)}, the served model has {tuple(current[name].shape)}"
            )


class Backend(ABC):
    """A loaded policy. `generate` and `load_weights` never interleave (one lock), so a batch sees one version."""

    tokenizer: Any

    def __init__(self) -> None:
        self.lock = threading.Lock()

    @abstractmethod
    def generate(
        self, requests: list[GenRequest], spec: SamplingSpec, abort: threading.Event
    ) -> list[list[Completion]]:
        """`spec.n` completions per prompt, in prompt order; raises GenerationAborted when `abort` is set."""

    @abstractmethod
    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the served weights with `state_dict` (all or nothing); raises WeightLoadError."""
