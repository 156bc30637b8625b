"""The gRPC pull of a worker that holds the learner's frozen tensors: the frozen chunks stay home, the served
version is the learner's byte for byte. Real gRPC servers on 127.0.0.1; the server counts what it sends."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from eureka.v1 import weights_pb2, weights_pb2_grpc

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer, add_raw_bytes_service
from shared.weights import DEFAULT_CHUNK_BYTES, WeightPullError, WeightStore, serialize_state_dict
from shared.weights.frames import version_digest
from shared.weights.pull import HeldFrozen, pull_version
from shared.weights.serve import WEIGHT_SERVICE, WeightServicer

VISION = "visual."
FRAME_OVERHEAD = 200  # a chunk's fields around its data: version, offset, checksum, digests, flags


class _Counting(WeightServicer):
    """The real servicer; counts the bytes of every frame it sends."""

    sent = 0
    frames = 0

    def StreamWeights(self, request, context) -> Iterator[bytes]:  # noqa: N802
        frames = super().StreamWeights(request, context)

        def counted() -> Iterator[bytes]:
            for frame in frames:
                self.sent += len(frame)
                self.frames += 1
                yield frame

        return counted()


def _state_dict(version: int, names: tuple[str, ...], vision_seed: int = 0) -> dict[str, torch.Tensor]:
    """Trainable tensors that move with `version`; frozen ones (under VISION) from `vision_seed` only."""
    out = {}
    for i, name in enumerate(names):
        g = torch.Generator().manual_seed(vision_seed * 100 + i if name.startswith(VISION) else version * 100 + i)
        size = 1_200_000 if name.startswith(VISION) else 300_000  # a frozen tensor spans chunks
        out[name] = torch.randn(size, generator=g)
    out["bias"] = torch.randn(5, generator=torch.Generator().manual_seed(version)).to(torch.bfloat16)
    return out


@pytest.fixture
def served() -> Iterator[tuple[WeightStore, _Counting, object]]:
    store = WeightStore(frozen_prefix=VISION)
    servicer = _Counting(store)
    srv = GrpcServer(lambda s: add_raw_bytes_service(s, WEIGHT_SERVICE, servicer), host="127.0.0.1", port=0,
                     grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    yield store, servicer, create_channel(f"127.0.0.1:{srv.port}", GrpcConfig(deadline_s=10), SecurityConfig())
    srv.stop(0)


def _pull(servicer: _Counting, channel, held: HeldFrozen | None, chunk_bytes: int = 0):
    servicer.sent = servicer.frames = 0
    return pull_version(channel, 0, 10, held, chunk_bytes)


def _served_digest(channel) -> str:
    return weights_pb2_grpc.WeightServiceStub(channel).GetVersion(weights_pb2.GetVersionRequest()).digest


def _assert_learners(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


@pytest.mark.parametrize(
    ("names", "chunk_bytes"),
    [
        (("lm_head.weight", "model.w", "visual.a", "visual.b"), 0),  # frozen last: an empty chunk closes the stream
        (("a.weight", "visual.a", "visual.b", "z.weight"), 0),  # frozen in the middle
        (("a.weight", "visual.a", "z.weight"), 1 << 20),  # another chunk size: cut anew, the frozen ones still apart
    ],
)
def test_a_holder_of_the_frozen_tensors_is_sent_the_trainable_bytes_only(served, names, chunk_bytes) -> None:
    store, servicer, channel = served
    sd1 = _state_dict(1, names)
    store.publish(1, sd1)
    snap = store.snapshot()
    frozen_bytes = sum(t.numel() * 4 for n, t in sd1.items() if n.startswith(VISION))
    assert snap.frozen_bytes == frozen_bytes > DEFAULT_CHUNK_BYTES

    first = _pull(servicer, channel, None, chunk_bytes)  # a new worker: every chunk, and it keeps the frozen ones
    assert (first.kind, first.received_bytes) == ("full", snap.total_bytes) and servicer.sent >= snap.total_bytes
    assert first.frozen is not None and first.frozen.nbytes == frozen_bytes
    _assert_learners(first.state_dict, sd1)

    sd2 = _state_dict(2, names)
    store.publish(2, sd2)
    total = store.snapshot().total_bytes
    second = _pull(servicer, channel, first.frozen, chunk_bytes)
    assert second.kind == "trainable" and second.received_bytes == total - frozen_bytes
    assert total - frozen_bytes <= servicer.sent <= total - frozen_bytes + FRAME_OVERHEAD * servicer.frames
    assert second.frozen is first.frozen  # the same copy serves the next pull
    _assert_learners(second.state_dict, sd2)
    assert version_digest(serialize_state_dict(second.state_dict), 2) == _served_digest(channel)


def test_a_worker_with_other_frozen_tensors_or_none_gets_the_full_version(served) -> None:
    store, servicer, channel = served
    names = ("model.w", "visual.a")
    store.publish(1, _state_dict(1, names))
    held = _pull(servicer, channel, None).frozen
    store.publish(2, _state_dict(2, names))
    total = store.snapshot().total_bytes

    other = HeldFrozen("0" * 32, held.segments)  # another frozen digest: every chunk comes
    got = _pull(servicer, channel, other)
    assert (got.kind, got.received_bytes) == ("full", total) and got.frozen.digest == held.digest

    store.publish(3, _state_dict(3, names, vision_seed=1))  # the learner's frozen tensors changed
    got = _pull(servicer, channel, held)
    assert (got.kind, got.received_bytes) == ("full", store.snapshot().total_bytes)
    assert got.frozen.digest != held.digest
    _assert_learners(got.state_dict, _state_dict(3, names, vision_seed=1))


def test_a_held_copy_that_is_not_the_learners_bytes_fails_the_version_digest(served) -> None:
    store, servicer, channel = served
    names = ("model.w", "visual.a")
    store.publish(1, _state_dict(1, names))
    held = _pull(servicer, channel, None).frozen
    (offset, data), *rest = held.segments
    flipped = data.copy()
    flipped[len(flipped) // 2] ^= 1
    store.publish(2, _state_dict(2, names))
    with pytest.raises(WeightPullError, match="digest of version 2 does not match"):
        _pull(servicer, channel, HeldFrozen(held.digest, ((offset, flipped), *rest)))
    short = HeldFrozen(held.digest, ((offset, np.ascontiguousarray(data[:-4])), *rest))  # does not fill the gap
    with pytest.raises(WeightPullError, match="does not follow"):
        _pull(servicer, channel, short)


def test_a_store_without_frozen_tensors_sends_every_chunk(served) -> None:
    _, servicer, channel = served
    store = WeightStore()  # no frozen prefix: nothing is left out, whatever the request names
    store.publish(1, _state_dict(1, ("model.w", "visual.a")))
    assert store.snapshot().frozen_digest == "" and store.snapshot().frozen_bytes == 0
    frames = list(store.snapshot().frames_of(DEFAULT_CHUNK_BYTES, "anything"))
    assert len(frames) == len(store.snapshot().frames)
