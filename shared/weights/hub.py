"""The broadcast sender on learner rank 0: each published version goes to every joined worker in one collective.

`send` runs a round: it takes the workers that joined since the last round (`group.py` has the store keys),
answers `pull` to a worker whose frozen tensors differ from the learner's (it must pull the version over gRPC
first), waits up to `join_timeout_s` for the others to be ready, forms the round's own process group and
broadcasts the trainable tensors bucket by bucket, then their digest. When a member fails mid-round (killed,
partitioned) the group is aborted, so the others fail at once instead of at the deadline; they join again
and the round runs again without the failed member, up to `retries` times. A worker left out of every round
of a version pulls it over gRPC. The frozen tensors never travel here: they reach a worker once, in its
first gRPC pull.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.logs import get_logger
from shared.weights import stream
from shared.weights.group import (
    BroadcastConfig, Layout, abort, bucket_device, connect_store, dtype_name, frozen_digest, make_group,
)

if TYPE_CHECKING:
    import torch

log = get_logger("weights.hub")


@dataclass
class RoundResult:
    """What one `send` did: the workers that received the version, those dropped, the bytes sent."""

    version: int
    members: list[str] = field(default_factory=list)  # worker ids that received it
    dropped: list[str] = field(default_factory=list)  # joined but not ready, or failed mid-round
    told_to_pull: list[str] = field(default_factory=list)
    rounds: int = 0
    bytes_sent: int = 0  # stream bytes broadcast (once per round, whatever the number of members)
    seconds: float = 0.0


class BroadcastHub:
    """Hosts the rendezvous store and sends versions; tensors under `frozen_prefix` never change (never sent)."""

    def __init__(self, cfg: BroadcastConfig, frozen_prefix: str | None = None) -> None:
        self.cfg = cfg
        self.frozen_prefix = frozen_prefix
        self.store = connect_store(cfg, is_master=True, timeout_s=cfg.op_timeout_s)
        self._seen = 0  # tickets read so far
        self._pending: dict[int, dict[str, Any]] = {}  # join records read, not yet in a round
        self._round = 0
        self._frozen_digest: str | None = None
        self._lock = threading.Lock()  # one round at a time
        self._group: tuple[tuple[str, ...], Any, int] | None = None  # (members, process group, round it was formed)
        self.frozen_bytes_sent = 0  # stays 0: the counter tests and metrics read
        self.trainable_bytes_sent = 0

    def send(self, version: int, state_dict: dict[str, torch.Tensor],
             on_bucket: Callable[[int], None] | None = None) -> RoundResult:
        """Broadcast `version` to the joined workers; returns who got it (the rest pull over gRPC)."""
        with self._lock:
            start = time.monotonic()
            layout = self._layout(version, state_dict)
            result = RoundResult(version)
            members = self._joined(layout, result)
            for attempt in range(self.cfg.retries + 1):
                if not members:
                    break
                received, failed = self._round_with(members, layout, state_dict, result, on_bucket)
                result.members += sorted(received)
                lost = [w for w in members.values() if w not in received and w not in failed]
                result.dropped += lost  # not ready in time, or silent at the end of the round (dead)
                if not failed:
                    break
                if attempt < self.cfg.retries:  # the members that failed join again at once and get a new round
                    members = self._rejoined({t: w for t, w in members.items() if w in failed}, layout, result)
                    result.dropped += [w for w in failed if w not in members.values()]
                else:
                    result.dropped += failed
            result.seconds = time.monotonic() - start
            log.info("weights broadcast", policy_version=version, members=len(result.members),
                     dropped=len(result.dropped), told_to_pull=len(result.told_to_pull), rounds=result.rounds,
                     bytes=result.bytes_sent, seconds=f"{result.seconds:.3f}")
            return result

    def _is_frozen(self, name: str) -> bool:
        return self.frozen_prefix is not None and name.startswith(self.frozen_prefix)

    def _layout(self, version: int, state_dict: dict[str, torch.Tensor]) -> Layout:
        frozen = [n for n in state_dict if self._is_frozen(n)]
        if self._frozen_digest is None:  # frozen tensors do not change: hashed once
            self._frozen_digest = frozen_digest(state_dict, frozen)
            self.store.set("frozen", json.dumps({"names": frozen, "digest": self._frozen_digest}))
        tensors = [(n, dtype_name(t), list(t.shape), t.numel() * t.element_size())
                   for n, t in state_dict.items() if not self._is_frozen(n)]
        return Layout(version, tensors, self._frozen_digest)

    def _read_tickets(self) -> None:
        """Join records written since the last look into `_pending` (a ticket not written yet waits)."""
        last = self.store.add("seq", 0)
        for ticket in range(self._seen + 1, last + 1):
            key = f"join/{ticket}"
            if not self.store.check([key]):
                break
            self._pending[ticket] = json.loads(self.store.get(key))
            self.store.delete_key(key)
            self._seen = ticket

    def joined(self) -> set[str]:
        """The workers waiting for the next round."""
        with self._lock:
            self._read_tickets()
            return {r["worker_id"] for r in self._pending.values()}

    def _joined(self, layout: Layout, result: RoundResult) -> dict[int, str]:
        """ticket -> worker id of the workers that may take this round (the latest ticket of each worker)."""
        latest: dict[str, int] = {}
        self._read_tickets()
        tickets, self._pending = self._pending, {}
        for ticket, record in tickets.items():
            if record["frozen_digest"] != layout.frozen_digest:
                self.store.set(f"assign/{ticket}", json.dumps({"pull": True}))
                result.told_to_pull.append(record["worker_id"])
                continue
            old = latest.get(record["worker_id"])
            if old is not None:
                self.store.set(f"assign/{old}", json.dumps({"stale": True}))
            latest[record["worker_id"]] = ticket
        return {t: w for w, t in latest.items()}

    def _rejoined(self, expected: dict[int, str], layout: Layout, result: RoundResult) -> dict[int, str]:
        """The members of a failed round that joined again within join_timeout_s."""
        want = set(expected.values())
        found: dict[int, str] = {}
        end = time.monotonic() + self.cfg.join_timeout_s
        while set(found.values()) != want and time.monotonic() < end:
            found.update({t: w for t, w in self._joined(layout, result).items() if w in want})
            time.sleep(0.01)
        return found

    def _round_with(self, members: dict[int, str], layout: Layout, state_dict: dict[str, torch.Tensor],
                    result: RoundResult, on_bucket: Callable[[int], None] | None) -> tuple[list[str], list[str]]:
        """One round: the workers that verified the version, and those that said they failed (they join again).

        A member that says nothing within join_timeout_s after the stream (dead, partitioned) is in neither."""
        self._round += 1
        r = self._round
        result.rounds += 1
        for ticket in members:
            self.store.set(f"assign/{ticket}", json.dumps({"round": r}))
        ready = dict(sorted(((t, members[t]) for t in self._ready(r, members)), key=lambda tw: tw[1]))
        if len(ready) < len(members):
            log.warning("workers not ready for the round, left to pull", round=r,
                        workers=[w for t, w in members.items() if t not in ready])
        workers = tuple(ready.values())  # ranks 1, 2, ... in worker id order: the same set keeps its group
        if self._group is not None and self._group[0] != workers:
            abort(self._group[1])  # membership changed: the group is formed anew
            self._group = None
        formed = self._group[2] if self._group is not None else r
        self.store.set(f"go/{r}", json.dumps({"members": list(ready), "group": formed, "layout": layout.to_json()}))
        if not ready:
            return [], []
        error = ""
        try:
            if self._group is None:
                self._group = (workers, make_group(self.cfg, self.store, r, 0, len(ready) + 1), r)
            result.bytes_sent += self._stream(self._group[1], layout, state_dict, on_bucket)
        except RuntimeError as e:  # a member died or hung
            error = str(e).splitlines()[0][:200]
        if error:  # abort and drop the group (outside the handler, whose traceback holds it) so the others fail now
            if self._group is not None:
                abort(self._group[1])
            self._group = None
            log.warning("broadcast round failed; the members that join again get it in a new round", round=r,
                        policy_version=layout.version, error=error)
        return self._outcome(r, ready)

    def _outcome(self, r: int, ready: dict[int, str]) -> tuple[list[str], list[str]]:
        """What each member reported at the end of round r (`done/<round>/<ticket>`: ok or failed)."""
        end = time.monotonic() + self.cfg.join_timeout_s
        said: dict[int, bytes] = {}
        while len(said) < len(ready) and time.monotonic() < end:
            for t in ready:
                if t not in said and self.store.check([f"done/{r}/{t}"]):
                    said[t] = self.store.get(f"done/{r}/{t}")
            time.sleep(0.005)
        return ([ready[t] for t, v in said.items() if v == b"ok"], [ready[t] for t, v in said.items() if v != b"ok"])

    def _ready(self, r: int, members: dict[int, str]) -> list[int]:
        """Tickets that said ready within join_timeout_s, in ticket order (their ranks are 1, 2, ...)."""
        end = time.monotonic() + self.cfg.join_timeout_s
        ready: list[int] = []
        while time.monotonic() < end:
            ready = [t for t in members if self.store.check([f"ready/{r}/{t}"])]
            if len(ready) == len(members):
                break
            time.sleep(0.005)
        return sorted(ready)

    def _stream(self, group: Any, layout: Layout, state_dict: dict[str, torch.Tensor],
                on_bucket: Callable[[int], None] | None) -> int:
        """The trainable tensors in buckets, then their digest (`stream.send`); returns the bytes sent."""
        sent = stream.send(group, layout, state_dict, self.cfg.bucket_bytes, bucket_device(self.cfg),
                           self.cfg.op_timeout_s, on_bucket)
        self.trainable_bytes_sent += sent
        return sent

    def close(self) -> None:
        self.store = None
