"""The buffer's work over Redis Streams: prompt queue with leases, idempotent group puts, filtered sampling.

No gRPC here: methods take and return `eureka.v1.buffer_pb2` messages and raise `ServiceError`s;
`server.py` maps them to statuses. Every multi-key write is one Lua script (`scripts.py`).
"""

from __future__ import annotations

import threading
import time

import redis
from eureka.v1 import buffer_pb2, common_pb2

from services.buffer import scripts, validate
from services.buffer.config import BufferConfig
from services.buffer.put_wire import NOT_READ, PutWire
from services.buffer.redis_io import Keys, make_client, pipelined, redis_errors
from services.buffer.sampled import Sampled
from services.buffer.scripts import EnqueueStatus, PutStatus
from shared.grpc_server import DeadlineExceeded, FailedPrecondition, ResourceExhausted
from shared.logs import get_logger

log = get_logger("buffer")

PROMPTS_GROUP = "rollout"
GROUPS_GROUP = "learner"
COUNTERS = (
    "prompts_reclaimed_total",
    "prompts_dead_lettered_total",
    "groups_put_total",
    "groups_duplicate_total",
    "groups_filtered_total",
    "groups_stale_total",
    "groups_acked_total",
)


class Buffer:
    """Prompt queue and trajectory groups in Redis Streams with consumer groups."""

    def __init__(self, cfg: BufferConfig, client: redis.Redis | None = None) -> None:
        self.cfg = cfg
        self.keys = Keys(cfg.redis.key_prefix)
        self.r = client or make_client(cfg)
        self._enqueue = self.r.register_script(scripts.ENQUEUE)
        self._reclaim = self.r.register_script(scripts.RECLAIM)
        self._release = self.r.register_script(scripts.RELEASE)
        self._put = self.r.register_script(scripts.PUT)
        self._ack = self.r.register_script(scripts.ACK)
        self._memory_lock = threading.Lock()
        self._memory_checked = 0.0
        self._memory_full = ""

    # ---- setup ----

    def ensure_groups(self) -> None:
        for stream, group in ((self.keys.prompts, PROMPTS_GROUP), (self.keys.groups, GROUPS_GROUP)):
            try:
                self.r.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # ---- prompts ----

    @redis_errors
    def enqueue_prompts(self, req: buffer_pb2.EnqueuePromptsRequest) -> buffer_pb2.EnqueuePromptsResponse:
        payloads = validate.enqueue(req, self.cfg)
        args: list[object] = [req.cursor_start, req.cursor_end, self.cfg.max_backlog]
        for p, blob in zip(req.prompts, payloads, strict=True):
            args += [p.prompt_id, blob]
        status, cursor, backlog, n = self._enqueue(keys=[self.keys.cursor, self.keys.prompts], args=args)
        if status == EnqueueStatus.CURSOR_MISMATCH:
            raise FailedPrecondition(
                f"cursor_start is {req.cursor_start} but the stored cursor is {cursor}; "
                "enqueue from the stored cursor (GetCursor) so no prompt is skipped or repeated"
            )
        if status == EnqueueStatus.BACKLOG_FULL:
            raise ResourceExhausted(
                f"the prompt backlog is {backlog} and {len(req.prompts)} more would pass max_backlog "
                f"{self.cfg.max_backlog}; enqueue at most {self.cfg.max_backlog - backlog} now"
            )
        if status == EnqueueStatus.OK:
            log.info("prompts enqueued", n=n, cursor=cursor, backlog=backlog)
        return buffer_pb2.EnqueuePromptsResponse(enqueued=n, duplicate=status == EnqueueStatus.DUPLICATE, cursor=cursor, backlog=backlog)

    @redis_errors
    def get_cursor(self) -> int:
        return int(self.r.get(self.keys.cursor) or 0)

    @redis_errors
    def claim_prompts(self, req: buffer_pb2.ClaimPromptsRequest) -> buffer_pb2.ClaimPromptsResponse:
        validate.name(req.worker_id, "worker_id")
        validate.count(req.max_prompts, "max_prompts", self.cfg)
        validate.wait_ms(req.wait_ms, self.cfg)
        k = self.keys
        flat = self._reclaim(
            keys=[k.prompts, k.attempts, k.releases, k.released, k.dead, k.stats],
            args=[PROMPTS_GROUP, req.worker_id, int(self.cfg.lease_s * 1000), req.max_prompts, self.cfg.max_attempts],
        )
        claimed = [(flat[i], flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]
        need = req.max_prompts - len(claimed)
        if need > 0:
            block = req.wait_ms if not claimed and req.wait_ms > 0 else None
            got = self.r.xreadgroup(PROMPTS_GROUP, req.worker_id, {k.prompts: ">"}, count=need, block=block)
            fresh = got[0][1] if got else []
            if fresh:
                pipe = self.r.pipeline(transaction=False)
                for entry_id, _ in fresh:
                    pipe.hincrby(k.attempts, entry_id, 1)
                attempts = pipe.execute()
                claimed += [(eid, f[b"p"], a) for (eid, f), a in zip(fresh, attempts, strict=True)]
        out = buffer_pb2.ClaimPromptsResponse()
        for entry_id, payload, attempt in claimed:
            out.prompts.add(claim_id=_s(entry_id), prompt=common_pb2.Prompt.FromString(payload), attempt=attempt)
        if claimed:
            log.info("prompts claimed", worker_id=req.worker_id, n=len(claimed))
        return out

    @redis_errors
    def release_prompts(self, req: buffer_pb2.ReleasePromptsRequest) -> int:
        validate.name(req.worker_id, "worker_id")
        validate.entry_ids(req.claim_ids, "claim_ids", self.cfg)
        k = self.keys
        idle_ms = int(self.cfg.lease_s * 1000) + 86_400_000
        n = self._release(keys=[k.prompts, k.releases, k.released], args=[PROMPTS_GROUP, req.worker_id, idle_ms, *req.claim_ids])
        log.info("prompts released", worker_id=req.worker_id, n=n)
        return int(n)

    # ---- trajectory groups ----

    def put_group(self, req: buffer_pb2.PutGroupRequest) -> buffer_pb2.PutGroupResponse:
        """One put: `put_groups` of one, a rejected claim raised as FailedPrecondition."""
        result = self.put_groups(buffer_pb2.PutGroupsRequest(puts=[req])).results[0]
        if result.rejected:
            raise FailedPrecondition(result.rejected)
        return buffer_pb2.PutGroupResponse(entry_id=result.entry_id, duplicate=result.duplicate)

    @redis_errors
    def put_groups(self, req: buffer_pb2.PutGroupsRequest, received: PutWire = NOT_READ) -> buffer_pb2.PutGroupsResponse:
        """Validates every put, then runs the PUT script once per group in one pipelined round trip.

        Each script is atomic (store + ack the claim); a retried call is safe because puts are idempotent.
        `received` (from the request's wire bytes, `put_wire.read`) spares checking the arrays again and
        serializing the groups again.
        """
        validate.put_many(req, self.cfg, arrays_checked=received.arrays_ok)
        self._check_memory()
        k = self.keys
        keys = [k.groups, k.group_ids, k.prompts, k.attempts, k.releases, k.released, k.stats]
        blobs = received.group_bytes(req)
        calls = []
        for p, blob in zip(req.puts, blobs, strict=True):
            g = p.group
            calls.append([*keys, g.group_id, blob, p.claim_id, PROMPTS_GROUP, g.prompt_id,
                          g.policy_version, repr(sum(s.accuracy for s in g.samples) / len(g.samples)), g.attempt])
        out = buffer_pb2.PutGroupsResponse()
        for p, (entry_id, status) in zip(req.puts, pipelined(self.r, self._put, len(keys), calls), strict=True):
            stored = status in (PutStatus.STORED, PutStatus.DUPLICATE)
            out.results.add(entry_id=_s(entry_id) if stored else "", duplicate=status == PutStatus.DUPLICATE,
                            rejected=_rejection(p, _s(entry_id), PutStatus(status)))
        log.info("groups put", worker_id=req.puts[0].worker_id, n=len(req.puts),
                 group_ids=",".join(p.group.group_id for p in req.puts),
                 duplicates=sum(r.duplicate for r in out.results), rejected=sum(bool(r.rejected) for r in out.results),
                 policy_version=req.puts[0].group.policy_version)
        return out

    def _check_memory(self) -> None:
        """Refuses puts when Redis used_memory is above the watermark of maxmemory (checked at most once a second)."""
        with self._memory_lock:
            now = time.monotonic()
            if now - self._memory_checked >= 1.0:
                info = self.r.info("memory")
                used, limit = int(info["used_memory"]), int(info.get("maxmemory", 0))
                full = limit > 0 and used > self.cfg.memory_high_watermark * limit
                self._memory_full = f"Redis uses {used} of {limit} bytes" if full else ""
                self._memory_checked = now
            if self._memory_full:
                raise ResourceExhausted(
                    f"{self._memory_full} (above {self.cfg.memory_high_watermark:.0%}); put refused until the "
                    "learner samples and acks groups; retry later"
                )

    def sample_groups(self, req: buffer_pb2.SampleGroupsRequest) -> buffer_pb2.SampleGroupsResponse:
        """`sample` as a parsed message (in-process callers and tests)."""
        return self.sample(req).message()

    @redis_errors
    def sample(self, req: buffer_pb2.SampleGroupsRequest) -> Sampled:
        """`num_groups` kept groups in stream order, fewer when the page fills (`more`), or DeadlineExceeded.

        Reads are sized by the largest group seen so far, so one call holds about a page of groups whatever
        the batch size; a group read past a full page stays pending and comes first on the next call."""
        validate.sample(req, self.cfg)
        k = self.keys
        # Pending entries after `after` were delivered to this consumer but never received: they go first.
        after: str | None = req.after_entry_id or (
            "0-0" if req.replay_pending else _s(self.r.hget(k.returned, req.consumer) or b"0-0")
        )
        deadline = time.monotonic() + req.wait_ms / 1000
        out = Sampled(page_bytes=min(req.max_page_bytes or self.cfg.sample_page_bytes, self.cfg.sample_page_bytes))
        while len(out.kept) < req.num_groups and not out.more:
            need = out.reads_for(req.num_groups - len(out.kept))
            if after is not None:
                got = self.r.xreadgroup(GROUPS_GROUP, req.consumer, {k.groups: after}, count=need)
                entries = got[0][1] if got else []
                if not entries:
                    after = None
                    continue
                after = _s(entries[-1][0])
            else:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                block = remaining_ms if remaining_ms > 0 else None  # past the deadline: take only what is there
                got = self.r.xreadgroup(GROUPS_GROUP, req.consumer, {k.groups: ">"}, count=need, block=block)
                entries = got[0][1] if got else []
                if not entries:
                    break
            self._keep_or_drop(entries, req, out)
        if len(out.kept) < req.num_groups and not out.more:
            raise DeadlineExceeded(
                f"only {len(out.kept)} of {req.num_groups} groups were ready within wait_ms={req.wait_ms}; "
                "they stay pending for this consumer and come first on the next call"
            )
        self.r.hset(k.returned, req.consumer, out.kept[-1][0])
        return out

    def _keep_or_drop(self, entries: list, req: buffer_pb2.SampleGroupsRequest, out: Sampled) -> None:
        """Keeps fresh groups inside the filter in `out.kept` until the page is full; acks, counts and reports
        the others (stale or filtered) in `out.stale` / `out.filtered`. Entries after a full page are left
        as they are: pending, delivered again by the next call."""
        filtered: list[str] = []
        stale: list[str] = []
        for raw_id, fields in entries:
            entry_id = _s(raw_id)
            if not fields:  # deleted while pending (cannot happen through the buffer): just ack it
                filtered.append(entry_id)
                continue
            # `v` and `a` (policy version, mean accuracy) were stored beside the group at put time.
            if int(fields[b"v"]) + req.max_staleness < req.policy_version:
                stale.append(entry_id)
            elif not req.filter_low <= float(fields[b"a"]) <= req.filter_high:
                filtered.append(entry_id)
            elif not out.keep(entry_id, fields[b"g"]):
                break
        for ids, counter, dest in ((filtered, "groups_filtered_total", out.filtered),
                                   (stale, "groups_stale_total", out.stale)):
            if ids:
                self._ack(keys=[self.keys.groups, self.keys.stats, self.keys.dropped], args=[GROUPS_GROUP, counter, *ids])
                dest.extend(ids)
                log.info("groups dropped", reason=counter.split("_")[1], n=len(ids), consumer=req.consumer,
                         policy_version=req.policy_version)

    @redis_errors
    def ack_groups(self, req: buffer_pb2.AckGroupsRequest) -> int:
        validate.name(req.consumer, "consumer")
        validate.entry_ids(req.entry_ids, "entry_ids", self.cfg)
        n = self._ack(keys=[self.keys.groups, self.keys.stats], args=[GROUPS_GROUP, "groups_acked_total", *req.entry_ids])
        log.info("groups acked", consumer=req.consumer, n=n, asked=len(req.entry_ids))
        return int(n)

    # ---- stats ----

    @redis_errors
    def stats(self) -> buffer_pb2.BufferStats:
        k = self.keys
        pipe = self.r.pipeline(transaction=True)  # one consistent snapshot
        pipe.get(k.cursor)
        pipe.xlen(k.prompts)
        pipe.xpending(k.prompts, PROMPTS_GROUP)
        pipe.scard(k.released)
        pipe.xlen(k.groups)
        pipe.xpending(k.groups, GROUPS_GROUP)
        pipe.hgetall(k.stats)
        pipe.info("memory")
        cursor, prompts, prompts_pending, released, groups, groups_pending, counters, mem = pipe.execute()
        counts = {_s(a): int(b) for a, b in counters.items()}
        return buffer_pb2.BufferStats(
            cursor=int(cursor or 0),
            prompt_backlog=prompts,
            prompts_pending=prompts_pending["pending"] - released,  # released claims wait for the next claim
            groups_ready=max(groups - groups_pending["pending"], 0),
            groups_pending=groups_pending["pending"],
            redis_used_memory_bytes=int(mem["used_memory"]),
            redis_maxmemory_bytes=int(mem.get("maxmemory", 0)),
            **{name: counts.get(name, 0) for name in COUNTERS},
        )


def _rejection(p: buffer_pb2.PutGroupRequest, detail: str, status: PutStatus) -> str:
    """Why the PUT script did not store a group, as a sentence; empty when it did (stored or a duplicate)."""
    g = p.group
    if status == PutStatus.CLAIM_NOT_PENDING:
        return (f"claim {p.claim_id} is no longer pending (its prompt was completed by another attempt or "
                f"dead-lettered); group {g.group_id!r} was not stored")
    if status == PutStatus.WRONG_PROMPT:
        return f"claim {p.claim_id} is for prompt {detail!r}, not {g.prompt_id!r}; put the group with its own claim_id"
    if status == PutStatus.ATTEMPT_TOO_HIGH:
        return (f"group.attempt is {g.attempt} but claim {p.claim_id} was delivered {detail} time(s); "
                "use the attempt that ClaimPrompts returned")
    return ""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

