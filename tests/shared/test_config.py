"""Configuration precedence: CLI flags > env EUREKA_* > YAML > defaults, and strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import RecipeConfig, ServiceSettings, load_settings, nest_overrides


class _Svc(ServiceSettings):
    recipe: RecipeConfig = RecipeConfig()
    port: int = 1000


def test_defaults_come_from_the_design(clean_env: None) -> None:
    s = load_settings(_Svc)
    assert (s.recipe.n_samples, s.recipe.clip_eps, s.recipe.ratio_cap, s.recipe.kl_coef) == (8, 0.2, 3.0, 0.0)
    assert (s.recipe.filter_low, s.recipe.filter_high, s.recipe.max_staleness) == (0.1, 0.9, 4)
    assert s.recipe.adam_betas == (0.9, 0.95) and s.recipe.lr == 1e-6 and s.recipe.warmup_ratio == 0.03
    assert s.recipe.max_prompt_tokens == 3000 and s.recipe.max_response_tokens == 4096
    assert s.security.service_token is None


def test_precedence_cli_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("svc:\n  port: 2000\n  recipe:\n    n_samples: 4\n    lr: 0.001\n")
    s = load_settings(_Svc, cfg, "svc")
    assert (s.port, s.recipe.n_samples, s.recipe.lr) == (2000, 4, 0.001)
    monkeypatch.setenv("EUREKA_PORT", "3000")
    monkeypatch.setenv("EUREKA_RECIPE__N_SAMPLES", "6")
    s = load_settings(_Svc, cfg, "svc")
    assert (s.port, s.recipe.n_samples, s.recipe.lr) == (3000, 6, 0.001)
    s = load_settings(_Svc, cfg, "svc", **nest_overrides({"port": 4000, "recipe.n_samples": 2}))
    assert (s.port, s.recipe.n_samples, s.recipe.lr) == (4000, 2, 0.001)


def test_unknown_keys_are_refused(tmp_path: Path, clean_env: None) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prot: 5\n")
    with pytest.raises(ValidationError, match="prot"):
        load_settings(_Svc, cfg)


def test_inconsistent_values_are_refused_with_a_sentence(clean_env: None) -> None:
    with pytest.raises(ValidationError, match="filter_low"):
        load_settings(_Svc, **nest_overrides({"recipe.filter_low": 0.9, "recipe.filter_high": 0.1}))


def test_missing_config_file_is_a_clear_error(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(_Svc, tmp_path / "nope.yaml")


class _Renamed(ServiceSettings):
    renamed = {"peer_addr": "peer_address"}
    peer_address: str = "default:1"


def test_a_renamed_setting_is_still_read_under_its_old_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("peer_addr: yaml:1\n")
    with pytest.warns(FutureWarning, match="'peer_addr' is deprecated.*use 'peer_address'"):
        assert load_settings(_Renamed, cfg).peer_address == "yaml:1"
    monkeypatch.setenv("EUREKA_PEER_ADDR", "env:1")
    with pytest.warns(FutureWarning) as warned:
        assert load_settings(_Renamed, cfg).peer_address == "env:1"  # env over YAML, as for every setting
    assert any("'EUREKA_PEER_ADDR' is deprecated" in str(w.message) for w in warned)
    monkeypatch.setenv("EUREKA_PEER_ADDRESS", "env:2")
    with pytest.warns(FutureWarning):
        assert load_settings(_Renamed, cfg).peer_address == "env:2"  # the new name wins
    with pytest.warns(FutureWarning):
        assert load_settings(_Renamed, peer_addr="init:1").peer_address == "init:1"


def test_the_old_rollout_flags_still_work(clean_env: None) -> None:
    from eureka_cli.main import build_parser

    args = build_parser(only=("rollout", "serve")).parse_args(
        ["rollout", "serve", "--buffer-addr", "b:1", "--reward-address", "r:1"])
    assert (vars(args)["buffer_address"], vars(args)["reward_address"]) == ("b:1", "r:1")
