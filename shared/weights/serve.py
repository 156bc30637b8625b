"""The learner's `WeightService`: GetVersion and StreamWeights over a `WeightStore`.

StreamWeights answers the version's chunk frames as they are held (pre-serialized bytes, registered with
`add_raw_bytes_service`); a stream serves one snapshot to its end, so a publish during a pull never mixes
two versions. A request that names the version's frozen digest is sent the trainable chunks only.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.grpc_server import FailedPrecondition, InvalidArgument, add_raw_bytes_service, map_errors
from shared.weights.frames import DEFAULT_CHUNK_BYTES
from shared.weights.store import WeightStore

MAX_CHUNK_BYTES = 16 << 20
WEIGHT_SERVICE = weights_pb2.DESCRIPTOR.services_by_name["WeightService"]


class WeightServicer(weights_pb2_grpc.WeightServiceServicer):
    """GetVersion and StreamWeights over a WeightStore (StreamWeights yields serialized chunks)."""

    def __init__(self, store: WeightStore) -> None:
        self.store = store

    @map_errors
    def GetVersion(self, request, context):  # noqa: N802
        snap = self.store.snapshot()
        if snap is None:
            return weights_pb2.WeightVersion(policy_version=0)
        return weights_pb2.WeightVersion(
            policy_version=snap.version, total_bytes=snap.total_bytes, digest=snap.digest, num_tensors=snap.num_tensors
        )

    @map_errors
    def StreamWeights(self, request: weights_pb2.StreamWeightsRequest, context) -> Iterator[bytes]:  # noqa: N802
        # Checks run before the iterator is returned, so map_errors turns them into a status.
        if request.chunk_bytes > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes {request.chunk_bytes} is above {MAX_CHUNK_BYTES}; ask for less or 0")
        snap = self.store.snapshot()
        if snap is None:
            raise FailedPrecondition("no weights published yet; the learner publishes version 0 at start, retry")
        if snap.version < request.min_version:
            raise FailedPrecondition(
                f"published version {snap.version} is older than min_version {request.min_version}; retry later"
            )
        return snap.frames_of(request.chunk_bytes or DEFAULT_CHUNK_BYTES, request.frozen_digest)


def add_weight_service(server: grpc.Server, store: WeightStore) -> list[str]:
    """Register a WeightServicer over `store`; returns the service names (for GrpcServer)."""
    return add_raw_bytes_service(server, WEIGHT_SERVICE, WeightServicer(store))
