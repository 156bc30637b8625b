"""Settings of `eureka up`: the run folder, process counts, and the small-world recipe it trains with."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from services.rollout.config import VllmConfig
from shared.config import EurekaSettings, RecipeConfig
from shared.model.multistep import RESPONSE_TOKENS
from shared.model.prompts import INSTRUCT_SYSTEM_PROMPT

# The small world (CPU demo, world 3): the design's recipe with sizes a 2-core machine finishes in minutes.
# lr is far above MM-Eureka's 1e-6 because the tiny base is a few million parameters trained from scratch.
SMALL_WORLD_RECIPE = RecipeConfig(
    n_samples=8,
    rollout_batch_prompts=8,
    max_prompt_tokens=1024,
    max_response_tokens=RESPONSE_TOKENS,  # the longest slip-then-fix solution fits
    lr=2e-4,
    min_lr=2e-5,
    max_staleness=4,
    system_prompt=INSTRUCT_SYSTEM_PROMPT,  # the tiny base learned the think/answer layout under this prompt
)
WORLD_2_RESPONSE_TOKENS = 64  # world 2's one-read answers


class UpConfig(EurekaSettings):
    """`eureka up`: Redis + reward + buffer + learner + rollout workers on 127.0.0.1, then the held-out eval."""

    run_dir: Path | None = Field(
        None, description="config, logs, metrics.jsonl, checkpoints, curves.png, summary.json "
        "(default: a new runs/demo-<UTC time>)")
    resume: bool = Field(False, description="continue the run in run_dir from its last checkpoint")
    mode: Literal["async", "sync"] = Field("async", description="async (max_staleness) or sync (OpenRLHF schedule)")
    steps: int = Field(60, ge=1, description="learner steps (= policy versions)")
    rollout_workers: int = Field(2, ge=1, le=16, description="rollout worker processes")
    rollout_backend: Literal["hf", "vllm"] = Field("hf", description="generation engine of the rollout workers")
    rollout_vllm: VllmConfig = Field(VllmConfig(), description="engine options of vllm rollout workers")
    learner_procs: int = Field(2, ge=1, le=8, description="learner processes (torchrun, gloo on CPU)")
    broadcast: bool = Field(False, description="weights to the rollout workers by broadcast (gloo) beside the gRPC pull")
    zero_stage: int = Field(2, ge=0, le=3)
    checkpoint_every: int = Field(5, ge=1)
    train_data: Path | None = Field(None, description="MM-Eureka JSONL (default: the synthetic train split)")
    heldout_data: Path | None = Field(None, description="MM-Eureka JSONL (default: the synthetic held-out split)")
    model_path: Path | None = Field(None, description="base checkpoint (default: the cached tiny base, built if missing)")
    eval_limit: int = Field(200, ge=1, description="held-out problems evaluated before and after")
    redis_fsync: Literal["everysec", "always"] = "everysec"
    buffer_lease_s: float | None = Field(None, gt=0, description="buffer lease of a claimed prompt (default: the buffer's)")
    service_token: SecretStr | None = Field(None, description="token for every service (default: a random one per run)")
    start_timeout_s: float = Field(180.0, gt=0, description="how long every service gets to answer its health check")
    seed: int = 0
    world: Literal[2, 3] = Field(
        3, description="small-world generator: 3 (multi-step, the default) or 2 (one read; instruct mode only)"
    )
    pretrain_min_think_chars: int = Field(
        0, ge=0, description="reward's pretrained-format floor on the think section (the small world's are short)"
    )
    recipe: RecipeConfig = Field(SMALL_WORLD_RECIPE, validate_default=True)

    @field_validator("recipe", mode="before")
    @classmethod
    def _over_small_world(cls, value: Any, info: ValidationInfo) -> Any:
        """A `--recipe.X` flag (or `EUREKA_RECIPE__X`, or a YAML `recipe:` key) changes X of the small-world
        recipe of the run's world; the other fields stay the small world's, not RecipeConfig's defaults."""
        world = small_world_recipe(info.data.get("world", 3))
        if isinstance(value, dict):
            return {**world.model_dump(exclude_unset=True), **value}
        return world if value == SMALL_WORLD_RECIPE else value  # the default (pydantic hands over a copy)

    @model_validator(mode="after")
    def _pretrained_needs_world_3(self) -> UpConfig:
        if self.recipe.reward_mode == "pretrained" and self.world != 3:
            raise ValueError("pretrained mode trains the world-3 base pretrained without chat data; drop --world 2")
        return self


def small_world_recipe(world: int) -> RecipeConfig:
    """The small-world recipe of a world: world 2's answers are short."""
    if world == 2:
        return SMALL_WORLD_RECIPE.model_copy(update={"max_response_tokens": WORLD_2_RESPONSE_TOKENS})
    return SMALL_WORLD_RECIPE
