"""A rollout worker's weight side as a process of its own, for the broadcast tests: the real `WeightSync` with a
`BroadcastReceiver` over the hf backend. Prints one JSON line per swap: version, update counts by path, the served
state dict's digest as the gRPC path computes it, the missed-broadcast count, and the pulls that left the frozen
tensors out."""

from __future__ import annotations

import json
import sys
import time

from services.rollout import metrics
from services.rollout.backends.hf import HfBackend
from services.rollout.weights import WeightSync
from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.logs import setup_logging
from shared.weights.frames import version_digest
from shared.weights.group import BroadcastConfig
from shared.weights.safetensors_io import serialize_state_dict


def main(weights_address: str, broadcast_json: str, model_path: str, worker_id: str) -> None:
    setup_logging("rollout")
    backend = HfBackend(model_path)
    sync = WeightSync(create_channel(weights_address, GrpcConfig(), SecurityConfig()), backend, 30.0,
                      broadcast=BroadcastConfig.model_validate_json(broadcast_json), worker_id=worker_id)
    served = None
    while True:
        sync.refresh()
        if sync.version != served:
            served = sync.version
            digest = version_digest(serialize_state_dict(backend.model.state_dict()), served)
            print(json.dumps({"worker_id": worker_id, "version": served, "digest": digest,
                              "broadcast_updates": metrics.UPDATES.labels("broadcast")._value.get(),
                              "grpc_updates": metrics.UPDATES.labels("grpc")._value.get(),
                              "missed": metrics.BROADCAST_MISSED._value.get(),
                              "trainable_pulls": metrics.PULLS.labels("trainable")._value.get(),
                              "trainable_pull_bytes": metrics.PULL_BYTES.labels("trainable")._value.get()}), flush=True)
        time.sleep(0.02)


if __name__ == "__main__":
    main(*sys.argv[1:5])
