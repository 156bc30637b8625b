"""Settings of `eureka buffer serve` (section `buffer` of the YAML config)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from shared.config import ServiceSettings, StrictModel


class RedisConfig(StrictModel):
    """Where Redis is, and (optionally) an embedded redis-server the buffer starts itself."""

    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (put the password in redis.password)")
    password: SecretStr | None = Field(None, description="Redis password (AUTH)")
    key_prefix: str = Field("eureka:", min_length=1, max_length=64, description="prefix of every key the buffer owns")
    embedded_dir: Path | None = Field(None, description="start redis-server with AOF in this dir on the URL's port")
    appendfsync: Literal["everysec", "always"] = Field("everysec", description="AOF fsync policy of embedded Redis")
    maxmemory_bytes: int = Field(0, ge=0, description="maxmemory of embedded Redis (0 = no limit)")
    socket_timeout_s: float = Field(10.0, gt=0, description="Redis socket timeout on top of a call's own wait")


class BufferConfig(ServiceSettings):
    """The buffer service: prompt queue and trajectory groups in Redis Streams."""

    port: int = Field(50052, ge=0, le=65535, description="gRPC port (0 = any free port)")
    metrics_port: int = Field(9102, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    redis: RedisConfig = RedisConfig()
    lease_s: float = Field(600.0, gt=0, description="a claimed prompt is reclaimed after this long without a put")
    max_attempts: int = Field(3, ge=1, le=100, description="leases a prompt may expire before it is dead-lettered")
    max_backlog: int = Field(
        640, ge=1, description="cap on queued + claimed prompts (rollout_batch_prompts x (max_staleness + 1))"
    )
    memory_high_watermark: float = Field(
        0.9, gt=0, le=1, description="puts are refused when Redis used_memory exceeds this share of maxmemory"
    )
    max_wait_ms: int = Field(60_000, ge=0, description="largest wait_ms a claim or sample call may ask for")
    max_items_per_call: int = Field(1024, ge=1, description="cap on prompts, groups or ids in one call")
    max_samples_per_group: int = Field(256, ge=1, description="cap on samples in one group")
    max_tokens_per_sample: int = Field(65_536, ge=1, description="cap on tokens of one response or prompt")
    max_prompt_bytes: int = Field(16 * 1024 * 1024, ge=1, description="cap on one serialized prompt (images inline)")
    stats_refresh_s: float = Field(5.0, gt=0, description="how often the metrics are refreshed from Redis")
    sample_page_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="group bytes in one SampleGroups reply; a larger batch arrives in pages"
    )

    @model_validator(mode="after")
    def _page_fits(self) -> "BufferConfig":
        if self.sample_page_bytes > self.grpc.max_message_bytes // 2:
            raise ValueError(
                f"sample_page_bytes ({self.sample_page_bytes}) must be at most half of grpc.max_message_bytes "
                f"({self.grpc.max_message_bytes}), so a page and its largest group fit one reply; lower it"
            )
        return self
