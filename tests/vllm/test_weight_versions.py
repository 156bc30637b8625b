"""New versions pulled over the weight stream into the running engine: no restart, caches reset, bad ones refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from services.rollout import metrics
from services.rollout.weights import WeightSync
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.weights import WeightStore, add_weight_service
from tests.rollout.conftest import perturbed
from tests.vllm.conftest import generate, hf_model, image_prompt, text_prompt, worst_diff

pytestmark = pytest.mark.vllm
BOUND = 1e-3


@pytest.fixture
def stream(engine, tiny_vllm_path) -> Iterator[tuple[WeightStore, WeightSync]]:
    """A real weight service on loopback and the worker's WeightSync over it; the base is loaded back after."""
    store = WeightStore()
    server = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(),
                        security=SecurityConfig()).start()
    channel = create_channel(f"127.0.0.1:{server.port}", GrpcConfig(), SecurityConfig())
    try:
        yield store, WeightSync(channel, engine, timeout_s=60)
    finally:
        engine.load_weights(hf_model(tiny_vllm_path).state_dict())
        channel.close()
        server.stop(grace=0)


def load_failures() -> float:
    return metrics.PULL_FAILURES.labels("load")._value.get()


def test_a_version_pulled_over_the_stream_serves_in_place(engine, tiny_vllm_path, stream):
    store, sync = stream
    prompts = [image_prompt((84, 56), seed=5), text_prompt(4)]
    old_inputs, old_out = generate(engine, prompts)
    new = perturbed(tiny_vllm_path, seed=5)
    assert "lm_head.weight" in new and "model.language_model.embed_tokens.weight" in new  # state_dict() names, tied
    store.publish(1, new)
    assert sync.refresh() and sync.version == 1
    inputs, out = generate(engine, prompts)
    diff_new = worst_diff(hf_model(tiny_vllm_path, new), inputs, out)
    diff_old = worst_diff(hf_model(tiny_vllm_path), inputs, out)
    print(f"after the in-place load: vs the new weights {diff_new:.2e}, vs the old {diff_old:.2e}")
    assert diff_new < BOUND < diff_old

    failures = load_failures()
    bad = dict(new)
    bad["model.language_model.layers.2.self_attn.o_proj.weight"] = torch.zeros(128, 64)
    store.publish(2, bad)
    assert not sync.refresh() and sync.version == 1
    assert load_failures() == failures + 1
    renamed = {k.replace("mlp.down_proj", "mlp.down"): v for k, v in new.items()}
    store.publish(3, renamed)
    assert not sync.refresh() and sync.version == 1
    assert load_failures() == failures + 2
    inputs, out = generate(engine, prompts)
    assert worst_diff(hf_model(tiny_vllm_path, new), inputs, out) < BOUND  # version 1 keeps serving


def test_after_a_load_the_same_image_gets_the_new_vision_features(engine, tiny_vllm_path, stream):
    """Only the vision tower changes: any encoder output or prefix KV kept from the old weights would show."""
    store, sync = stream
    prompt = [image_prompt((112, 112), seed=9)]
    inputs, out = generate(engine, prompt)  # caches filled with the old tower's features
    assert worst_diff(hf_model(tiny_vllm_path), inputs, out) < BOUND
    base = hf_model(tiny_vllm_path).state_dict()
    g = torch.Generator().manual_seed(11)
    new = {k: (v + 0.5 * torch.randn(v.shape, generator=g) if k.startswith("model.visual.") else v) for k, v in base.items()}
    store.publish(1, new)
    assert sync.refresh()
    inputs, out = generate(engine, prompt)
    diff_new = worst_diff(hf_model(tiny_vllm_path, new), inputs, out)
    diff_old = worst_diff(hf_model(tiny_vllm_path), inputs, out)
    print(f"same image after a vision-only load: vs the new tower {diff_new:.2e}, vs the old {diff_old:.2e}")
    assert diff_new < BOUND < diff_old
