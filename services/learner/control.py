"""The control channel between ranks: rank 0's decisions (the next batch, stop, release) broadcast on gloo.

A separate gloo group with a long timeout: the other ranks wait here while rank 0 waits for rollout.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

T = TypeVar("T")


class Control:
    def __init__(self) -> None:
        import torch.distributed as dist

        self.group: ProcessGroup = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
        self.rank = dist.get_rank()

    def from_rank0(self, value: T) -> T:
        """Rank 0's `value` on every rank (what other ranks pass is ignored)."""
        import torch.distributed as dist

        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def hold(self, stop: threading.Event) -> None:
        """Rank 0 waits for the stop signal (at once if it came already), then releases the others (they wait in
        the broadcast). Each rank deciding from its own stop event would not do: a SIGTERM that lands while rank 0
        saves the final model finds rank 1 already holding, and rank 0 would exit without releasing it."""
        from shared.grpc_server import wait_until_stopped

        if self.rank == 0:
            wait_until_stopped(stop)
        self.from_rank0(None)
