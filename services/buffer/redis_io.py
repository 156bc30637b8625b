"""The buffer's Redis plumbing: its key names, the client, Redis errors as statuses, pipelined scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.commands.core import Script

from services.buffer.config import BufferConfig
from shared.grpc_server import ResourceExhausted, Unavailable

T = TypeVar("T")


class Keys:
    """Every Redis key the buffer owns, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.cursor = prefix + "cursor"  # string: next dataset position the learner enqueues
        self.prompts = prefix + "prompts"  # stream, group `rollout`: queued + claimed prompts
        self.attempts = prefix + "prompts:attempts"  # hash claim_id -> deliveries so far
        self.releases = prefix + "prompts:releases"  # hash claim_id -> graceful releases so far
        self.released = prefix + "prompts:released"  # set: claims released, not yet handed out again
        self.dead = prefix + "prompts:dead"  # stream: dead-lettered prompts
        self.groups = prefix + "groups"  # stream, group `learner`: trajectory groups
        self.group_ids = prefix + "groups:ids"  # hash group_id -> entry id (idempotency of put)
        self.dropped = prefix + "groups:dropped"  # hash entry id -> why it was dropped (filtered / stale counter)
        self.returned = prefix + "groups:returned"  # hash consumer -> last entry id SampleGroups returned
        self.stats = prefix + "stats"  # hash: the counters of core.COUNTERS


def redis_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """For `Buffer` methods: Redis trouble becomes UNAVAILABLE (retryable) or RESOURCE_EXHAUSTED (out of memory);
    a consumer group lost with Redis's data is recreated (`self.ensure_groups()`) and the call retried once."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        for attempt in (1, 2):
            try:
                return fn(self, *args, **kwargs)
            except redis.ResponseError as e:
                text = str(e)
                if "NOGROUP" in text and attempt == 1:  # Redis came back empty: recreate and retry once
                    self.ensure_groups()
                    continue
                if text.startswith("OOM") or "OOM command not allowed" in text:
                    raise ResourceExhausted(
                        "Redis is out of memory (maxmemory reached); the learner must sample and ack groups first"
                    ) from e
                raise
            except (redis.ConnectionError, redis.TimeoutError) as e:
                raise Unavailable(f"Redis is unreachable ({type(e).__name__}); retry shortly") from e
        raise AssertionError("unreachable")

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def make_client(cfg: BufferConfig) -> redis.Redis:
    """A pooled client; the socket timeout covers the longest blocking read a call may ask for."""
    password = cfg.redis.password.get_secret_value() if cfg.redis.password else None
    return redis.Redis.from_url(
        cfg.redis.url,
        password=password,
        socket_timeout=cfg.redis.socket_timeout_s + cfg.max_wait_ms / 1000,
        socket_connect_timeout=cfg.redis.socket_timeout_s,
        health_check_interval=30,
    )


def pipelined(r: redis.Redis, script: Script, num_keys: int, calls: list[list[Any]]) -> list[Any]:
    """Runs `script` once per call in one round trip (EVALSHA; redis-py's pipelined scripts would first ask
    SCRIPT EXISTS, a second round trip). A Redis restarted with an empty script cache answers NOSCRIPT to
    every call alike, so loading the script and running the pipeline again is safe."""

    def run() -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(script.sha, num_keys, *call)
        return pipe.execute()

    try:
        return run()
    except redis.exceptions.NoScriptError:
        r.script_load(script.script)
        return run()
