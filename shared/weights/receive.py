"""The broadcast receiver of a rollout worker: a thread that stays joined and stages each version it receives.

The thread joins the learner's rounds (`group.py` has the store keys) with the digest of the frozen tensors
it serves (set by `pulled`, after each gRPC pull); without one it does not join: a new worker pulls first.
A round's buckets land straight in one staging buffer that holds the version's trainable tensors (their
views are the state dict handed over, no copy; `stream.py` has the buckets), and the stream's digest is
checked before the version is staged. The worker thread `take`s it between batches and loads it into the
backend, all or nothing, so a batch sees one version, then hands the buffer back (`recycle`): the next
round lands in the same memory instead of faulting in a new buffer. Generation never waits for a broadcast.
A failed round (the learner aborted it, a deadline, a bad digest) stages nothing: the receiver joins again,
and a version it missed is pulled over gRPC by the worker (counted there).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from shared.logs import get_logger
from shared.weights import stream
from shared.weights.group import (
    BroadcastConfig, Layout, abort, bucket_device, connect_store, frozen_digest, make_group, offsets,
)

if TYPE_CHECKING:
    import torch

log = get_logger("weights.receive")

_POLL_S = 0.02  # how often a wait looks at the store (and the stop event)


class RoundFailed(Exception):
    """A round that staged nothing (aborted, past its deadline, or a digest that does not match)."""


class BroadcastReceiver:
    """Joins the learner's broadcast rounds on a thread of its own; `take` hands over the newest staged version."""

    def __init__(self, cfg: BroadcastConfig, worker_id: str) -> None:
        self.cfg = cfg
        self.worker_id = worker_id
        self.busy = False  # inside a round: a version is on its way
        self.received = 0
        self.failed = 0
        self._frozen_digest = ""
        self._staged: tuple[int, dict[str, torch.Tensor], torch.Tensor] | None = None  # version, tensors, buffer
        self._taken: torch.Tensor | None = None  # the buffer of the version the worker loads now
        self._spare: torch.Tensor | None = None  # a buffer no one reads: the next round lands in it
        self._lock = threading.Lock()
        self._pulled = threading.Event()
        self._stop = threading.Event()
        self._store: Any = None
        self._group: tuple[int, Any] | None = None  # (round it was formed in, process group), kept while members stay
        self._thread = threading.Thread(target=self._run, name="weights-receive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pulled.set()
        self._thread.join(timeout=self.cfg.op_timeout_s)

    def take(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """The newest version received and verified since the last take (its trainable tensors), or None."""
        with self._lock:
            staged, self._staged = self._staged, None
            if staged is None:
                return None
            self._taken = staged[2]
        return staged[0], staged[1]

    def recycle(self) -> None:
        """The taken version's tensors are no longer read (the backend copied them): their buffer stages the next."""
        with self._lock:
            self._spare, self._taken = self._taken, None

    def pulled(self, state_dict: dict[str, torch.Tensor]) -> None:
        """After a gRPC pull: the frozen tensors served now, by the digest the learner compares when we join."""
        names = self._frozen_names()
        if names is None:
            return  # no hub yet: the next pull tells
        self._frozen_digest = frozen_digest(state_dict, names)
        self._pulled.set()

    # ---- the thread ----

    def _connect(self) -> Any:
        if self._store is None:
            self._store = connect_store(self.cfg, is_master=False, timeout_s=self.cfg.join_timeout_s)
        return self._store

    def _frozen_names(self) -> list[str] | None:
        try:
            store = self._connect()
            if not store.check(["frozen"]):
                return None
            return json.loads(store.get("frozen"))["names"]
        except RuntimeError:
            self._store = None
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._frozen_digest:
                self._pulled.wait(_POLL_S)
                self._pulled.clear()
                continue
            try:
                self._one_round()
            except RoundFailed as e:
                self.failed += 1
                log.warning("broadcast round missed", worker_id=self.worker_id, detail=str(e))
            except RuntimeError as e:  # the store went away (learner restart) or did not answer: connect again
                self._store = None
                log.info("broadcast store unreachable, joining again", worker_id=self.worker_id,
                         detail=str(e).splitlines()[0][:200])
                self._stop.wait(_POLL_S)

    def _wait(self, key: str, timeout_s: float | None = None) -> bytes | None:
        """The key's value once it is set; None at the stop event or after `timeout_s`."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        store = self._connect()
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            if store.check([key]):
                return store.get(key)
            time.sleep(_POLL_S)
        return None

    def _one_round(self) -> None:
        store = self._connect()
        ticket = store.add("seq", 1)
        store.set(f"join/{ticket}", json.dumps({"worker_id": self.worker_id, "frozen_digest": self._frozen_digest}))
        raw = self._wait(f"assign/{ticket}")
        if raw is None:
            return
        assign = json.loads(raw)
        if assign.get("pull"):  # our frozen tensors are not the learner's: the next gRPC pull sets them
            self._frozen_digest = ""
            return
        if "round" not in assign:
            return  # a newer ticket of ours took its place
        r = assign["round"]
        store.set(f"ready/{r}/{ticket}", b"1")
        go = self._wait(f"go/{r}", self.cfg.join_timeout_s + self.cfg.op_timeout_s)
        if go is None:
            raise RoundFailed(f"round {r} never started")
        spec = json.loads(go)
        if ticket not in spec["members"]:
            raise RoundFailed(f"left out of round {r} (not ready in time)")
        layout = Layout.from_json(spec["layout"])
        self.busy = True
        error = ""
        try:
            if self._group is None or self._group[0] != spec["group"]:  # membership changed: a new group
                self._group = None
                rank, world = spec["members"].index(ticket) + 1, len(spec["members"]) + 1
                self._group = (spec["group"], make_group(self.cfg, store, spec["group"], rank, world))
            state_dict, buffer = self._receive(self._group[1], layout)
            with self._lock:  # staged before `busy` drops, so the worker never pulls a version on its way
                if self._staged is not None and self._spare is None:  # replaced before it was taken
                    self._spare = self._staged[2]
                self._staged = (layout.version, state_dict, buffer)
            self.received += 1
        except (RuntimeError, RoundFailed) as e:
            error = str(e).splitlines()[0][:200]
        finally:
            self.busy = False
        if error and self._group is not None:  # abort and drop the group (outside the handler, whose traceback
            abort(self._group[1])  # holds it) so the others fail now
            self._group = None
        store.set(f"done/{r}/{ticket}", b"failed" if error else b"ok")
        if error:
            raise RoundFailed(f"round {r} for version {layout.version} failed: {error}")

    def _receive(self, group: Any, layout: Layout) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every bucket into a staging buffer, the digest checked; the tensors as views of it, and the buffer."""
        import torch

        starts, total = offsets(layout)
        buffer = self._buffer(total)
        staged = buffer[:total]
        try:
            stream.receive(group, layout, staged, self.cfg.bucket_bytes, bucket_device(self.cfg), self.cfg.op_timeout_s)
        except (RuntimeError, stream.StreamMismatch) as e:
            with self._lock:  # nothing staged in it: the next round lands there again
                self._spare = buffer
            if isinstance(e, stream.StreamMismatch):
                raise RoundFailed(str(e)) from e
            raise
        out: dict[str, torch.Tensor] = {}
        for start, (name, dtype, shape, nbytes) in zip(starts, layout.tensors, strict=True):
            out[name] = staged[start : start + nbytes].view(getattr(torch, dtype)).reshape(shape)
        return out, buffer

    def _buffer(self, total: int) -> torch.Tensor:
        """A staging buffer of `total` bytes: the one handed back by `recycle` when it fits, else a new one."""
        import torch

        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.numel() >= total:
            return spare
        return torch.empty(total, dtype=torch.uint8)
