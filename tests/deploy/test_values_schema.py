"""values.schema.json: every default and CI value set passes; wrong values fail `helm template` with the field named."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import CHART, CI_VALUES, run_helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize("path", [CHART / "values.yaml", *CI_VALUES], ids=lambda p: p.name)
def test_values_files_match_the_schema(path) -> None:  # noqa: ANN001
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load(path.read_text()) or {}
    jsonschema.validate(_merge(values, override), SCHEMA)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_schema_is_strict_at_the_root_and_in_every_section() -> None:
    assert SCHEMA["additionalProperties"] is False

    def walk(node: dict, where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{where}.{key}")

    walk(SCHEMA, "values")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["rollout.replcas=3"], "Additional property replcas is not allowed"),
        (["typo=1"], "Additional property typo is not allowed"),
        (["rollout.replicas=-1"], "rollout.replicas: Must be greater than or equal to 0"),
        (["rollout.replicas=two"], "rollout.replicas: Invalid type. Expected: integer, given: string"),
        (["rollout.backend=tgi"], "rollout.backend: rollout.backend must be one of the following"),
        (["rollout.autoscaling.mode=magic"], "rollout.autoscaling.mode: rollout.autoscaling.mode must be one of"),
        (["reward.grpcPort=70000"], "reward.grpcPort: Must be less than or equal to 65535"),
        (["redis.appendfsync=sometimes"], "redis.appendfsync: redis.appendfsync must be one of"),
        (["security.tls.enabled=true"], "security.tls.secretName: String length must be greater than or equal to 1"),
        (["rollout.backend=vllm"], "rollout.gpu.enabled"),
        (["learner.checkpoints.size=lots"], "learner.checkpoints.size: Does not match pattern"),
        (["reward.resources.limits.memory=plenty"], "reward.resources.limits.memory"),
        (["reward.env.lower_case=1"], "reward.env"),
        (["recipe.n_sampels=4"], "recipe: Additional property n_sampels is not allowed"),
        (["recipe.advantage=ppo"], "recipe.advantage: recipe.advantage must be one of the following"),
    ],
)
def test_bad_values_fail_with_the_field_named(sets: list[str], message: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    out = run_helm("template", "eureka", str(CHART), *args)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


def test_min_above_max_replicas_fails_with_a_sentence() -> None:
    out = run_helm("template", "eureka", str(CHART), "--set", "rollout.autoscaling.enabled=true",
                   "--set", "rollout.autoscaling.minReplicas=9")
    assert out.returncode != 0
    assert "rollout.autoscaling.minReplicas (9) is above maxReplicas (8); set minReplicas <= maxReplicas" in out.stderr


def test_schema_file_is_what_the_generator_writes() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_schema", CHART.parent / "deploy" / "values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (CHART / "values.schema.json").read_text() == module.render(), "run `python deploy/values_schema.py`"
