"""The Helm chart: lint, render with every CI value set, validate against the Kubernetes schemas (strict, offline)
and the custom resources against their projects' published schemas, and check the promises of the issue on the
rendered objects (non-root, probes, scaling, RBAC, monitoring)."""

from __future__ import annotations

import json
import shutil

import kubernetes_validate
import pytest
import yaml

from tests.deploy.helpers import (CHART, CI_VALUES, DASHBOARDS, KUBE_VERSION, env_of, find, one, pod_spec, rendered,
                                  run_helm, validate_custom_resource)

# Custom resources: kubernetes-validate has no schema for them; they are checked against their published CRDs.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor", "PrometheusRule",
             "LeaderWorkerSet"}
SCENARIOS = [(), *[("-f", str(p)) for p in CI_VALUES],
             ("--api-versions", "keda.sh/v1alpha1", "--set", "rollout.autoscaling.enabled=true"),
             ("--api-versions", "monitoring.coreos.com/v1"),
             ("-f", str(CHART / "ci/multinode-values.yaml"), "--api-versions", "leaderworkerset.x-k8s.io/v1")]
IDS = ["default", *[p.name for p in CI_VALUES], "keda-detected", "monitoring-crds", "multinode-lws-detected"]


def test_ci_scenarios_cover_the_issue() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"gpu-values.yaml", "keda-values.yaml", "builtin-autoscaler-values.yaml", "token-tls-values.yaml",
            "multinode-values.yaml", "multinode-lws-values.yaml"} <= names


def test_every_custom_resource_kind_the_chart_makes_is_validated() -> None:
    made = {d["kind"] for args in SCENARIOS for d in rendered(*args)}
    assert CRD_KINDS <= made, f"no scenario renders {sorted(CRD_KINDS - made)}"


def test_a_custom_resource_with_an_unknown_field_fails_its_schema() -> None:
    (lws,) = find(rendered("-f", str(CHART / "ci/multinode-lws-values.yaml")), "LeaderWorkerSet")
    broken = json.loads(json.dumps(lws))
    broken["spec"]["leaderWorkerTemplate"]["sise"] = 2
    broken["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    errors = validate_custom_resource(broken)
    assert any("sise" in e for e in errors) and any("imagePullPolicy" in e for e in errors), errors


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["default", *[p.name for p in CI_VALUES]])
def test_helm_lint(values) -> None:  # noqa: ANN001
    out = run_helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("args", SCENARIOS, ids=IDS)
def test_rendered_manifests_validate_strictly(args: tuple[str, ...]) -> None:
    docs = rendered(*args)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            errors = validate_custom_resource(doc)
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("args", SCENARIOS, ids=IDS)
def test_every_eureka_container_is_non_root_read_only_with_resources_and_probes(args: tuple[str, ...]) -> None:
    for doc in rendered(*args):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
            assert "livenessProbe" in c, c["name"]
            assert "readinessProbe" in c or c["name"] == "autoscaler", c["name"]


def test_default_install_has_every_part() -> None:
    docs = rendered()
    for name in ("eureka-reward", "eureka-buffer", "eureka-rollout"):
        one(docs, "Deployment", name)
        one(docs, "Service", name)
        one(docs, "PodDisruptionBudget", name)
    learner = one(docs, "StatefulSet", "eureka-learner")
    assert learner["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "checkpoints"
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(learner)["containers"][0]["volumeMounts"]}
    assert mounts["checkpoints"] == "/checkpoints"
    assert env_of(pod_spec(learner)["containers"][0])["EUREKA_RUN_DIR"].startswith("/checkpoints/")
    redis = one(docs, "StatefulSet", "eureka-redis")
    args = pod_spec(redis)["containers"][0]["args"][0]
    assert "--appendonly yes" in args and "--appendfsync everysec" in args and "requirepass $REDIS_PASSWORD\n" in args
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {s["metadata"]["name"] for s in find(docs, "Secret")} == {"eureka-token", "eureka-redis"}
    # Autoscaling is off by default: nothing scales rollout but `rollout.replicas`.
    assert not find(docs, "HorizontalPodAutoscaler") and not find(docs, "ScaledObject")
    assert one(docs, "Deployment", "eureka-rollout")["spec"]["replicas"] == 1


def test_grpc_probes_use_each_servers_port() -> None:
    docs = rendered()
    ports = {"eureka-reward": 50051, "eureka-buffer": 50052, "eureka-rollout": 50054, "eureka-learner": 50053}
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet")]:
        name = doc["metadata"]["name"]
        if name not in ports:
            continue
        c = pod_spec(doc)["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": ports[name]}, (name, probe)


def test_service_wiring_points_at_the_services() -> None:
    docs = rendered()
    rollout = env_of(pod_spec(one(docs, "Deployment", "eureka-rollout"))["containers"][0])
    assert rollout["EUREKA_BUFFER_ADDRESS"] == "eureka-buffer:50052"
    assert rollout["EUREKA_REWARD_ADDRESS"] == "eureka-reward:50051"
    assert rollout["EUREKA_LEARNER_ADDRESS"] == "eureka-learner:50053"
    assert rollout["EUREKA_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    buffer = env_of(pod_spec(one(docs, "Deployment", "eureka-buffer"))["containers"][0])
    assert buffer["EUREKA_REDIS__URL"] == "redis://eureka-redis:6379/0"
    assert buffer["EUREKA_REDIS__PASSWORD"] == {"secretKeyRef": {"name": "eureka-redis", "key": "password"}}
    learner = env_of(pod_spec(one(docs, "StatefulSet", "eureka-learner"))["containers"][0])
    assert learner["EUREKA_BUFFER_ADDRESS"] == "eureka-buffer:50052"
    for doc in [*find(docs, "Deployment"), *find(docs, "StatefulSet")]:
        if doc["metadata"]["name"] == "eureka-redis":
            continue
        env = env_of(pod_spec(doc)["containers"][0])
        assert env["EUREKA_SECURITY__SERVICE_TOKEN"] == {"secretKeyRef": {"name": "eureka-token", "key": "token"}}
        assert env["EUREKA_HOST"] == "0.0.0.0"


def test_recipe_values_reach_learner_and_rollout_as_env() -> None:
    docs = rendered("--set", "recipe.n_samples=4", "--set", "recipe.max_staleness=2")
    for kind, name in (("StatefulSet", "eureka-learner"), ("Deployment", "eureka-rollout")):
        env = env_of(pod_spec(one(docs, kind, name))["containers"][0])
        assert env["EUREKA_RECIPE__N_SAMPLES"] == "4" and env["EUREKA_RECIPE__MAX_STALENESS"] == "2"


def test_rollout_replicas_follow_helm_set() -> None:
    docs = rendered("--set", "rollout.replicas=7")
    assert one(docs, "Deployment", "eureka-rollout")["spec"]["replicas"] == 7


def test_gpu_values_request_gpus_on_the_gpu_pool() -> None:
    docs = rendered("-f", str(CHART / "ci/gpu-values.yaml"))
    for kind, name, count in (("Deployment", "eureka-rollout", 1), ("StatefulSet", "eureka-learner", 2)):
        spec = pod_spec(one(docs, kind, name))
        c = spec["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == count
        assert c["image"].startswith("ghcr.io/eureka-rl/eureka-gpu:")
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    rollout = env_of(pod_spec(one(docs, "Deployment", "eureka-rollout"))["containers"][0])
    assert rollout["EUREKA_BACKEND"] == "vllm" and rollout["EUREKA_DEVICE"] == "cuda"
    learner = env_of(pod_spec(one(docs, "StatefulSet", "eureka-learner"))["containers"][0])
    assert learner["EUREKA_WORLD_SIZE"] == "2"
    # CPU-only services keep the CPU image and no GPU.
    reward = pod_spec(one(docs, "Deployment", "eureka-reward"))["containers"][0]
    assert "nvidia.com/gpu" not in reward["resources"]["limits"] and "eureka-gpu" not in reward["image"]


def _autoscaling_kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler", "Role")}


@pytest.mark.parametrize(
    ("api_versions", "expected"),
    # An external metrics API alone (another adapter, or KEDA's own) says nothing of the backlog metric: builtin.
    [((), {"Role"}), (("external.metrics.k8s.io/v1beta1",), {"Role"}),
     (("keda.sh/v1alpha1", "external.metrics.k8s.io/v1beta1"), {"ScaledObject"})],
    ids=["builtin", "external-metrics-only", "keda"],
)
def test_auto_mode_picks_keda_else_builtin(api_versions: tuple[str, ...], expected: set[str]) -> None:
    args = ["--set", "rollout.autoscaling.enabled=true"]
    for v in api_versions:
        args += ["--api-versions", v]
    docs = rendered(*args)
    assert _autoscaling_kinds(docs) == expected
    assert "replicas" not in one(docs, "Deployment", "eureka-rollout")["spec"]  # the autoscaler owns it


def test_keda_scaled_object_targets_rollout_on_the_backlog() -> None:
    docs = rendered("-f", str(CHART / "ci/keda-values.yaml"))
    so = one(docs, "ScaledObject", "eureka-rollout")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "eureka-rollout"}
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 16)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # keda-values turns the Prometheus Operator monitors on: their `release` label narrows the query.
    assert trigger["metadata"]["query"] == 'sum(eureka_buffer_prompt_backlog{namespace="ml", release="eureka"})'
    assert trigger["metadata"]["threshold"] == "32"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc.cluster.local:9090"


def test_keda_redis_streams_trigger_authenticates_with_the_redis_secret() -> None:
    docs = rendered("-f", str(CHART / "ci/keda-redis-values.yaml"))
    (trigger,) = one(docs, "ScaledObject", "eureka-rollout")["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    # KEDA resolves names from its own namespace: fully qualified. lagCount (entries not yet delivered to the
    # group) is the work waiting for a worker; pendingEntriesCount counts claimed prompts and cannot scale up.
    assert trigger["metadata"] == {"address": "eureka-redis.ml.svc.cluster.local:6379", "stream": "eureka:prompts",
                                   "consumerGroup": "rollout", "lagCount": "64"}
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "eureka-redis", "key": "password"}]
    # KEDA's operator must reach Redis through the NetworkPolicy.
    keda_rule = one(docs, "NetworkPolicy", "eureka-redis")["spec"]["ingress"][1]
    assert keda_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]
    assert keda_rule["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_keda_query_can_be_replaced() -> None:
    docs = rendered("-f", str(CHART / "ci/keda-values.yaml"), "--set", "rollout.autoscaling.keda.query=sum(x)")
    (trigger,) = one(docs, "ScaledObject", "eureka-rollout")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == "sum(x)"


def test_hpa_scales_on_the_external_backlog_metric() -> None:
    docs = rendered("-f", str(CHART / "ci/hpa-values.yaml"))
    hpa = one(docs, "HorizontalPodAutoscaler", "eureka-rollout")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "eureka_buffer_prompt_backlog"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "64"}
    assert hpa["spec"]["maxReplicas"] == 10


def test_builtin_autoscaler_rbac_is_exactly_get_patch_on_rollout_scale() -> None:
    docs = rendered("-f", str(CHART / "ci/builtin-autoscaler-values.yaml"))
    role = one(docs, "Role", "eureka-autoscaler")
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments/scale"],
                              "resourceNames": ["eureka-rollout"], "verbs": ["get", "patch"]}]
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    binding = one(docs, "RoleBinding", "eureka-autoscaler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "eureka-autoscaler", "namespace": "ml"}]
    dep = one(docs, "Deployment", "eureka-autoscaler")
    spec = pod_spec(dep)
    assert spec["serviceAccountName"] == "eureka-autoscaler" and spec["automountServiceAccountToken"] is True
    c = spec["containers"][0]
    assert c["args"] == ["autoscaler", "run"]
    env = env_of(c)
    assert env["EUREKA_DEPLOYMENT"] == "eureka-rollout" and env["EUREKA_BUFFER_ADDRESS"] == "eureka-buffer:50052"
    assert (env["EUREKA_MIN_REPLICAS"], env["EUREKA_MAX_REPLICAS"], env["EUREKA_COOLDOWN_S"]) == ("1", "6", "30")
    # Only the autoscaler gets an API token; the pipeline pods get none.
    for d in find(docs, "Deployment") + find(docs, "StatefulSet"):
        if d["metadata"]["name"] != "eureka-autoscaler":
            assert pod_spec(d)["automountServiceAccountToken"] is False


def test_autoscaler_env_names_are_fields_of_its_config() -> None:
    from services.autoscaler.config import AutoscalerConfig

    docs = rendered("-f", str(CHART / "ci/builtin-autoscaler-values.yaml"))
    env = env_of(pod_spec(one(docs, "Deployment", "eureka-autoscaler"))["containers"][0])
    fields = set(AutoscalerConfig.model_fields)
    for name in env:
        if name.startswith("EUREKA_"):
            assert name.removeprefix("EUREKA_").split("__")[0].lower() in fields, name


def test_monitoring_crds_give_a_monitor_and_keep_the_annotations() -> None:
    docs = rendered("--api-versions", "monitoring.coreos.com/v1")
    pm = one(docs, "PodMonitor", "eureka")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # Annotations stay as the fallback for annotation-based scrape configs beside the operator.
    for d in find(docs, "Deployment"):
        assert d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    sm = one(rendered("-f", str(CHART / "ci/keda-values.yaml")), "ServiceMonitor", "eureka")
    assert sm["metadata"]["labels"]["release"] == "monitoring"  # monitoring.release, as keda-values sets it
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"


def test_without_monitoring_crds_pods_carry_scrape_annotations() -> None:
    docs = rendered()
    assert not find(docs, "PodMonitor") and not find(docs, "ServiceMonitor")
    ports = {"eureka-reward": "9101", "eureka-buffer": "9102", "eureka-rollout": "9103", "eureka-learner": "9104"}
    for d in find(docs, "Deployment") + find(docs, "StatefulSet"):
        if d["metadata"]["name"] in ports:
            ann = d["spec"]["template"]["metadata"]["annotations"]
            assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == ports[d["metadata"]["name"]]


def test_dashboards_ship_as_labelled_configmaps_with_the_same_json() -> None:
    docs = rendered()
    maps = [d for d in find(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {k: v for m in maps for k, v in m["data"].items()}
    assert set(shipped) == {p.name for p in DASHBOARDS} == {"training.json", "pipeline.json"}
    for p in DASHBOARDS:
        assert json.loads(shipped[p.name]) == json.loads(p.read_text())


def test_network_policy_admits_only_the_buffer_to_redis() -> None:
    docs = rendered()
    redis = one(docs, "NetworkPolicy", "eureka-redis")
    (rule,) = redis["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "eureka",
                                                             "app.kubernetes.io/instance": "eureka",
                                                             "app.kubernetes.io/component": "buffer"}}}]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    buffer = one(docs, "NetworkPolicy", "eureka-buffer")
    grpc_rule = buffer["spec"]["ingress"][0]
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": {"eureka.dev/pipeline": "eureka"}}}]
    assert grpc_rule["ports"] == [{"port": 50052, "protocol": "TCP"}]
    # Every pipeline pod carries the label the policies admit; Redis does not.
    for d in find(docs, "Deployment") + find(docs, "StatefulSet"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert ("eureka.dev/pipeline" in labels) == (d["metadata"]["name"] != "eureka-redis")


def test_token_and_tls_values_use_existing_secrets_and_exec_probes() -> None:
    docs = rendered("-f", str(CHART / "ci/token-tls-values.yaml"))
    assert not find(docs, "Secret")  # both secrets are brought by the user
    for d in find(docs, "Deployment") + find(docs, "StatefulSet"):
        if d["metadata"]["name"] == "eureka-redis":
            continue
        spec = pod_spec(d)
        c = spec["containers"][0]
        env = env_of(c)
        assert env["EUREKA_SECURITY__SERVICE_TOKEN"] == {"secretKeyRef": {"name": "eureka-token", "key": "token"}}
        assert env["EUREKA_SECURITY__TLS_CERT"] == "/etc/eureka/tls/tls.crt"
        assert env["EUREKA_SECURITY__TLS_CA"] == "/etc/eureka/tls/ca.crt"
        assert {"name": "tls", "secret": {"secretName": "eureka-tls", "defaultMode": 0o440}} in spec["volumes"]
        if "readinessProbe" in c:
            cmd = c["readinessProbe"]["exec"]["command"]
            assert cmd[:2] == ["python", "/app/deploy/healthcheck.py"] and "--ca" in cmd
            assert cmd[cmd.index("--server-name") + 1] == d["metadata"]["name"]
    buffer = env_of(pod_spec(one(docs, "Deployment", "eureka-buffer"))["containers"][0])
    assert buffer["EUREKA_REDIS__PASSWORD"] == {"secretKeyRef": {"name": "eureka-redis", "key": "password"}}


def test_generated_secrets_are_random_and_kept_on_upgrade() -> None:
    # Offline, `lookup` finds nothing, so each render generates; in a cluster the existing value is reused
    # (see `eureka.keepOrGenerate`) and the Secret is annotated to survive `helm uninstall`.
    a = {s["metadata"]["name"]: s for s in find(rendered(), "Secret")}
    b = {s["metadata"]["name"]: s for s in find(rendered("--set", "reward.replicas=3"), "Secret")}
    assert a["eureka-token"]["data"]["token"] != b["eureka-token"]["data"]["token"]
    assert len(a["eureka-token"]["data"]["token"]) >= 64  # 48 random characters, base64
    assert a["eureka-redis"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    template = (CHART / "templates/_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret" .root.Release.Namespace .name' in template


def test_notes_tell_how_to_watch_and_scale(tmp_path) -> None:  # noqa: ANN001
    # `helm install --dry-run` needs a cluster; render NOTES.txt through `tpl` in a copy of the chart instead.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates/NOTES.txt", chart / "notes.txt")
    (chart / "templates/zz-notes.yaml").write_text('notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n')
    out = run_helm("template", "eureka", str(chart), "--namespace", "ml", "--show-only", "templates/zz-notes.yaml")
    assert out.returncode == 0, out.stderr
    notes = yaml.safe_load(out.stdout)["notes"]
    assert "Grafana" in notes and "helm upgrade eureka charts/ --reuse-values --set rollout.replicas=4" in notes
    assert "kubectl -n ml logs -f statefulset/eureka-learner" in notes
