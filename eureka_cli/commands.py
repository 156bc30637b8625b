"""The table of subcommands: words -> (settings model, entry point, help). Imports stay lazy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    help: str
    settings: str | None  # "module:Class" of the pydantic settings, or None when not built yet
    entry: str | None  # "module:function(settings) -> int", or None when not built yet
    section: str = ""  # YAML section read from --config


COMMANDS: list[Command] = [
    Command(("reward", "serve"), "run the reward service (gRPC Verify + HTTP /get_reward)",
            "services.reward.config:RewardConfig", "services.reward.server:main", "reward"),
    Command(("buffer", "serve"), "run the buffer service (prompts and trajectories in Redis Streams)",
            "services.buffer.config:BufferConfig", "services.buffer.server:main", "buffer"),
    Command(("rollout", "serve"), "run a rollout worker (generate, score, put groups)",
            "services.rollout.config:RolloutConfig", "services.rollout.server:main", "rollout"),
    Command(("learner", "run"), "run the learner (DeepSpeed GRPO/RLOO, weight publishing)",
            "services.learner.config:LearnerConfig", "services.learner.main:main", "learner"),
    Command(("autoscaler", "run"), "run the built-in rollout autoscaler (scales the rollout Deployment on the backlog)",
            "services.autoscaler.config:AutoscalerConfig", "services.autoscaler.server:main", "autoscaler"),
    Command(("data", "make-synthetic"), "write the small world's synthetic visual math (train + held-out JSONL, images)",
            "shared.model.cli:SyntheticSettings", "shared.model.cli:make_synthetic", "data"),
    Command(("make-base",), "pretrain the tiny Qwen2.5-VL base on the small world (cached by recipe)",
            "shared.model.cli:MakeBaseSettings", "shared.model.cli:make_base", "make_base"),
    Command(("eval",), "accuracy, format rate and length per task family of a model on a JSONL set",
            "shared.model.evaluate:EvalSettings", "shared.model.evaluate:main", "eval"),
    Command(("up",), "start redis and every service locally and train on the small world",
            "eureka_cli.local.config:UpConfig", "eureka_cli.local.run:main", "up"),
    Command(("chaos",), "eureka up under seeded kill -9 / pause / slow faults, then audit lost and duplicated work",
            "eureka_cli.local.chaos:ChaosConfig", "eureka_cli.local.chaos:main", "chaos"),
]
