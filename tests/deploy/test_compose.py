"""docker-compose.yml: valid against the Compose specification's JSON schema, and the same images, ports and
EUREKA_* environment as the Helm chart.

The schema is `compose/config/compose_spec.json` from the `docker-compose==1.29.2` wheel on PyPI (pinned by
version and SHA-256), downloaded once with pip into `.cache/eureka/compose-schema/`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import CHART, REPO, env_of, find, one, pod_spec, rendered

WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = ("reward", "buffer", "rollout", "learner")
CHART_KIND = {"learner": "StatefulSet"}


def compose_schema() -> dict:
    cache = REPO / ".cache" / "eureka" / "compose-schema"
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "-d", str(cache), "docker-compose==1.29.2"], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            pytest.fail(f"could not download the Compose schema's wheel from PyPI: {out.stderr[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == WHEEL_SHA256, f"{wheel} has SHA-256 {digest}, expected the pinned {WHEEL_SHA256}"
    with zipfile.ZipFile(wheel) as z:
        return json.loads(z.read("compose/config/compose_spec.json"))


def test_compose_file_passes_the_compose_spec_schema() -> None:
    schema = compose_schema()
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_file() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["reward"]["depends_on"] = {"buffer": {"condition": "when_ready"}}
    broken["services"]["rollout"]["helthcheck"] = {}
    errors = list(jsonschema.Draft201909Validator(compose_schema()).iter_errors(broken))
    assert errors


def test_compose_has_every_service_with_healthchecks_and_conditions() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"redis", "reward", "buffer", "learner", "rollout", "prometheus", "grafana"}
    for name in ("redis", *SERVICES, "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["buffer"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["learner"]["depends_on"] == {"buffer": {"condition": "service_healthy"}}
    assert set(services["rollout"]["depends_on"]) == {"buffer", "reward", "learner"}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "requirepass $$REDIS_PASSWORD\n" in redis_cmd
    # Scalable rollout: no fixed container name, no host port.
    assert "container_name" not in services["rollout"] and "ports" not in services["rollout"]
    for name in SERVICES:
        assert services[name]["user"] == "10001:10001" and services[name]["read_only"] is True


def _default(value: str) -> str:
    """`${VAR:-default}` -> default (what compose uses when VAR is unset)."""
    m = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", value)
    return m.group(1) if m else value


def test_compose_uses_the_charts_images() -> None:
    docs = rendered()
    redis = pod_spec(one(docs, "StatefulSet", "eureka-redis"))["containers"][0]["image"]
    assert COMPOSE["services"]["redis"]["image"] == redis
    for name in SERVICES:
        container = pod_spec(one(docs, CHART_KIND.get(name, "Deployment"), f"eureka-{name}"))["containers"][0]
        assert _default(COMPOSE["services"][name]["image"]) == container["image"], name
        assert COMPOSE["services"][name]["command"] == container["args"], name


def test_compose_uses_the_charts_ports() -> None:
    docs = rendered()
    for name in SERVICES:
        c = pod_spec(one(docs, CHART_KIND.get(name, "Deployment"), f"eureka-{name}"))["containers"][0]
        chart_ports = {str(p["containerPort"]) for p in c["ports"]}
        compose_ports = set(COMPOSE["services"][name].get("expose", []))
        compose_ports |= {p.rsplit(":", 1)[-1] for p in COMPOSE["services"][name].get("ports", [])}
        assert compose_ports == chart_ports, name
    # Prometheus scrapes the same metrics ports the chart declares.
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {j["job_name"].removeprefix("eureka-"): j["dns_sd_configs"][0]["port"] for j in prom["scrape_configs"]}
    for name in SERVICES:
        c = pod_spec(one(docs, CHART_KIND.get(name, "Deployment"), f"eureka-{name}"))["containers"][0]
        assert scraped[name] == next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics"), name


def _comparable(value: object) -> str:
    """Addresses differ only by host (compose `buffer:50052`, chart `eureka-buffer:50052`); secrets by source."""
    if not isinstance(value, str):
        return "<secret-or-field>"
    if value.startswith("${"):
        return "<secret-or-field>"
    m = re.fullmatch(r"(?:redis://)?(?:eureka-)?([a-z]+):(\d+)(/\d+)?", value)
    return f"{m.group(1)}:{m.group(2)}{m.group(3) or ''}" if m else value


@pytest.mark.parametrize("name", SERVICES)
def test_compose_sets_the_same_environment_as_the_chart(name: str) -> None:
    c = pod_spec(one(rendered(), CHART_KIND.get(name, "Deployment"), f"eureka-{name}"))["containers"][0]
    chart_env = {k: _comparable(v) for k, v in env_of(c).items()}
    compose_env = {k: _comparable(v) for k, v in COMPOSE["services"][name]["environment"].items()}
    if name == "rollout":  # the chart names each worker after its pod; compose lets it default to hostname-pid
        chart_env.pop("EUREKA_WORKER_ID")
    assert compose_env == chart_env


def test_compose_grafana_provisions_the_chart_dashboards() -> None:
    volumes = COMPOSE["services"]["grafana"]["volumes"]
    assert "./charts/dashboards:/var/lib/grafana/dashboards/eureka:ro" in volumes
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/eureka.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/eureka"
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    assert (CHART / "dashboards").is_dir() and list(Path(CHART / "dashboards").glob("*.json"))
    assert find(rendered(), "ConfigMap")


def test_prometheus_scrape_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make apt` (the prometheus package ships it)")
    out = subprocess.run([promtool, "check", "config", str(REPO / "deploy/prometheus/prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
