"""The bucketed broadcast stream on its own: the plan both ends compute, and a version sent from rank 0 to a
member (two gloo ranks on threads of this process) arriving whole, small tensors coalesced and large ones
sent from their own memory, odd sizes and empty tensors included."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from shared.redis_proc import free_port
from shared.weights import stream
from shared.weights.group import Layout, dtype_name, offsets


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "big": torch.rand(700_001, generator=g),  # 2.8 MB, not a multiple of the alignment: sliced
        "norm": torch.rand(37, generator=g).to(torch.bfloat16),  # small ones share a bucket
        "empty": torch.zeros(0),
        "bias": torch.rand(3, 5, generator=g),
        "mid": torch.randint(0, 1 << 30, (300_000,), generator=g, dtype=torch.int64),  # 2.4 MB
        "tail": torch.rand(11, generator=g).to(torch.float16),
    }


def _layout(sd: dict[str, torch.Tensor], version: int = 7) -> Layout:
    return Layout(version, [(n, dtype_name(t), list(t.shape), t.numel() * t.element_size()) for n, t in sd.items()], "")


@pytest.mark.parametrize("bucket_bytes", [1024, 64 << 10, 1 << 20, 64 << 20])
def test_the_plan_covers_every_tensor_once_in_order_within_the_bucket_size(bucket_bytes: int) -> None:
    layout = _layout(_state_dict())
    starts, _ = offsets(layout)
    buckets = stream.plan(layout, bucket_bytes)
    assert all(0 < b.length <= bucket_bytes for b in buckets)
    assert all(a.offset + a.length <= b.offset for a, b in zip(buckets, buckets[1:], strict=False))
    for i, (_, _, _, nbytes) in enumerate(layout.tensors):
        covered = sum(min(b.offset + b.length, starts[i] + nbytes) - max(b.offset, starts[i])
                      for b in buckets if b.offset < starts[i] + nbytes and starts[i] < b.offset + b.length)
        assert covered == nbytes, layout.tensors[i][0]
    alone = {layout.tensors[b.first][0] for b in buckets if b.alone}
    assert alone == {n for n, _, _, nbytes in layout.tensors if nbytes >= min(stream.COALESCE_BELOW, bucket_bytes)}


def _pair(port: int) -> tuple[dist.ProcessGroupGloo, dist.ProcessGroupGloo]:
    groups: dict[int, dist.ProcessGroupGloo] = {}

    def make(rank: int) -> None:
        store = dist.TCPStore("127.0.0.1", port, is_master=rank == 0, timeout=timedelta(seconds=30),
                              wait_for_workers=False, use_libuv=True)
        groups[rank] = dist.ProcessGroupGloo(store, rank, 2, timedelta(seconds=30))

    threads = [threading.Thread(target=make, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return groups[0], groups[1]


@pytest.mark.parametrize("bucket_bytes", [64 << 10, 64 << 20])
def test_a_version_arrives_whole_with_its_digest(bucket_bytes: int) -> None:
    sd = _state_dict()
    layout = _layout(sd)
    sender, member = _pair(free_port())
    staged = torch.full((offsets(layout)[1],), 0xAB, dtype=torch.uint8)  # stale bytes from an earlier round
    done: list[int] = []
    got: dict[str, int] = {}

    def send() -> None:
        got["sent"] = stream.send(sender, layout, sd, bucket_bytes, "cpu", 30.0, on_bucket=done.append)

    t = threading.Thread(target=send)
    t.start()
    stream.receive(member, layout, staged, bucket_bytes, "cpu", 30.0)
    t.join()
    assert got["sent"] == stream.stream_bytes(layout, bucket_bytes) and done == list(range(len(done)))
    starts, _ = offsets(layout)
    for start, (name, dtype, shape, nbytes) in zip(starts, layout.tensors, strict=True):
        received = staged[start : start + nbytes].view(getattr(torch, dtype)).reshape(shape)
        assert torch.equal(received, sd[name]), name


def test_a_stream_that_does_not_match_its_digest_is_refused() -> None:
    sd = _state_dict()
    sender, member = _pair(free_port())
    staged = torch.empty(offsets(_layout(sd))[1], dtype=torch.uint8)
    # The sender hashes version 7's seed, the member expects version 8: the same bytes under another number.
    t = threading.Thread(target=stream.send, args=(sender, _layout(sd, 7), sd, 1 << 20, "cpu", 30.0))
    t.start()
    with pytest.raises(stream.StreamMismatch, match="does not match its digest"):
        stream.receive(member, _layout(sd, 8), staged, 1 << 20, "cpu", 30.0)
    t.join()
