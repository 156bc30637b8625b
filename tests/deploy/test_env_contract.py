"""The EUREKA_* variables that the chart and docker-compose set are real settings of each service.

Each variable must name a field of the entry point's pydantic settings (from the CLI table), and the whole
environment must load through `load_settings` exactly as the container would (secrets replaced by dummies).
"""

from __future__ import annotations

import importlib

import pytest
import yaml

from eureka_cli.commands import COMMANDS
from shared.config import load_settings
from tests.deploy.helpers import CHART, REPO, env_of, find, pod_spec, rendered

WORDS = {"reward": ("reward", "serve"), "buffer": ("buffer", "serve"), "rollout": ("rollout", "serve"),
         "learner": ("learner", "run"), "autoscaler": ("autoscaler", "run")}


def settings_class(component: str) -> type:
    (cmd,) = [c for c in COMMANDS if c.words == WORDS[component]]
    if cmd.settings is None:
        pytest.skip(f"`eureka {' '.join(cmd.words)}` has no settings in the CLI table yet")
    module, _, name = cmd.settings.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        pytest.skip(f"{cmd.settings} is not importable yet ({e})")


def check(component: str, env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> object:
    cls = settings_class(component)
    for key, value in env.items():
        if not key.startswith("EUREKA_"):
            continue
        path = key.removeprefix("EUREKA_").lower().split("__")
        fields = cls.model_fields
        assert path[0] in fields, f"{component}: {key} is not a setting of {cls.__name__}"
        if len(path) > 1:
            sub = fields[path[0]].annotation
            assert path[1] in sub.model_fields, f"{component}: {key} is not a setting of {cls.__name__}.{path[0]}"
        monkeypatch.setenv(key, value if isinstance(value, str) else "dummy-from-a-secret-or-field")
    return load_settings(cls)


def chart_envs(*args: str) -> dict[str, dict[str, object]]:
    out = {}
    for doc in find(rendered(*args), "Deployment") + find(rendered(*args), "StatefulSet"):
        component = doc["metadata"]["name"].removeprefix("eureka-")
        if component in WORDS:
            out[component] = env_of(pod_spec(doc)["containers"][0])
    return out


SCENARIOS = {"default": (), "gpu": ("-f", str(CHART / "ci/gpu-values.yaml")),
             "token-tls": ("-f", str(CHART / "ci/token-tls-values.yaml")),
             "broadcast": ("-f", str(CHART / "ci/broadcast-values.yaml")),
             "builtin": ("-f", str(CHART / "ci/builtin-autoscaler-values.yaml"), "--set", "recipe.n_samples=4")}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("component", WORDS)
def test_chart_env_loads_into_the_service_settings(scenario: str, component: str, clean_env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    envs = chart_envs(*SCENARIOS[scenario])
    if component not in envs:
        assert component == "autoscaler" and scenario != "builtin"
        return
    settings = check(component, envs[component], monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.security.service_token is not None


@pytest.mark.parametrize("component", ["reward", "buffer", "rollout", "learner"])
def test_compose_env_loads_into_the_service_settings(component: str, clean_env: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["services"][component]["environment"]
    settings = check(component, env, monkeypatch)
    assert settings.metrics_port == {"reward": 9101, "buffer": 9102, "rollout": 9103, "learner": 9104}[component]


@pytest.mark.parametrize("component", ["learner", "rollout"])
def test_recipe_values_load_as_the_recipe(component: str, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = chart_envs("--set", "recipe.n_samples=4", "--set", "recipe.advantage=rloo",
                      "--set", "recipe.adam_betas={0.9,0.99}", "--set", "recipe.freeze_vision=false")
    recipe = check(component, envs[component], monkeypatch).recipe
    got = (recipe.n_samples, recipe.advantage, recipe.adam_betas, recipe.freeze_vision)
    assert got == (4, "rloo", (0.9, 0.99), False)


def test_the_charts_recipe_schema_is_the_recipe_model() -> None:
    import json

    from shared.config import RecipeConfig

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["recipe"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(RecipeConfig.model_fields)
