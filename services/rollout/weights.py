"""Keep the served weights at the learner's published version: check between batches, pull, swap atomically.

A pull either yields one whole verified version that the backend loads (all or nothing), or it fails
(stream error, deadline, checksum, shape mismatch): the worker then keeps serving the old version and
the failure is counted; the staleness bound in the buffer decides whether those samples are used.

With the broadcast path on (`broadcast.enabled`), a receiver thread stages the versions the learner
broadcasts; `refresh` loads a staged version first and pulls over gRPC only what no broadcast brought
(a worker's first version, or a round it missed: counted in `eureka_rollout_weight_broadcast_missed_total`).

A gRPC pull after the first names the frozen chunks the worker keeps from its last full pull: when the
learner's frozen tensors are the same, only the trainable chunks travel (`eureka_rollout_weight_pulls_total`
and `..._pull_bytes_total` by kind: full or trainable).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
from eureka.v1 import weights_pb2, weights_pb2_grpc

from services.rollout import metrics
from services.rollout.backends.base import Backend, WeightLoadError
from shared.logs import get_logger
from shared.weights import WeightPullError
from shared.weights.pull import HeldFrozen, pull_version
from shared.weights.group import BroadcastConfig
from shared.weights.receive import BroadcastReceiver

if TYPE_CHECKING:
    import torch

log = get_logger("rollout.weights")


class WeightSync:
    """The version a backend serves and how to bring it up to date; used by the worker thread only."""

    def __init__(
        self, channel: grpc.Channel, backend: Backend, timeout_s: float, version_timeout_s: float = 5.0,
        broadcast: BroadcastConfig | None = None, worker_id: str = "",
    ) -> None:
        self.channel = channel
        self.stub = weights_pb2_grpc.WeightServiceStub(channel)
        self.backend = backend
        self.timeout_s = timeout_s
        self.version_timeout_s = version_timeout_s
        self.version: int | None = None  # None until the first successful pull
        self.last_published: int | None = None  # the learner's version at the last check (None: no answer)
        self.failures = 0
        self.receiver = BroadcastReceiver(broadcast, worker_id) if broadcast is not None and broadcast.enabled else None
        if self.receiver is not None:
            self.receiver.start()  # a daemon thread: it joins rounds until the process ends
        self._published_at_broadcast: int | None = None  # what the learner's store said when we loaded a broadcast
        self.frozen: HeldFrozen | None = None  # the frozen chunks of the last full pull: later pulls leave them out

    def published(self) -> int | None:
        """The learner's published version, or None (counted) when the weight service does not answer."""
        try:
            reply = self.stub.GetVersion(weights_pb2.GetVersionRequest(), timeout=self.version_timeout_s)
            self.last_published = int(reply.policy_version)
        except grpc.RpcError as e:
            self.last_published = None
            self._failed("version", f"GetVersion failed: {e.code().name}: {e.details()}")
        return self.last_published

    def refresh(self) -> bool:
        """Pull when the published version differs from the served one; True when the served version changed.

        A lower published version means the learner restarted from a checkpoint: the newer weights it
        served before were thrown away, so the worker follows it back.
        """
        published = self.published()
        changed = self._take_broadcast(published)
        if published is None or published == self.version:
            return changed
        if published == self._published_at_broadcast:
            return changed  # the broadcast version is served; the learner's store publishes it right after
        if self.receiver is not None and self.receiver.busy:
            return changed  # a broadcast is on its way: take it before the next batch
        return self.pull(published) or changed

    def _take_broadcast(self, published: int | None) -> bool:
        """Load the version the receiver staged, unless the learner has since published another (a restart)."""
        staged = self.receiver.take() if self.receiver is not None else None
        if staged is None:
            return False
        try:
            return self._load_staged(*staged, published)
        finally:  # the backend copied the tensors (or dropped them): their buffer takes the next round
            self.receiver.recycle()  # type: ignore[union-attr]

    def _load_staged(self, version: int, state_dict: dict[str, torch.Tensor], published: int | None) -> bool:
        if self.version is None or version == self.version:
            return False
        if published is not None and version < published:
            return False  # older than what the learner serves now: pulled below instead
        start = time.monotonic()
        try:
            self.backend.load_weights(state_dict)
        except WeightLoadError as e:
            self._failed("load", str(e))
            return False
        self._published_at_broadcast = published
        self._swapped(version, len(state_dict), time.monotonic() - start, "broadcast")
        return True

    def pull(self, min_version: int) -> bool:
        start = time.monotonic()
        try:
            got = pull_version(self.channel, min_version, self.timeout_s, self.frozen)
            self.backend.load_weights(got.state_dict)
        except WeightPullError as e:
            self.frozen = None  # whatever went wrong, the next pull takes every chunk
            self._failed("pull", str(e))
            return False
        except WeightLoadError as e:
            self._failed("load", str(e))
            return False
        self.frozen = got.frozen
        self._published_at_broadcast = None
        if self.receiver is not None:
            if self.version is not None:
                metrics.BROADCAST_MISSED.inc()
            self.receiver.pulled(got.state_dict)
        metrics.PULLS.labels(got.kind).inc()
        metrics.PULL_BYTES.labels(got.kind).inc(got.received_bytes)
        metrics.PULL_SECONDS.observe(time.monotonic() - start)
        self._swapped(got.version, len(got.state_dict), time.monotonic() - start, "grpc", kind=got.kind,
                      received_bytes=got.received_bytes)
        return True

    def _swapped(self, version: int, tensors: int, seconds: float, path: str, **fields: object) -> None:
        old, self.version = self.version, version
        metrics.POLICY_VERSION.set(version)
        metrics.UPDATES.labels(path).inc()
        log.info("weights swapped", old_version=old, policy_version=version, tensors=tensors, path=path,
                 seconds=f"{seconds:.3f}", **fields)

    def _failed(self, reason: str, detail: str) -> None:
        self.failures += 1
        metrics.PULL_FAILURES.labels(reason).inc()
        log.warning(
            "weight pull failed, keeping the served version", reason=reason, policy_version=self.version, detail=detail
        )
