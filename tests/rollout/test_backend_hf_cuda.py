"""The hf backend on CUDA: behaviour log-probs of a generated batch equal a teacher-forced pass on the GPU.

Runs only where CUDA is present (`pytest -m gpu`); skipped with the reason elsewhere. The helpers (prompts,
the teacher-forced comparison) are the CPU tests' own, in test_backend_hf.py.
"""

from __future__ import annotations

import pytest
import torch

from services.rollout.backends.hf import HfBackend
from shared.model.prompts import build_prompt_inputs
from tests.rollout.conftest import perturbed
from tests.rollout.test_backend_hf import image_and_text_batch, max_diff, sample, text_prompt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]

# float32 on the GPU: cached one-token decoding steps and the single full forward run different kernels
# (the CPU tests hold 1e-4); a wrong temperature, position or token is off by far more.
BOUND = 1e-3


@pytest.fixture(scope="module")
def backend(tiny_path) -> HfBackend:
    torch.manual_seed(0)
    b = HfBackend(str(tiny_path), device="cuda")
    assert b.model.device.type == "cuda"
    return b


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cuda_behaviour_logprobs_match_teacher_forcing(backend, temperature):
    diff = image_and_text_batch(backend, n=8, max_new_tokens=32, temperature=temperature)
    print(f"cuda T={temperature}: behaviour vs teacher-forced max abs diff {diff:.3e} (bound {BOUND:.0e})")
    assert diff < BOUND


def test_cuda_weight_load_is_recorded_under_the_new_version(tiny_path):
    b = HfBackend(str(tiny_path), device="cuda")
    new = perturbed(tiny_path, seed=3)  # CPU tensors, as a weight pull delivers them
    b.load_weights(new)
    assert all(torch.equal(new[k], v.cpu()) for k, v in b.model.state_dict().items())
    inputs = build_prompt_inputs(text_prompt(), b.tokenizer)
    diff = max_diff(b, inputs, sample(b, inputs, 4, 16), 1.0)
    print(f"cuda after a weight load: behaviour vs teacher-forced max abs diff {diff:.3e} (bound {BOUND:.0e})")
    assert diff < BOUND
