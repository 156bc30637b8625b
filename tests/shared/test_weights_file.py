"""A version written tensor by tensor into a file (`VersionWriter`) and served from its mapping: the library's bytes,
the in-memory store's digest, pulls (full and trainable) from a real gRPC server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from shared.config import GrpcConfig, SecurityConfig
from shared.grpc_client import create_channel
from shared.grpc_server import GrpcServer
from shared.weights import WeightStore, add_weight_service, serialize_state_dict
from shared.weights.frames import version_digest
from shared.weights.pull import pull_version
from shared.weights.version_file import VersionWriter


def _state_dict(version: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(version)
    return {
        "z.weight": torch.randn(300, 7, generator=g).t(),  # not contiguous
        "a.bias": torch.randn(9, generator=g).to(torch.bfloat16),
        "m.half": torch.randn(5, generator=g).half(),
        "steps": torch.tensor([version], dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "empty": torch.empty(0, 3),
        "visual.w": torch.randn(400_000, generator=torch.Generator().manual_seed(0)),  # frozen: the same each version
    }


def _write(path: Path, version: int, sd: dict[str, torch.Tensor]) -> str:
    writer = VersionWriter(path, version, [(n, t.dtype, tuple(t.shape)) for n, t in sd.items()])
    for name, *_ in list(writer.order):
        writer.write(name, sd[name])
    return writer.finish()


def test_the_file_holds_the_bytes_the_library_writes(tmp_path: Path) -> None:
    sd = _state_dict(3)
    digest = _write(tmp_path / "v3", 3, sd)
    blob = save({k: v.contiguous() for k, v in sd.items()})
    assert (tmp_path / "v3").read_bytes() == blob == serialize_state_dict(sd)
    assert digest == version_digest(blob, 3)


def test_the_writer_refuses_a_tensor_out_of_order_and_a_short_version(tmp_path: Path) -> None:
    sd = _state_dict(1)
    writer = VersionWriter(tmp_path / "v", 1, [(n, t.dtype, tuple(t.shape)) for n, t in sd.items()])
    first = writer.expected[0]
    other = next(n for n in sd if n != first)
    with pytest.raises(ValueError, match=f"tensor {other} .* written where"):
        writer.write(other, sd[other])
    with pytest.raises(ValueError, match="written where"):
        writer.write(first, sd[first][:0])  # the right name, the wrong shape
    writer.write(first, sd[first])
    with pytest.raises(ValueError, match="closed before tensor"):
        writer.finish()


def test_a_file_version_is_pulled_whole_then_without_its_frozen_tensors(tmp_path: Path) -> None:
    store = WeightStore(frozen_prefix="visual.")
    srv = GrpcServer(lambda s: add_weight_service(s, store), host="127.0.0.1", port=0,
                     grpc_cfg=GrpcConfig(grace_s=0), security=SecurityConfig()).start()
    try:
        channel = create_channel(f"127.0.0.1:{srv.port}", GrpcConfig(deadline_s=10), SecurityConfig())
        store.publish_file(1, tmp_path / "v1", _write(tmp_path / "v1", 1, _state_dict(1)))
        memory = WeightStore(frozen_prefix="visual.")  # the same tensors through the in-memory store
        memory.publish(1, _state_dict(1))
        snap = store.snapshot()
        assert (snap.digest, snap.frozen_digest, snap.total_bytes, snap.segments) == (
            memory.snapshot().digest, memory.snapshot().frozen_digest, memory.snapshot().total_bytes,
            memory.snapshot().segments)
        first = pull_version(channel, 1, 10)
        assert first.kind == "full" and all(torch.equal(first.state_dict[n], t) for n, t in _state_dict(1).items())

        store.publish_file(2, tmp_path / "v2", _write(tmp_path / "v2", 2, _state_dict(2)))
        assert not (tmp_path / "v1").exists()  # the store owns its files: the previous one is gone
        second = pull_version(channel, 2, 10, first.frozen)
        assert second.kind == "trainable" and second.received_bytes == store.snapshot().total_bytes - 1_600_000
        assert all(torch.equal(second.state_dict[n], t) for n, t in _state_dict(2).items())
        assert store.snapshot().num_tensors == len(_state_dict(2))
    finally:
        srv.stop(0)
