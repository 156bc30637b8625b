"""Rank 0's side of the buffer: feed prompts from the dataset cursor, sample full batches, ack after checkpoints.

Back-pressure: prompts are enqueued only while queued + claimed prompts plus ready groups stay under
(max_staleness + 1) batches; that, not the staleness filter, is what keeps samples fresh. Enqueue is
a compare-and-set on the buffer's cursor, so a restarted learner continues where the buffer says.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2

from services.learner import metrics
from services.learner.config import LearnerConfig
from shared.dataset import Record, record_to_prompt
from shared.logs import get_logger

log = get_logger("learner.driver")

T = TypeVar("T")
MAX_IDS_PER_CALL = 512
MAX_PROMPTS_PER_CALL = 64


class Stopped(Exception):
    """The stop event was set while waiting on the buffer."""


class Dataset:
    """Dataset position (cursor) -> Prompt: each epoch a permutation of the records seeded by (seed, epoch), so
    the order is shuffled, reshuffled per epoch and a function of the cursor alone (a resumed run continues it
    exactly). Prompt ids name the epoch and the record's index in the file."""

    def __init__(self, records: list[Record], seed: int = 0) -> None:
        if not records:
            raise ValueError("the dataset has no usable records; check the JSONL file")
        self.records = records
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int) -> list[int]:
        """Record indices in the order epoch `epoch` reads them."""
        if epoch not in self._orders:
            self._orders = {epoch: random.Random(f"{self.seed}:{epoch}").sample(range(len(self.records)),
                                                                           len(self.records))}
        return self._orders[epoch]

    def prompt(self, cursor: int) -> common_pb2.Prompt:
        epoch, position = divmod(cursor, len(self.records))
        index = self.order(epoch)[position]
        return record_to_prompt(self.records[index], prompt_id=f"train:{epoch}:{index}", cursor=cursor)


class BufferDriver:
    def __init__(self, channel: grpc.Channel, cfg: LearnerConfig, dataset: Dataset, stop: threading.Event) -> None:
        self.stub = buffer_pb2_grpc.BufferServiceStub(channel)
        self.cfg = cfg
        self.dataset = dataset
        self.stop = stop
        self.cursor = 0
        self.last_received = ""  # entry id of the last group received; empty = replay pending first

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Retry while the buffer is unavailable (restarting), until the stop event."""
        delay = 0.5
        while True:
            try:
                return fn()
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.warning("buffer unavailable, retrying", call=what, detail=e.details(), retry_s=delay)
            if self.stop.wait(delay):
                raise Stopped(what)
            delay = min(delay * 2, 10.0)

    def start(self) -> None:
        self.cursor = self._call("GetCursor", lambda: self.stub.GetCursor(buffer_pb2.GetCursorRequest())).cursor
        log.info("dataset cursor from the buffer", cursor=self.cursor, records=len(self.dataset.records))

    def top_up(self) -> int:
        """Enqueue prompts up to the back-pressure target; returns how many were enqueued."""
        target = (self.cfg.max_staleness + 1) * self.cfg.batch_groups
        stats = self._call("GetStats", lambda: self.stub.GetStats(buffer_pb2.GetStatsRequest()))
        want = target - stats.prompt_backlog - stats.groups_ready
        done = 0
        while want - done > 0:
            n = min(want - done, MAX_PROMPTS_PER_CALL)
            start = self.cursor
            req = buffer_pb2.EnqueuePromptsRequest(
                prompts=[self.dataset.prompt(c) for c in range(start, start + n)], cursor_start=start, cursor_end=start + n
            )
            try:
                resp = self._call("EnqueuePrompts", lambda req=req: self.stub.EnqueuePrompts(req))
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:  # cursor moved under us: take the stored one
                    self.cursor = self._call("GetCursor", lambda: self.stub.GetCursor(buffer_pb2.GetCursorRequest())).cursor
                    log.warning("enqueue cursor mismatch, continuing from the buffer's cursor", cursor=self.cursor)
                    continue
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the buffer's max_backlog is lower than ours
                    log.warning("buffer backlog full, enqueue later", detail=e.details())
                    break
                raise
            self.cursor = resp.cursor
            if not resp.duplicate:
                done += resp.enqueued
                metrics.PROMPTS_ENQUEUED.inc(resp.enqueued)
        return done

    def sample(self, version: int) -> tuple[buffer_pb2.SampleGroupsResponse, float]:
        """Exactly batch_groups fresh, filtered groups (topping the backlog up while waiting), and the wait time.

        A batch above the buffer's page size arrives in pages, each asked for after the last group received,
        so a retried or repeated call (a lost reply, a buffer restart) neither skips nor repeats a group."""
        r = self.cfg.recipe
        start = time.monotonic()
        batch = buffer_pb2.SampleGroupsResponse()
        after = self.last_received  # advanced per page, kept only once the batch is whole
        refill = True  # top the backlog up before a call that may wait, not between the pages of a reply
        pages = 0
        while len(batch.groups) < self.cfg.batch_groups:
            if refill:
                self.top_up()
            req = buffer_pb2.SampleGroupsRequest(
                consumer=self.cfg.consumer, num_groups=self.cfg.batch_groups - len(batch.groups),
                policy_version=version, max_staleness=self.cfg.max_staleness, filter_low=r.filter_low,
                filter_high=r.filter_high, replay_pending=not after, after_entry_id=after,
                wait_ms=self.cfg.sample_wait_ms,
            )
            try:
                page = self._call("SampleGroups", lambda req=req: self.stub.SampleGroups(
                    req, timeout=self.cfg.grpc.deadline_s + self.cfg.sample_wait_ms / 1000))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                if self.stop.is_set():
                    raise Stopped("SampleGroups") from e
                refill = True
                continue  # not enough yet: what was read stays pending and comes first next time
            refill = not page.more
            after = page.groups[-1].entry_id
            pages += 1
            if page.more:  # a batch in pages is open: a buffer restart now must neither skip nor repeat a group
                log.info("batch page received", groups=len(batch.groups) + len(page.groups),
                         of=self.cfg.batch_groups, after_entry_id=after)
            for reason, ids in (("filtered", page.filtered_entry_ids), ("stale", page.stale_entry_ids)):
                metrics.GROUPS_DROPPED.labels(reason).inc(len(ids))
            batch.groups.extend(page.groups)
            batch.filtered_entry_ids.extend(page.filtered_entry_ids)
            batch.stale_entry_ids.extend(page.stale_entry_ids)
        self.last_received = after
        if pages > 1:
            log.info("batch sampled", groups=len(batch.groups), pages=pages, after_entry_id=after)
        return batch, time.monotonic() - start

    def ack(self, entry_ids: list[str]) -> int:
        acked = 0
        for i in range(0, len(entry_ids), MAX_IDS_PER_CALL):
            req = buffer_pb2.AckGroupsRequest(consumer=self.cfg.consumer, entry_ids=entry_ids[i : i + MAX_IDS_PER_CALL])
            acked += self._call("AckGroups", lambda req=req: self.stub.AckGroups(req)).acked
        return acked
