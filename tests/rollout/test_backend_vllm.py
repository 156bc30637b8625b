"""The vllm backend on a GPU: behaviour log-probs vs a teacher-forced pass, in-place weight loads.

Runs only where vLLM and CUDA are present (`pytest -m gpu`); skipped with the reason elsewhere.
"""

from __future__ import annotations

import importlib.util
import threading

import pytest
import torch

from services.rollout.backends.base import GenRequest, SamplingSpec, WeightLoadError
from shared.model.logprobs import response_logprobs
from shared.model.prompts import build_prompt_inputs
from tests.rollout.conftest import perturbed, prompt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (requirements-gpu.lock)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def backend(tiny_path):
    from services.rollout.backends.vllm import VllmBackend
    from services.rollout.config import RolloutConfig

    cfg = RolloutConfig(backend="vllm", dtype="float32", recipe={"max_response_tokens": 32, "max_prompt_tokens": 512},
                        vllm={"gpu_memory_utilization": 0.3, "enforce_eager": True})
    return VllmBackend(str(tiny_path), cfg)


def worst_diff(tiny_path, backend, state_dict=None) -> float:
    from shared.model.io import load_model

    model = load_model(tiny_path, device="cuda")
    if state_dict is not None:
        model.load_state_dict(state_dict)
    p = prompt(3)
    inputs = build_prompt_inputs(p, backend.tokenizer)
    out = backend.generate([GenRequest(p, inputs)], SamplingSpec(n=4, temperature=1.0, top_p=1.0, max_new_tokens=32),
                           threading.Event())[0]
    with torch.no_grad():
        ref = response_logprobs(model, inputs, [c.token_ids for c in out])
    return max((torch.tensor(c.logprobs) - r.cpu()).abs().max().item() for c, r in zip(out, ref, strict=True))


def test_vllm_logprobs_match_teacher_forcing(tiny_path, backend):
    diff = worst_diff(tiny_path, backend)
    print(f"vllm behaviour vs teacher-forced max abs diff: {diff:.3e}")
    assert diff < 1e-2


def test_vllm_loads_a_new_version_in_place(tiny_path, backend):
    new = perturbed(tiny_path, seed=5)
    with pytest.raises(WeightLoadError):
        backend.load_weights({"not.a.weight": torch.zeros(1)})
    backend.load_weights(new)
    diff = worst_diff(tiny_path, backend, new)
    print(f"vllm after the swap: max abs diff {diff:.3e}")
    assert diff < 1e-2
