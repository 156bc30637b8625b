"""Settings of the built-in rollout autoscaler (`eureka autoscaler run`); env `EUREKA_*` as for every service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from shared.config import ServiceSettings


class AutoscalerConfig(ServiceSettings):
    """Where to read the backlog, which Deployment to scale, and the scaling policy."""

    renamed: ClassVar[dict[str, str]] = {"buffer_addr": "buffer_address"}
    buffer_address: str = Field("127.0.0.1:50052", description="buffer gRPC address (GetStats)")
    namespace: str = Field("default", description="namespace of the rollout Deployment")
    deployment: str = Field("eureka-rollout", description="name of the rollout Deployment to scale")
    kube_api_url: str | None = Field(
        None,
        description="Kubernetes API base URL without auth (kubectl proxy, tests); unset = in-cluster service account",
    )
    min_replicas: int = Field(1, ge=0, description="never fewer rollout replicas")
    max_replicas: int = Field(8, ge=1, description="never more rollout replicas")
    target_backlog_per_replica: int = Field(64, ge=1, description="desired = ceil(prompt backlog / this)")
    max_step_up: int = Field(2, ge=1, description="largest increase in one decision")
    max_step_down: int = Field(1, ge=1, description="largest decrease in one decision")
    cooldown_s: float = Field(60.0, ge=0, description="seconds after a change before the next one")
    interval_s: float = Field(15.0, gt=0, description="seconds between decisions")
    max_stale_fraction: float = Field(
        0.2, ge=0, le=1, description="share of new groups dropped as stale above which rollout steps down"
    )

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalerConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}); set min <= max"
            )
        return self
