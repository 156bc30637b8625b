"""A version received by broadcast (gloo, the learner's hub here) loads into the running vLLM engine and serves:
the worker's first version comes over gRPC, the next by broadcast, with the vision tower left as it was."""

from __future__ import annotations

import time

import pytest

from services.rollout import metrics
from services.rollout.weights import WeightSync
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.redis_proc import free_port
from shared.weights import WeightStore, add_weight_service
from shared.weights.group import BroadcastConfig
from shared.weights.hub import BroadcastHub
from tests.rollout.conftest import perturbed
from tests.vllm.conftest import generate, hf_model, image_prompt, text_prompt, worst_diff

pytestmark = pytest.mark.vllm
BOUND = 1e-3
VISION = "model.visual."


def test_a_version_received_by_broadcast_serves_in_the_engine(engine, tiny_vllm_path):
    base = hf_model(tiny_vllm_path).state_dict()
    store = WeightStore()
    server = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0, grpc_cfg=GrpcConfig(),
                        security=SecurityConfig()).start()
    cfg = BroadcastConfig(enabled=True, address=f"127.0.0.1:{free_port()}", bucket_bytes=1 << 20,
                          join_timeout_s=10.0, op_timeout_s=60.0, retries=0)
    hub = BroadcastHub(cfg, frozen_prefix=VISION)
    channel = create_channel(f"127.0.0.1:{server.port}", GrpcConfig(), SecurityConfig())
    sync = WeightSync(channel, engine, timeout_s=60, broadcast=cfg, worker_id="vllm0")
    try:
        hub.send(0, base)
        store.publish(0, base)
        assert sync.refresh() and sync.version == 0  # the first version over gRPC, the tower with it
        end = time.monotonic() + 60
        while hub.joined() != {"vllm0"}:
            assert time.monotonic() < end, "the receiver did not join"
            time.sleep(0.05)

        moved = perturbed(tiny_vllm_path, seed=7)
        new = {k: (v if k.startswith(VISION) else moved[k]) for k, v in base.items()}  # the tower is frozen
        by_broadcast = metrics.UPDATES.labels("broadcast")._value.get()
        result = hub.send(1, new)
        assert result.members == ["vllm0"], result
        store.publish(1, new)
        assert sync.refresh() and sync.version == 1
        assert metrics.UPDATES.labels("broadcast")._value.get() == by_broadcast + 1

        prompts = [image_prompt((84, 56), seed=3), text_prompt(5)]
        inputs, out = generate(engine, prompts)
        diff_new = worst_diff(hf_model(tiny_vllm_path, new), inputs, out)
        diff_old = worst_diff(hf_model(tiny_vllm_path), inputs, out)
        print(f"after the broadcast load: vs the new weights {diff_new:.2e}, vs the old {diff_old:.2e}")
        assert diff_new < BOUND < diff_old
    finally:
        sync.receiver.stop()  # type: ignore[union-attr]
        engine.load_weights(base)
        channel.close()
        server.stop(grace=0)
