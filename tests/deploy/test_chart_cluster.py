"""What a real cluster needs from the chart, read off the rendered manifests of the CI scenarios: volumes where
model.path points, a multi-node learner with its rendezvous, monitors and alerts kube-prometheus-stack picks up,
scale-down timings that leave room for the release, KEDA addresses it can resolve, Redis's maxmemory, evictable
PDBs, secrets that roll the pods, digests, and the `helm test` hook."""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import CHART, CI_VALUES, env_of, find, one, pod_spec, rendered, run_helm

GPU = ("-f", str(CHART / "ci/gpu-values.yaml"))
MULTI = ("-f", str(CHART / "ci/multinode-values.yaml"))
LWS_API = ("--api-versions", "leaderworkerset.x-k8s.io/v1")
MONITORS = ("--api-versions", "monitoring.coreos.com/v1")


def container(doc: dict) -> dict:
    return pod_spec(doc)["containers"][0]


def mounts_at(spec: dict, c: dict, path: str) -> dict:
    """The volume mounted at `path` (or at a folder above it) in container `c` of pod `spec`."""
    hits = [m for m in c["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert hits, f"nothing is mounted at {path} in {c['name']}: {[m['mountPath'] for m in c['volumeMounts']]}"
    (volume,) = [v for v in spec["volumes"] if v["name"] == hits[0]["name"]]
    return {**volume, "mount": hits[0]}


def fails(*args: str) -> str:
    out = run_helm("template", "eureka", str(CHART), "--namespace", "ml", *args)
    assert out.returncode != 0, "the render should have failed"
    return out.stderr


# ---- model, data and checkpoint storage ----

def test_the_gpu_scenario_mounts_the_model_claim_where_model_path_points() -> None:
    docs = rendered(*GPU)
    for kind, name in (("StatefulSet", "eureka-learner"), ("Deployment", "eureka-rollout")):
        spec = pod_spec(one(docs, kind, name))
        c = spec["containers"][0]
        assert env_of(c)["EUREKA_MODEL_PATH"] == "/models/base"
        volume = mounts_at(spec, c, "/models/base")
        assert volume["persistentVolumeClaim"] == {"claimName": "eureka-models", "readOnly": True}
        assert volume["mount"]["readOnly"] is True and volume["mount"]["subPath"] == "qwen2.5-vl-7b-instruct"
    learner = pod_spec(one(docs, "StatefulSet", "eureka-learner"))
    data = mounts_at(learner, learner["containers"][0], env_of(learner["containers"][0])["EUREKA_DATA_PATH"])
    assert data["persistentVolumeClaim"] == {"claimName": "eureka-data", "readOnly": True}


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_every_scenario_mounts_what_model_path_names(path: Path) -> None:
    docs = rendered("-f", str(path))
    model = (yaml.safe_load(path.read_text()) or {}).get("model", {}).get("path")
    if not model:
        return
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet"), *find(docs, "LeaderWorkerSet")]:
        for spec in _pod_specs(doc):
            c = spec["containers"][0]
            if "EUREKA_MODEL_PATH" in env_of(c):
                mounts_at(spec, c, env_of(c)["EUREKA_MODEL_PATH"])


def _pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "LeaderWorkerSet":
        t = doc["spec"]["leaderWorkerTemplate"]
        return [t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]]
    return [pod_spec(doc)]


def test_a_model_path_nothing_mounts_fails_the_render_with_a_sentence() -> None:
    err = fails("--set", "model.path=/models/base")
    assert "model.path is /models/base but nothing is mounted there in both learner and rollout" in err
    # Mounted through extraVolumeMounts in one of the two is not enough.
    err = fails("--set", "model.path=/models/base", "--set", "learner.extraVolumeMounts[0].name=m",
                "--set", "learner.extraVolumeMounts[0].mountPath=/models")
    assert "nothing is mounted there" in err


def test_hugging_face_download_init_container_reads_the_token_secret() -> None:
    docs = rendered(*MULTI)
    spec = pod_spec(one(docs, "Deployment", "eureka-rollout"))
    (init,) = spec["initContainers"]
    assert init["command"] == ["python", "/app/deploy/fetch_model.py"]
    assert init["args"] == ["hf://Qwen/Qwen2.5-VL-7B-Instruct", "/models/base", "--revision", "main"]
    assert env_of(init)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert {"name": "model", "mountPath": "/models/base"} in init["volumeMounts"]
    assert mounts_at(spec, spec["containers"][0], "/models/base")["emptyDir"] == {"sizeLimit": "64Gi"}
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_object_store_download_uses_the_aws_cli_with_the_credentials_secret() -> None:
    docs = rendered("-f", str(CHART / "ci/multinode-lws-values.yaml"))
    (lws,) = find(docs, "LeaderWorkerSet")
    (init,) = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["initContainers"]
    assert init["image"].startswith("amazon/aws-cli:")
    assert "aws s3 sync" in init["args"][0] and ".complete" in init["args"][0]
    env = env_of(init)
    assert env["SOURCE"] == "s3://models/qwen2.5-vl-7b-instruct/" and env["DEST"] == "/models/base"
    assert env["AWS_ENDPOINT_URL"] == "https://minio.storage.svc.cluster.local:9000"
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]


def test_fetch_model_refuses_a_bad_source_and_skips_a_finished_download(tmp_path: Path) -> None:
    script = CHART.parent / "deploy" / "fetch_model.py"
    out = subprocess.run([sys.executable, str(script), "s3://bucket/x", str(tmp_path / "m")], capture_output=True, text=True)
    assert out.returncode == 2 and "is not hf://<org>/<name>" in out.stderr
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / ".complete").write_text("org/name@main\n")
    out = subprocess.run([sys.executable, str(script), "hf://org/name", str(tmp_path / "m")], capture_output=True, text=True)
    assert out.returncode == 0 and "already downloaded" in out.stdout


def test_volumes_ownership_shm_and_scheduling_are_values() -> None:
    docs = rendered(*GPU)
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet")]:
        if doc["metadata"]["name"] != "eureka-redis":
            assert pod_spec(doc)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    learner = pod_spec(one(docs, "StatefulSet", "eureka-learner"))
    rollout = pod_spec(one(docs, "Deployment", "eureka-rollout"))
    shm = {v["name"]: v for v in learner["volumes"]}["dshm"]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert learner["runtimeClassName"] == "nvidia" and learner["priorityClassName"] == "eureka-learner"
    (spread,) = rollout["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "eureka",
                                                       "app.kubernetes.io/instance": "eureka",
                                                       "app.kubernetes.io/component": "rollout"}}


def test_gpu_pods_get_the_gpu_resources_and_a_checkpoint_volume_for_a_7b() -> None:
    docs = rendered(*GPU)
    learner = one(docs, "StatefulSet", "eureka-learner")
    limits = container(learner)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2 and limits["memory"] == "256Gi"
    assert learner["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "500Gi"
    # CPU defaults stay small: the GPU sizes apply only with gpu.enabled.
    assert container(one(rendered(), "StatefulSet", "eureka-learner"))["resources"]["limits"]["memory"] == "16Gi"


def test_env_takes_values_from_secrets_and_env_from() -> None:
    learner = container(one(rendered(*MULTI), "StatefulSet", "eureka-learner"))
    assert env_of(learner)["WANDB_API_KEY"] == {"secretKeyRef": {"name": "wandb", "key": "api-key"}}
    assert learner["envFrom"] == [{"secretRef": {"name": "learner-extra-env"}}]


# ---- the multi-node learner ----

@pytest.mark.parametrize("api", [(), LWS_API], ids=["statefulset", "leaderworkerset"])
def test_the_multi_node_scenario_renders_the_learner_group_with_its_rendezvous_environment(api) -> None:  # noqa: ANN001
    docs = rendered(*MULTI, *api)
    if api:
        (group,) = find(docs, "LeaderWorkerSet")
        assert not find(docs, "StatefulSet", "eureka-learner")
        t = group["spec"]["leaderWorkerTemplate"]
        assert t["size"] == 2 and t["restartPolicy"] == "RecreateGroupOnPodRestart"
        leader, worker = t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]
        # LeaderWorkerSet gives LWS_LEADER_ADDRESS and LWS_WORKER_INDEX; the launcher maps them (CONTRACTS.md 1).
        assert "MASTER_ADDR" not in env_of(leader["containers"][0]) and "NODE_RANK" not in env_of(leader["containers"][0])
        assert "readinessProbe" in leader["containers"][0] and "readinessProbe" not in worker["containers"][0]
        assert "metrics" not in {p["name"] for p in worker["containers"][0]["ports"]}
        specs = [leader, worker]
        leader_selector = {"leaderworkerset.sigs.k8s.io/worker-index": "0"}
    else:
        sts = one(docs, "StatefulSet", "eureka-learner")
        assert sts["spec"]["replicas"] == 2 and sts["spec"]["podManagementPolicy"] == "Parallel"
        assert sts["spec"]["serviceName"] == "eureka-learner-nodes" and "volumeClaimTemplates" not in sts["spec"]
        env = env_of(container(sts))
        assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
        assert env["MASTER_ADDR"] == "eureka-learner-0.eureka-learner-nodes.ml.svc.cluster.local"
        nodes = one(docs, "Service", "eureka-learner-nodes")
        assert nodes["spec"]["clusterIP"] == "None" and nodes["spec"]["publishNotReadyAddresses"] is True
        assert nodes["spec"]["ports"][0]["port"] == 29500
        probe = container(sts)["readinessProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"] and 'test "$NODE_RANK" != 0 ||' in probe[2]
        specs = [pod_spec(sts)]
        leader_selector = {"statefulset.kubernetes.io/pod-name": "eureka-learner-0"}
    for spec in specs:
        c = spec["containers"][0]
        assert c["command"] == ["python", "-m", "services.learner.launch"] and "args" not in c
        env = env_of(c)
        assert (env["NNODES"], env["NPROC_PER_NODE"], env["MASTER_PORT"], env["EUREKA_WORLD_SIZE"]) == ("2", "8", "29500", "16")
        claim = mounts_at(spec, c, "/checkpoints")["persistentVolumeClaim"]
        assert claim == {"claimName": "eureka-learner-checkpoints"}
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
    pvc = one(docs, "PersistentVolumeClaim", "eureka-learner-checkpoints")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"] == "1Ti"
    # Rollout reaches the weights of global rank 0 only.
    svc = one(docs, "Service", "eureka-learner")
    assert leader_selector.items() <= svc["spec"]["selector"].items()
    # The nodes reach each other on every port (rendezvous, NCCL).
    rules = one(docs, "NetworkPolicy", "eureka-learner")["spec"]["ingress"]
    assert {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "eureka", "app.kubernetes.io/instance": "eureka",
                                                      "app.kubernetes.io/component": "learner"}}}]} in rules


def test_the_multi_node_command_is_a_module_of_the_image() -> None:
    import importlib.util

    c = container(one(rendered(*MULTI), "StatefulSet", "eureka-learner"))
    module = c["command"][c["command"].index("-m") + 1]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} (the multi-node launcher, CONTRACTS item 1) is not in this tree yet")
    assert module.startswith("services.learner.")


def test_one_node_keeps_the_local_spawn() -> None:
    c = container(one(rendered(), "StatefulSet", "eureka-learner"))
    assert c["args"] == ["learner", "run"] and "command" not in c and "NNODES" not in env_of(c)


def test_several_nodes_on_a_read_write_once_claim_fail_with_a_sentence() -> None:
    err = fails("--set", "learner.nodes=2")
    assert "learner.checkpoints.accessModes must include ReadWriteMany" in err


# ---- metrics that arrive ----

def test_the_pod_monitor_carries_the_default_release_label_of_kube_prometheus_stack() -> None:
    docs = rendered(*MONITORS)
    pm = one(docs, "PodMonitor", "eureka")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert relabel["release"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
    assert one(docs, "PrometheusRule", "eureka")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["monitoring"]["release"] == "kube-prometheus-stack"
    relabelled = one(rendered(*MONITORS, "--set", "monitoring.release=prom"), "PodMonitor", "eureka")
    assert relabelled["metadata"]["labels"]["release"] == "prom"


ALERTS = {"EurekaNoNewPolicyVersion", "EurekaPipelineIdle", "EurekaPromptsDeadLettered", "EurekaRewardTimeouts",
          "EurekaRedisNearMaxmemory", "EurekaTargetDown"}


def test_the_prometheus_rule_has_the_alerts_and_promtool_accepts_it(tmp_path: Path) -> None:
    rule = one(rendered(*MONITORS), "PrometheusRule", "eureka")
    (group,) = rule["spec"]["groups"]
    assert {r["alert"] for r in group["rules"]} == ALERTS
    for r in group["rules"]:
        assert 'namespace="ml", release="eureka"' in r["expr"], r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make apt` (the prometheus package ships it)")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in out.stdout, out.stdout + out.stderr


def test_every_metric_the_alerts_name_is_defined_by_a_service() -> None:
    import re

    from tests.deploy.test_dashboards import defined_metrics

    rule = one(rendered(*MONITORS), "PrometheusRule", "eureka")
    used = {m for r in rule["spec"]["groups"][0]["rules"] for m in re.findall(r"\beureka_[a-z0-9_]+\b", r["expr"])}
    assert used and not used - defined_metrics(), sorted(used - defined_metrics())


def test_no_rule_without_the_operator_and_none_when_turned_off() -> None:
    assert not find(rendered(), "PrometheusRule")
    assert not find(rendered(*MONITORS, "--set", "monitoring.rules.enabled=false"), "PrometheusRule")


# ---- scale-down without loss ----

def test_rollouts_grace_period_exceeds_its_drain_timeout_and_the_release_call() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for args in [(), *[("-f", str(p)) for p in CI_VALUES]]:
        spec = pod_spec(one(rendered(*args), "Deployment", "eureka-rollout"))
        c = spec["containers"][0]
        drain = float(env_of(c)["EUREKA_DRAIN_TIMEOUT_S"])
        assert drain == values["rollout"]["drainTimeoutSeconds"]
        assert spec["terminationGracePeriodSeconds"] > drain + values["grpc"]["deadlineSeconds"]
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["python", "-c",
                                                               "import os, signal; os.kill(1, signal.SIGTERM)"]


def test_a_grace_period_too_short_for_the_release_fails_with_a_sentence() -> None:
    err = fails("--set", "rollout.drainTimeoutSeconds=60", "--set", "rollout.terminationGracePeriodSeconds=60")
    assert "rollout.terminationGracePeriodSeconds (60) must be at least drainTimeoutSeconds + grpc.deadlineSeconds + 5 (95)" in err


# ---- autoscaling ----

def test_keda_and_hpa_scale_down_through_hpa_behavior() -> None:
    so = one(rendered("-f", str(CHART / "ci/keda-values.yaml")), "ScaledObject", "eureka-rollout")
    hpa = one(rendered("-f", str(CHART / "ci/hpa-values.yaml")), "HorizontalPodAutoscaler", "eureka-rollout")
    for behavior in (so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], hpa["spec"]["behavior"]):
        down = behavior["scaleDown"]
        assert down["stabilizationWindowSeconds"] == 300
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_max_replicas_beyond_the_backlog_cap_fails_with_a_sentence() -> None:
    # buffer.maxBacklog 640 / 64 per replica: at most 10 replicas can ever have work.
    err = fails("--set", "rollout.autoscaling.enabled=true", "--set", "rollout.autoscaling.maxReplicas=11")
    assert "rollout.autoscaling.maxReplicas (11) is above ceil(buffer.maxBacklog / targetBacklogPerReplica) = 10" in err
    docs = rendered("--set", "rollout.autoscaling.enabled=true", "--set", "rollout.autoscaling.maxReplicas=10")
    assert one(docs, "Role", "eureka-autoscaler")
    buffer = env_of(container(one(docs, "Deployment", "eureka-buffer")))
    assert buffer["EUREKA_MAX_BACKLOG"] == "640"
    assert math.ceil(640 / 64) == 10


# ---- Redis and disruption budgets ----

@pytest.mark.parametrize(("limit", "expected"), [("2Gi", int(2 * 2**30 * 0.75)), ("512Mi", int(512 * 2**20 * 0.75)),
                                                 ("4G", int(4e9 * 0.75))])
def test_redis_gets_a_maxmemory_under_its_limit_and_noeviction(limit: str, expected: int) -> None:
    redis = one(rendered("--set", f"redis.resources.limits.memory={limit}"), "StatefulSet", "eureka-redis")
    args = container(redis)["args"][0]
    assert f"--maxmemory {expected} --maxmemory-policy noeviction" in args


def _replicas(docs: list[dict], selector: dict) -> int:
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet")]:
        if doc["spec"]["selector"]["matchLabels"] == selector:
            return doc["spec"].get("replicas", 1)
    raise AssertionError(f"no workload selected by {selector}")


@pytest.mark.parametrize("args", [(), ("--set", "reward.replicas=1"), *[("-f", str(p)) for p in CI_VALUES]],
                         ids=["default", "one-reward", *[p.name for p in CI_VALUES]])
def test_every_pdb_allows_an_eviction(args: tuple[str, ...]) -> None:
    docs = rendered(*args)
    pdbs = find(docs, "PodDisruptionBudget")
    assert pdbs
    for pdb in pdbs:
        replicas = _replicas(docs, pdb["spec"]["selector"]["matchLabels"])
        if "maxUnavailable" in pdb["spec"]:
            allowed = int(pdb["spec"]["maxUnavailable"])
        else:
            allowed = replicas - int(pdb["spec"]["minAvailable"])
        assert allowed >= 1 or replicas == 0, f"{pdb['metadata']['name']} blocks every eviction at {replicas} replicas"


# ---- secrets, images, helm test ----

def test_pods_carry_the_checksum_of_the_secrets_they_read() -> None:
    docs = rendered()
    secrets = {s["metadata"]["name"]: s["data"] for s in find(docs, "Secret")}
    expected = hashlib.sha256("\n".join([f"eureka-redis={secrets['eureka-redis']['password']}",
                                         f"eureka-token={secrets['eureka-token']['token']}"]).encode()).hexdigest()
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet")]:
        assert doc["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"] == expected, doc["metadata"]["name"]


def test_existing_secrets_render_no_secret_and_a_stable_checksum() -> None:
    tls = ("-f", str(CHART / "ci/token-tls-values.yaml"))
    a, b = rendered(*tls), rendered(*tls, "--set", "reward.replicas=3")
    assert not find(a, "Secret")
    sums = {d["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"] for d in [*find(a, "Deployment"), *find(b, "Deployment")]}
    assert len(sums) == 1  # GitOps renders of the same values do not roll the pods


def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    docs = rendered("--set", f"image.digest={digest}", "--set", f"gpuImage.digest={digest}", *GPU)
    assert container(one(docs, "Deployment", "eureka-reward"))["image"] == f"ghcr.io/eureka-rl/eureka@{digest}"
    assert container(one(docs, "Deployment", "eureka-rollout"))["image"] == f"ghcr.io/eureka-rl/eureka-gpu@{digest}"
    assert "image.digest" in fails("--set", "image.digest=latest")


def test_helm_test_checks_every_service_and_one_reward_call() -> None:
    pod = one(rendered(), "Pod", "eureka-release-check")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["eureka.dev/pipeline"] == "eureka"  # the NetworkPolicies admit it
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "/app/deploy/release_check.py"]
    health = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--health"]
    assert health == ["reward=eureka-reward:50051", "buffer=eureka-buffer:50052", "learner=eureka-learner:50053",
                      "rollout=eureka-rollout:50054"]
    assert c["args"][c["args"].index("--reward") + 1] == "eureka-reward:50051"
    assert env_of(c)["EUREKA_SECURITY__SERVICE_TOKEN"] == {"secretKeyRef": {"name": "eureka-token", "key": "token"}}
    assert not find(rendered("--set", "tests.enabled=false"), "Pod")


@pytest.mark.parametrize(("sets", "message"), [
    (["model.download.enabled=true", "model.download.source=hf://org/name"],
     "model.download needs model.path"),
    (["model.path=/m", "model.download.enabled=true", "model.download.source=hf://org/name",
      "model.existingClaim=models"], "model.existingClaim and model.download are both set"),
    (["model.path=/m", "model.download.enabled=true"], "model.download.source \"\" is neither hf://"),
])
def test_contradictory_model_values_fail_with_a_sentence(sets: list[str], message: str) -> None:
    assert message in fails(*[a for s in sets for a in ("--set", s)])


def test_one_node_takes_an_existing_checkpoint_claim_instead_of_a_template() -> None:
    docs = rendered("--set", "learner.checkpoints.existingClaim=ck")
    sts = one(docs, "StatefulSet", "eureka-learner")
    assert "volumeClaimTemplates" not in sts["spec"] and not find(docs, "PersistentVolumeClaim")
    assert mounts_at(pod_spec(sts), container(sts), "/checkpoints")["persistentVolumeClaim"] == {"claimName": "ck"}
