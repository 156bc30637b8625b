"""Writes charts/values.schema.json: `python deploy/values_schema.py` (tests/deploy checks the file is current).

Strict at every level (unknown keys are refused); the recipe section comes from `RecipeConfig` itself, so
the chart accepts exactly the recipe the services accept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "charts" / "values.schema.json"

J = dict[str, Any]


def obj(props: J, required: list[str] | None = None, desc: str | None = None) -> J:
    o: J = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        o["required"] = required
    if desc:
        o["description"] = desc
    return o


def string(desc: str | None = None, **kw: Any) -> J:
    return {"type": "string", **kw, **({"description": desc} if desc else {})}


def integer(lo: int | None = None, hi: int | None = None, desc: str | None = None) -> J:
    o: J = {"type": "integer"}
    if lo is not None:
        o["minimum"] = lo
    if hi is not None:
        o["maximum"] = hi
    return {**o, **({"description": desc} if desc else {})}


def boolean(desc: str | None = None) -> J:
    return {"type": "boolean", **({"description": desc} if desc else {})}


PORT = integer(1, 65535)
ANY_OBJECT: J = {"type": "object"}
OBJECTS: J = {"type": "array", "items": ANY_OBJECT}
QUANTITY: J = {"anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"},
                         {"type": "number", "minimum": 0}],
               "description": "a Kubernetes quantity, e.g. 500m, 2, 4Gi"}
RESOURCES = obj({"requests": {"type": "object", "additionalProperties": QUANTITY},
                 "limits": {"type": "object", "additionalProperties": QUANTITY}},
                desc="container resource requests and limits")
SCHEDULING: J = {"nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                 "tolerations": OBJECTS, "affinity": ANY_OBJECT}
ENV: J = {"type": "object", "description": "extra environment variables, EUREKA_* names (see `eureka ... --help`)",
          "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$"},
          "additionalProperties": {"type": ["string", "number", "boolean"]}}
GPU = obj({"enabled": boolean("request GPUs and use gpuImage"), "count": integer(1, 16),
           "resourceName": string(minLength=1)}, ["enabled"])
IMAGE = obj({"repository": string(minLength=1), "tag": string(),
             "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"])}, ["repository"])
PVC = obj({"size": string(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$"), "storageClassName": string(),
           "accessModes": {"type": "array", "minItems": 1, "items": string(
               enum=["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"])}}, ["size"])


def pdb(key: str) -> J:
    return obj({"enabled": boolean(), key: {"type": ["integer", "string"]}}, ["enabled"])


def recipe_schema() -> J:
    """The recipe section from the pydantic model itself, without pydantic's titles and defaults."""
    from shared.config import RecipeConfig

    props = {name: {k: v for k, v in prop.items() if k not in ("title", "default")}
             for name, prop in RecipeConfig.model_json_schema()["properties"].items()}
    return obj(props,
               desc="recipe overrides (RecipeConfig in shared/config.py), given to learner and rollout as EUREKA_RECIPE__<KEY>")


def build_schema() -> J:
    autoscaling = obj({
        "enabled": boolean(), "mode": string("auto | keda | hpa | builtin", enum=["auto", "keda", "hpa", "builtin"]),
        "minReplicas": integer(0), "maxReplicas": integer(1), "targetBacklogPerReplica": integer(1),
        "keda": obj({"trigger": string(enum=["prometheus", "redis-streams"]),
                     "prometheusServerAddress": string(pattern="^https?://"),
                     "query": string("PromQL of the backlog (empty = the default query)"),
                     "stream": string(minLength=1), "consumerGroup": string(minLength=1),
                     "pollingInterval": integer(1), "cooldownPeriod": integer(0)}),
        "hpa": obj({"metricName": string(minLength=1)}),
        "builtin": obj({"intervalSeconds": integer(1), "cooldownSeconds": integer(0), "maxStepUp": integer(1),
                        "maxStepDown": integer(1), "maxStaleFraction": {"type": "number", "minimum": 0, "maximum": 1},
                        "resources": RESOURCES}),
    })
    root = obj({
        "nameOverride": string(), "fullnameOverride": string(),
        "image": IMAGE, "gpuImage": IMAGE,
        "imagePullSecrets": {"type": "array", "items": obj({"name": string(minLength=1)}, ["name"])},
        "serviceAccount": obj({"create": boolean(), "name": string()}),
        "security": obj({
            "serviceToken": obj({"enabled": boolean("require the service token on every call"),
                                 "existingSecret": string("Secret with key `token`")}),
            "tls": obj({"enabled": boolean(), "secretName": string("Secret with tls.crt, tls.key and ca.crt")}),
        }),
        "podSecurityContext": ANY_OBJECT, "containerSecurityContext": ANY_OBJECT,
        "recipe": recipe_schema(),
        "grpc": obj({"deadlineSeconds": {"type": "number", "exclusiveMinimum": 0}, "maxMessageBytes": integer(1024)}),
        "model": obj({"path": string()}),
        "reward": obj({"replicas": integer(0), "grpcPort": PORT, "httpPort": PORT, "metricsPort": PORT, "env": ENV,
                       "resources": RESOURCES, **SCHEDULING, "podDisruptionBudget": pdb("minAvailable")}, ["replicas"]),
        "buffer": obj({"replicas": integer(0, 1, "the buffer is one process (Redis holds the state); 0 or 1"),
                       "grpcPort": PORT, "metricsPort": PORT, "env": ENV, "resources": RESOURCES, **SCHEDULING,
                       "podDisruptionBudget": pdb("minAvailable")}, ["replicas"]),
        "rollout": obj({
            "replicas": integer(0, desc="rollout workers when autoscaling is off"), "statusPort": PORT,
            "metricsPort": PORT, "backend": string(enum=["hf", "vllm"]), "env": ENV, "gpu": GPU,
            "resources": RESOURCES, **SCHEDULING, "podDisruptionBudget": pdb("maxUnavailable"),
            "extraVolumes": OBJECTS, "extraVolumeMounts": OBJECTS, "autoscaling": autoscaling,
        }, ["replicas"]),
        "learner": obj({"weightsPort": PORT, "metricsPort": PORT, "env": ENV, "nprocPerNode": integer(1, 16),
                        "gpu": GPU, "resources": RESOURCES, **SCHEDULING, "checkpoints": PVC,
                        "data": obj({"path": string("training JSONL inside the pod", minLength=1)}, ["path"]),
                        "extraVolumes": OBJECTS, "extraVolumeMounts": OBJECTS}),
        "redis": obj({"image": IMAGE, "port": PORT, "appendfsync": string(enum=["always", "everysec", "no"]),
                      "auth": obj({"existingSecret": string("Secret with key `password`")}), "persistence": PVC,
                      "resources": RESOURCES, **SCHEDULING}),
        "networkPolicy": obj({"enabled": boolean(), "rewardHttpFrom": OBJECTS, "metricsFrom": OBJECTS,
                              "redisFrom": OBJECTS}),
        "monitoring": obj({"prometheusOperator": string(enum=["auto", "enabled", "disabled"]),
                           "kind": string(enum=["PodMonitor", "ServiceMonitor"]),
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "interval": string(pattern="^[0-9]+(ms|s|m|h)$")}),
        "grafana": obj({"dashboards": obj({"enabled": boolean(), "label": string(minLength=1),
                                           "labelValue": string(), "folder": string()})}),
    })

    def when(path: list[str], const: Any, then_path: list[str], then: J) -> J:
        def nest(keys: list[str], leaf: J) -> J:
            for key in reversed(keys):
                leaf = {"properties": {key: leaf}}
            return leaf
        return {"if": nest(path, {"const": const}), "then": nest(then_path, then)}

    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Eureka Helm chart values",
        **root,
        # Cross-field rules: TLS needs its Secret; the vLLM backend needs GPUs.
        "allOf": [when(["security", "tls", "enabled"], True, ["security", "tls", "secretName"], {"minLength": 1}),
                  when(["rollout", "backend"], "vllm", ["rollout", "gpu", "enabled"], {"const": True})],
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
