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
SIZE = string(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
NAME = string(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", maxLength=253)
SCHEDULING: J = {"nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                 "tolerations": OBJECTS, "affinity": ANY_OBJECT,
                 "topologySpreadConstraints": {"type": "array", "items": {
                     "type": "object", "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"]}},
                 "priorityClassName": NAME, "runtimeClassName": NAME}
ENV: J = {"type": "object", "description": "extra environment variables: NAME: value or NAME: {valueFrom: ...}",
          "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$"},
          "additionalProperties": {"anyOf": [
              {"type": ["string", "number", "boolean"]},
              {"type": "object", "additionalProperties": False, "required": ["valueFrom"],
               "properties": {"valueFrom": {"type": "object", "minProperties": 1, "maxProperties": 1}}}]}}
ENV_FROM: J = {"type": "array", "items": {"type": "object", "minProperties": 1}}
COMPONENT: J = {"env": ENV, "envFrom": ENV_FROM, "shmSize": SIZE, **SCHEDULING}
IMAGE = obj({"repository": string(minLength=1), "tag": string(),
             "digest": string("sha256:<64 hex> (pull by digest)", pattern="^(sha256:[a-f0-9]{64})?$"),
             "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"])}, ["repository"])
PVC_PROPS: J = {"size": SIZE, "storageClassName": string(),
                "accessModes": {"type": "array", "minItems": 1, "items": string(
                    enum=["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"])}}
PVC = obj(PVC_PROPS, ["size"])


def gpu() -> J:
    return obj({"enabled": boolean("request GPUs and use gpuImage"), "count": integer(1, 16),
                "resourceName": string(minLength=1), "resources": RESOURCES}, ["enabled"])


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
        "behavior": obj({"scaleDownStabilizationSeconds": integer(0, 3600), "scaleDownPods": integer(1),
                         "scaleUpPods": integer(1), "periodSeconds": integer(1, 1800)}),
        "hpa": obj({"metricName": string(minLength=1)}),
        "builtin": obj({"intervalSeconds": integer(1), "cooldownSeconds": integer(0), "maxStepUp": integer(1),
                        "maxStepDown": integer(1), "maxStaleFraction": {"type": "number", "minimum": 0, "maximum": 1},
                        "resources": RESOURCES}),
    })
    root = obj({
        "nameOverride": string(), "fullnameOverride": string(), "clusterDomain": string(minLength=1),
        "podAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
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
        "model": obj({
            "path": string("checkpoint folder inside the pods (empty = the tiny base in the image)",
                           pattern="^(/.*)?$"),
            "existingClaim": NAME, "subPath": string(),
            "download": obj({"enabled": boolean(),
                             "source": string("hf://<org>/<name> or s3://<bucket>/<prefix>",
                                              pattern="^((hf|s3)://.+)?$"),
                             "revision": string(minLength=1), "secretName": NAME, "tokenKey": string(minLength=1),
                             "s3EndpointUrl": string(pattern="^(https?://.+)?$"),
                             "s3Image": IMAGE, "sizeLimit": SIZE, "resources": RESOURCES}),
        }),
        "reward": obj({"replicas": integer(0), "grpcPort": PORT, "httpPort": PORT, "metricsPort": PORT,
                       "resources": RESOURCES, **COMPONENT, "podDisruptionBudget": pdb("maxUnavailable")},
                      ["replicas"]),
        "buffer": obj({"replicas": integer(0, 1, "the buffer is one process (Redis holds the state); 0 or 1"),
                       "grpcPort": PORT, "metricsPort": PORT, "maxBacklog": integer(1), "resources": RESOURCES,
                       **COMPONENT, "podDisruptionBudget": pdb("maxUnavailable")}, ["replicas"]),
        "broadcast": obj({"enabled": boolean("weights to the rollout workers by broadcast beside the gRPC stream"),
                          "port": PORT, "bucketBytes": integer(1024)}),
        "rollout": obj({
            "replicas": integer(0, desc="rollout workers when autoscaling is off"), "statusPort": PORT,
            "metricsPort": PORT, "backend": string(enum=["hf", "vllm"]),
            "drainTimeoutSeconds": integer(0, 3600), "terminationGracePeriodSeconds": integer(1, 7200),
            "gpu": gpu(), "resources": RESOURCES, **COMPONENT, "podDisruptionBudget": pdb("maxUnavailable"),
            "extraVolumes": OBJECTS, "extraVolumeMounts": OBJECTS, "autoscaling": autoscaling,
        }, ["replicas"]),
        "learner": obj({"weightsPort": PORT, "metricsPort": PORT, "nprocPerNode": integer(1, 16),
                        "nodes": integer(1, 1024, "learner nodes (pods); world size = nodes x nprocPerNode"),
                        "multiNode": obj({"mode": string(enum=["auto", "leaderworkerset", "statefulset"]),
                                          "rendezvousPort": PORT}),
                        "gpu": gpu(), "resources": RESOURCES, **COMPONENT,
                        "checkpoints": obj({**PVC_PROPS, "existingClaim": NAME}, ["size"]),
                        "data": obj({"path": string("training JSONL inside the pod", minLength=1, pattern="^/"),
                                     "existingClaim": NAME, "subPath": string()}, ["path"]),
                        "extraVolumes": OBJECTS, "extraVolumeMounts": OBJECTS}),
        "redis": obj({"image": IMAGE, "port": PORT, "appendfsync": string(enum=["always", "everysec", "no"]),
                      "maxmemoryRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.95},
                      "auth": obj({"existingSecret": string("Secret with key `password`")}), "persistence": PVC,
                      "resources": RESOURCES, **SCHEDULING}),
        "networkPolicy": obj({"enabled": boolean(), "rewardHttpFrom": OBJECTS, "metricsFrom": OBJECTS,
                              "redisFrom": OBJECTS}),
        "monitoring": obj({"prometheusOperator": string(enum=["auto", "enabled", "disabled"]),
                           "kind": string(enum=["PodMonitor", "ServiceMonitor"]),
                           "release": string("the release label kube-prometheus-stack selects by"),
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "interval": string(pattern="^[0-9]+(ms|s|m|h)$"),
                           "rules": obj({"enabled": boolean(), "noNewVersionMinutes": integer(1),
                                         "idleMinutes": integer(1),
                                         "redisMemoryRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}})}),
        "grafana": obj({"dashboards": obj({"enabled": boolean(), "label": string(minLength=1),
                                           "labelValue": string(), "folder": string()})}),
        "tests": obj({"enabled": boolean("`helm test` hooks")}),
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
