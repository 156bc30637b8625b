"""Helpers of the deployment tests: a real helm binary rendering the chart, the compose file, the dashboards."""

from __future__ import annotations

import functools
import gzip
import json
import os
import signal
import sys
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
KUBE_VERSION = "1.37.0"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def helm_binary() -> str:
    found = shutil.which("helm") or (str(REPO / ".tools/bin/helm") if (REPO / ".tools/bin/helm").exists() else None)
    if found is None:
        pytest.fail("helm is not installed: run `make helm` (it installs .tools/bin/helm)")
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)


def render(*args: str, release: str = "eureka", namespace: str = "ml") -> list[dict]:
    """`helm template` of the chart with extra arguments; the documents, parsed, empty ones dropped."""
    out = run_helm("template", release, str(CHART), "--namespace", namespace, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, got {[d['metadata']['name'] for d in find(docs, kind)]}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, object]:
    """name -> value (a string) or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    out = []
    for name, dash in load_dashboards().items():
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["expr"]))
    return out


@functools.cache
def rendered(*args: str) -> list[dict]:
    """Memoised `render` (helm is a subprocess: keep the suite quick). Do not mutate the result."""
    return render(*args)


def start_eureka(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`eureka <args>` as a real process in its own session (so a stop reaches its children), output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "eureka_cli", *args], env={**os.environ, **env}, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, sig: signal.Signals = signal.SIGTERM, grace_s: float = 30) -> int:
    """Signal the process group, wait `grace_s`, then kill it; the exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@functools.cache
def crd_schema(kind: str, api_version: str) -> dict:
    """The published openAPIV3Schema of a custom resource (tests/deploy/schemas/), made strict the way
    `kubectl apply --validate=strict` is: unknown fields are refused wherever the schema lists the known ones."""
    group, _, version = api_version.partition("/")
    path = SCHEMAS / f"{kind}-{group}-{version}.json.gz"
    assert path.exists(), f"no published schema for {kind} {api_version} in {SCHEMAS}"
    with gzip.open(path, "rt") as f:
        schema = json.load(f)["schema"]

    def strict(node: object) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for child in node.values():
                strict(child)
        elif isinstance(node, list):
            for child in node:
                strict(child)

    strict(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by the API server itself
    return schema


def validate_custom_resource(doc: dict) -> list[str]:
    """Errors of a rendered custom resource against its published schema (empty = valid)."""
    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema(doc["kind"], doc["apiVersion"]))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(doc)]
