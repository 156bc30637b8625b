"""What the broadcast sender and its receivers share: settings, the rendezvous store, the version layout, groups.

A round is one version sent to the workers that joined: they meet in a TCPStore that learner rank 0 hosts
(keys below), form a process group of their own (gloo on CPU, NCCL on GPU; never the default group), and
receive the version's trainable tensors as one byte stream cut into buckets. The stream's digest is XXH3-128
seeded with the version, like the gRPC path's; the frozen tensors (the vision tower) are not in it: a worker
holds them from its first gRPC pull, checked by their own digest when it joins.

Store keys: `seq` (ticket counter), `join/<ticket>` (a worker's join record), `assign/<ticket>` (the hub's
answer: a round or a pull), `ready/<round>/<ticket>`, `go/<round>` (the members in rank order and the
layout), `pg/<round>/` (the process group's own rendezvous).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import xxhash
from pydantic import Field

from shared.config import StrictModel

if TYPE_CHECKING:
    import torch


class BroadcastConfig(StrictModel):
    """The broadcast weight path (learner rank 0 to the serving rollout workers); the gRPC stream stays beside it."""

    enabled: bool = Field(False, description="send each version to the joined workers in one collective")
    address: str = Field("127.0.0.1:50055", description="host:port of the rendezvous store learner rank 0 hosts")
    backend: Literal["gloo", "nccl"] = Field("gloo", description="gloo (CPU tensors) or nccl (CUDA tensors)")
    bucket_bytes: int = Field(256 << 20, ge=1024, description="bytes of one broadcast bucket")
    join_timeout_s: float = Field(5.0, gt=0, description="how long a round waits for its members to be ready")
    op_timeout_s: float = Field(60.0, gt=0, description="deadline of one bucket's collective")
    retries: int = Field(1, ge=0, le=5, description="rounds run again, without the failed members, after a failure")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broadcast.address {self.address!r} is not host:port")
        return host, int(port)


@dataclass(frozen=True)
class Layout:
    """One version's trainable tensors in stream order: (name, dtype, shape, nbytes) each."""

    version: int
    tensors: list[tuple[str, str, list[int], int]]
    frozen_digest: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        d = json.loads(text)
        return cls(d["version"], [tuple(t) for t in d["tensors"]], d["frozen_digest"])  # type: ignore[misc]


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as a 1-D uint8 view (a copy only when it is not contiguous)."""
    import torch

    t = t.detach().contiguous()
    return t.view(torch.uint8).reshape(-1) if t.numel() else torch.empty(0, dtype=torch.uint8)


def frozen_digest(state_dict: dict[str, torch.Tensor], names: list[str]) -> str:
    """XXH3-128 of the frozen tensors' bytes in name order (empty names: the digest of nothing)."""
    h = xxhash.xxh3_128()
    for name in sorted(names):
        h.update(flat_bytes(state_dict[name].cpu()).numpy())
    return h.hexdigest()


ALIGN = 64  # every tensor starts at a multiple of this in the stream, so a received view has its dtype's alignment


def offsets(layout: Layout) -> tuple[list[int], int]:
    """Where each tensor of the layout starts in the stream (zero padding between), and the stream's length."""
    starts, pos = [], 0
    for *_, nbytes in layout.tensors:
        starts.append(pos)
        pos += -(-nbytes // ALIGN) * ALIGN
    return starts, pos


def connect_store(cfg: BroadcastConfig, is_master: bool, timeout_s: float) -> Any:
    """The rendezvous TCPStore: hosted by the hub (master), reached by workers."""
    import torch.distributed as dist

    host, port = cfg.host_port
    return dist.TCPStore(host, port, is_master=is_master, timeout=timedelta(seconds=timeout_s),
                         wait_for_workers=False, use_libuv=True)


def make_group(cfg: BroadcastConfig, store: Any, round_id: int, rank: int, world: int) -> Any:
    """A process group of this round's members only (never the default group), formed through the store."""
    import torch.distributed as dist

    prefix = dist.PrefixStore(f"pg/{round_id}/", store)
    timeout = timedelta(seconds=cfg.op_timeout_s)
    if cfg.backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout  # noqa: SLF001 - the constructor's only way to take a timeout
        return dist.ProcessGroupNCCL(prefix, rank, world, opts)
    return dist.ProcessGroupGloo(prefix, rank, world, timeout)


def abort(group: Any) -> None:
    """Closes the group's connections at once, so members blocked in a collective fail now, not at its deadline."""
    if group is not None and hasattr(group, "abort"):
        group.abort()


def bucket_device(cfg: BroadcastConfig) -> str:
    return "cuda" if cfg.backend == "nccl" else "cpu"
