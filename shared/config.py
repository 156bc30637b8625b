"""Typed configuration: one pydantic model per entry point, fed by CLI flags > env `EUREKA_*` > YAML > defaults.

Defaults are MM-Eureka's training recipe (`RecipeConfig`). Every model forbids unknown keys,
so a typo in a flag, a variable or a file is an error with a sentence, never a silently ignored value.
"""

from __future__ import annotations

import contextvars
import json
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_CONFIG_FILE: contextvars.ContextVar[tuple[Path | None, str]] = contextvars.ContextVar(
    "eureka_config_file", default=(None, "")
)


class StrictModel(BaseModel):
    """Sub-config base: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class RecipeConfig(StrictModel):
    """The MM-Eureka recipe: group size, advantage, PPO clipping, online filter, staleness, optimizer, sampling."""

    n_samples: int = Field(8, ge=1, le=256, description="samples per prompt (group size)")
    advantage: Literal["group_norm", "rloo"] = "group_norm"
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO clip epsilon")
    ratio_cap: float = Field(3.0, gt=1, description="upper cap on the PPO ratio (dual clip)")
    importance_cap: float = Field(5.0, gt=0, description="truncation of the proximal/behaviour importance weight")
    kl_coef: float = Field(0.0, ge=0, description="KL to a frozen reference (k3); 0 = off, no reference kept")
    entropy_coef: float = Field(0.0, ge=0)
    filter_low: float = Field(0.1, ge=0, le=1, description="online filter: min mean accuracy of a kept group")
    filter_high: float = Field(0.9, ge=0, le=1, description="online filter: max mean accuracy of a kept group")
    max_staleness: int = Field(4, ge=0, description="max policy versions a sample may lag the learner")
    rollout_batch_prompts: int = Field(128, ge=1, description="prompts per learner step (one policy version)")
    mini_batches: int = Field(
        8, ge=1, description="optimizer steps per rollout batch (MM-Eureka Qwen-7B: 1024 samples, 8 steps of 128)"
    )
    loss_agg: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = Field(
        "seq-mean-token-mean",
        description="seq-mean-token-mean: mean over sequences of token means (OpenRLHF, MM-Eureka); token-mean: "
        "over all tokens of a mini-batch (DAPO); seq-mean-token-sum-norm: token sums / max_response_tokens (Dr. GRPO)",
    )
    lr: float = Field(1e-6, gt=0)
    min_lr: float | None = Field(None, ge=0, description="end of the cosine decay (unset: 0.1 x lr, as MM-Eureka)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    adam_betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_prompt_tokens: int = Field(3000, ge=1)
    max_response_tokens: int = Field(4096, ge=1)
    min_pixels: int = Field(4 * 28 * 28, ge=28 * 28, description="images are resized to at least this many pixels")
    max_pixels: int = Field(640 * 28 * 28, ge=28 * 28, description="images are resized to at most this many pixels")
    freeze_vision: bool = True
    format_weight: float | None = Field(
        None, ge=0, description="total = accuracy + weight x format; unset: the reward service's weight for reward_mode"
    )
    reward_mode: Literal["instruct", "pretrained"] = "instruct"
    system_prompt: str | None = Field(
        None, description="system message of a prompt whose chat has none (None: Qwen's default in instruct "
        "mode, none in pretrained mode; \"\": none)",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> "RecipeConfig":
        if self.filter_low > self.filter_high:
            raise ValueError(
                f"filter_low ({self.filter_low}) is above filter_high ({self.filter_high}); set filter_low <= filter_high"
            )
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels}); set min_pixels <= max_pixels"
            )
        if self.min_lr is None:  # unset, not overridden: the reference's 0.1 x lr
            self.min_lr = 0.1 * self.lr
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr}); set min_lr <= lr")
        return self


class SecurityConfig(StrictModel):
    """Service token and TLS, shared by every server and client."""

    service_token: SecretStr | None = Field(None, description="required on every call when set")
    tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS on gRPC/HTTPS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_ca: Path | None = Field(None, description="CA bundle clients use to verify servers")

    @model_validator(mode="after")
    def _pair(self) -> "SecurityConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self


class GrpcConfig(StrictModel):
    """Limits applied by the gRPC server and client factories."""

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="cap on any single message")
    deadline_s: float = Field(30.0, gt=0, description="default deadline of every RPC")
    retries: int = Field(4, ge=2, le=5, description="attempts for UNAVAILABLE (gRPC retry policy, max 5)")
    workers: int = Field(16, ge=1, description="server thread pool size")
    grace_s: float = Field(10.0, ge=0, description="time in-flight calls get on SIGTERM")


class EurekaSettings(BaseSettings):
    """Base of every entry point's settings: env prefix `EUREKA_`, nested with `__`, YAML section.

    `renamed` maps a setting's old (deprecated) name to its name now: the old name is still read as a
    flag, a variable and a YAML key, with a FutureWarning; when both are given, the new one wins."""

    model_config = SettingsConfigDict(env_prefix="EUREKA_", env_nested_delimiter="__", extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    def __init__(self, **values: Any) -> None:
        super().__init__(**_read_renamed(type(self), values))  # keyword arguments (flags) above every source

    @model_validator(mode="before")
    @classmethod
    def _renamed_in_sources(cls, data: Any) -> Any:
        return _read_renamed(cls, data) if isinstance(data, dict) else data  # what is left: YAML keys

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _RenamedEnvSource(settings_cls), _YamlSectionSource(settings_cls))


def _read_renamed(cls: type[EurekaSettings], values: dict[str, Any]) -> dict[str, Any]:
    """`values` with each old name of `cls.renamed` read as its new name (the new one wins when both are set)."""
    for old, new in cls.renamed.items():
        if old in values:
            _warn_renamed(old, new)
            value = values.pop(old)
            values.setdefault(new, value)
    return values


def _warn_renamed(old: str, new: str) -> None:
    warnings.warn(f"setting {old!r} is deprecated and will be removed; use {new!r}", FutureWarning, stacklevel=2)


class _RenamedEnvSource(PydanticBaseSettingsSource):
    """`EUREKA_<OLD NAME>` of each renamed setting, read as its new name (below the new variable, above YAML)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        renamed: dict[str, str] = getattr(self.settings_cls, "renamed", {})
        out: dict[str, Any] = {}
        for old, new in renamed.items():
            value = os.environ.get(f"EUREKA_{old.upper()}")
            if value is not None:
                _warn_renamed(f"EUREKA_{old.upper()}", f"EUREKA_{new.upper()}")
                out[new] = value
        return out


class _YamlSectionSource(PydanticBaseSettingsSource):
    """Reads the section of the YAML file named for this entry point (or the whole file when absent)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path, section = _CONFIG_FILE.get()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as e:
            raise ValueError(f"config file {path} does not exist; pass an existing YAML file to --config") from e
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"config file {path} is not a readable UTF-8 YAML file ({reason}); fix it") from e
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
        if section and section in data:
            data = data[section]
        if not isinstance(data, dict):
            return {}
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise ValueError(f"config file {path} has the key {bad[0]!r}, which is not a name; keys are setting names")
        return data


S = TypeVar("S", bound=EurekaSettings)


def load_settings(cls: type[S], config_file: Path | str | None = None, section: str = "", **overrides: Any) -> S:
    """Build settings with precedence overrides (CLI) > env `EUREKA_*` > YAML `section` > defaults."""
    token = _CONFIG_FILE.set((Path(config_file) if config_file else None, section))
    try:
        return cls(**overrides)
    finally:
        _CONFIG_FILE.reset(token)


def parse_flag_value(raw: str) -> Any:
    """A CLI flag value: JSON when it parses (numbers, lists, booleans), the raw string otherwise."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def flatten_fields(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Dotted field paths of a settings model, one level into sub-models (`recipe.n_samples`)."""
    out: list[tuple[str, FieldInfo]] = []
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and not prefix:
            out.extend(flatten_fields(ann, prefix=f"{name}."))
        else:
            out.append((prefix + name, info))
    return out


def nest_overrides(flat: dict[str, Any]) -> dict[str, Any]:
    """{"recipe.n_samples": 4} -> {"recipe": {"n_samples": 4}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[head] = value
    return nested


class ServiceSettings(EurekaSettings):
    """What every server shares: bind address, gRPC limits, security, metrics port."""

    host: str = Field("127.0.0.1", description="address the servers bind")
    grpc: GrpcConfig = GrpcConfig()
    security: SecurityConfig = SecurityConfig()
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
