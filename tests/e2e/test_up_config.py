"""`eureka up`'s recipe: a `--recipe.X` flag, variable or YAML key changes X of the small-world recipe only."""

from __future__ import annotations

from pathlib import Path

import pytest

from eureka_cli.local.config import SMALL_WORLD_RECIPE, WORLD_2_RESPONSE_TOKENS, UpConfig
from eureka_cli.main import build_parser
from shared.config import RecipeConfig, load_settings, nest_overrides, parse_flag_value
from shared.model.multistep import RESPONSE_TOKENS


def _from_flags(*argv: str) -> UpConfig:
    args = build_parser(only=("up",)).parse_args(["up", *argv])
    flat = {k: parse_flag_value(v) for k, v in vars(args).items() if "." in k}
    return load_settings(UpConfig, None, "up", **nest_overrides(flat))


def _differs_from_defaults() -> list[str]:
    """Fields where the small world departs from RecipeConfig's defaults (what a flag must not reset)."""
    defaults = RecipeConfig()
    return [k for k in SMALL_WORLD_RECIPE.model_fields_set if getattr(defaults, k) != getattr(SMALL_WORLD_RECIPE, k)]


def _assert_only(cfg: UpConfig, **changed: object) -> None:
    for name in _differs_from_defaults():
        if name not in changed:
            assert getattr(cfg.recipe, name) == getattr(SMALL_WORLD_RECIPE, name), name
    for name, value in changed.items():
        assert getattr(cfg.recipe, name) == value


def test_one_flag_overrides_only_its_field() -> None:
    assert {"rollout_batch_prompts", "max_response_tokens", "lr", "system_prompt"} <= set(_differs_from_defaults())
    _assert_only(_from_flags("--recipe.max-response-tokens", "128"), max_response_tokens=128)
    _assert_only(_from_flags("--recipe.reward-mode", "pretrained", "--recipe.lr", "1e-3"),
                 reward_mode="pretrained", lr=1e-3)


def test_world_2_answers_in_its_shorter_responses_unless_the_recipe_says_otherwise() -> None:
    assert SMALL_WORLD_RECIPE.max_response_tokens == RESPONSE_TOKENS and UpConfig().world == 3
    _assert_only(load_settings(UpConfig, None, "up", world=2), max_response_tokens=WORLD_2_RESPONSE_TOKENS)
    _assert_only(load_settings(UpConfig, None, "up", world=2, recipe={"lr": 1e-3}),
                 max_response_tokens=WORLD_2_RESPONSE_TOKENS, lr=1e-3)
    _assert_only(load_settings(UpConfig, None, "up", world=2, recipe={"max_response_tokens": 100}),
                 max_response_tokens=100)
    _assert_only(load_settings(UpConfig, None, "up", world=3, recipe={"max_response_tokens": 64}),
                 max_response_tokens=64)  # a length the user sets is kept, whatever the world


def test_pretrained_mode_on_world_2_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="drop --world 2"):
        load_settings(UpConfig, None, "up", world=2, recipe={"reward_mode": "pretrained"})


def test_no_flag_keeps_the_small_world_recipe() -> None:
    assert _from_flags().recipe == SMALL_WORLD_RECIPE


def test_variable_and_yaml_override_only_their_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EUREKA_RECIPE__N_SAMPLES", "4")
    _assert_only(load_settings(UpConfig), n_samples=4)
    monkeypatch.delenv("EUREKA_RECIPE__N_SAMPLES")
    (tmp_path / "c.yaml").write_text("up:\n  recipe:\n    temperature: 0.7\n")
    _assert_only(load_settings(UpConfig, tmp_path / "c.yaml", "up"), temperature=0.7)


def test_a_wrong_recipe_key_is_still_refused() -> None:
    with pytest.raises(ValueError, match="n_sampels"):
        load_settings(UpConfig, None, "up", recipe={"n_sampels": 4})
