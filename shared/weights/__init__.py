"""Versioned weight publishing: the learner serves its consolidated state dict, rollout pulls it (the frozen
tensors only in a worker's first pull).

By job: `safetensors_io` (state dict <-> safetensors bytes), `frames` (chunks on the wire: checksums,
digest, frame writer and reader), `store` (the publish store), `serve` (the gRPC WeightService),
`pull` (the verified pull). A puller either gets one whole verified version or a `WeightPullError` and
keeps what it had, so a worker never serves a mix of two versions. Version 0 is the base model.
"""

from shared.weights.frames import DEFAULT_CHUNK_BYTES, WeightPullError
from shared.weights.pull import pull_weights
from shared.weights.safetensors_io import deserialize_state_dict, serialize_state_dict
from shared.weights.serve import add_weight_service
from shared.weights.store import WeightStore

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "WeightPullError",
    "WeightStore",
    "add_weight_service",
    "deserialize_state_dict",
    "pull_weights",
    "serialize_state_dict",
]
