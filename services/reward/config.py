"""Settings of `eureka reward serve`: ports, the worker pool, per-item timeout, input caps, back-pressure."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.config import ServiceSettings


class RewardConfig(ServiceSettings):
    """One process, two front doors (gRPC `Verify`, HTTP FastAPI) over one pool of scoring worker processes."""

    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC RewardService port (0 = pick a free one)")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (/v1/reward, /get_reward, /healthz, /readyz, /metrics)")
    metrics_port: int = Field(9101, ge=0, le=65535, description="extra Prometheus /metrics port (0 = off; HTTP serves /metrics too)")
    workers: int = Field(2, ge=1, le=256, description="scoring worker processes")
    item_timeout_s: float = Field(5.0, gt=0, le=600, description="hard per-item limit; a stuck worker is killed and replaced")
    max_batch_items: int = Field(1024, ge=1, description="most items one request may carry")
    max_pending_items: int = Field(4096, ge=1, description="items queued or in flight before new requests are refused")
    max_response_chars: int = Field(65536, ge=1, description="a longer response is scored 0 with status INVALID")
    max_gold_chars: int = Field(1024, ge=1, description="a longer gold answer is scored 0 with status INVALID")
    max_options: int = Field(26, ge=0, le=26, description="most multiple-choice options per item")
    max_http_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="HTTP request bodies above this get 413")
    http_rate_per_s: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="HTTP requests per second per client address (0 = no limit); above it 429",
    )
    http_rate_burst: int = Field(50, ge=1, description="HTTP requests a client may send at once before the rate holds")
    instruct_format_weight: float = Field(0.5, ge=0, description="total = accuracy + weight x format (instruct mode)")
    pretrained_format_weight: float = Field(1.0, ge=0, description="total = accuracy + weight x format (pretrained mode)")
    pretrain_min_think_chars: int = Field(300, ge=0, description="pretrained format: a shorter think section scores 0")
    get_reward_mode: Literal["instruct", "pretrained"] = Field(
        "instruct", description="mode of POST /get_reward when the call has no ?mode= (OpenRLHF sends none)"
    )
    start_method: Literal["forkserver", "spawn"] = Field("forkserver", description="multiprocessing start method")

    @model_validator(mode="after")
    def _check(self) -> "RewardConfig":
        if self.max_pending_items < self.max_batch_items:
            raise ValueError(
                f"max_pending_items ({self.max_pending_items}) is below max_batch_items ({self.max_batch_items}); "
                "a full batch could never be admitted: raise max_pending_items"
            )
        return self
