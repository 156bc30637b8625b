"""Fault injection: a scoring worker process killed from outside is replaced and no item is lost (make chaos)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from eureka.v1 import reward_pb2
from tests.reward.conftest import start_reward, stop_reward


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def _workers(server: int) -> list[int]:
    """Scoring worker processes: grandchildren of the server (server -> forkserver -> worker)."""
    parents = _parents()
    return [p for p, parent in parents.items() if parents.get(parent) == server]


@pytest.mark.chaos
def test_killed_worker_is_replaced_and_every_item_scored() -> None:
    server = start_reward()
    try:
        workers = _workers(server.proc.pid)
        assert len(workers) == 2, f"expected two scoring workers under the server, found {workers}"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        items = [reward_pb2.VerifyItem(response=f"<answer>{i}</answer>", gold=str(i), item_id=str(i)) for i in range(32)]
        reply = server.stub().Verify(reward_pb2.VerifyRequest(items=items), timeout=120)
        assert [r.accuracy for r in reply.results] == [1.0] * 32
        assert all(r.status == reward_pb2.ITEM_STATUS_OK for r in reply.results)
    finally:
        assert stop_reward(server) == 0
