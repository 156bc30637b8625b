"""The image workflow (.github/workflows/images.yaml): valid against SchemaStore's GitHub workflow schema, and
it publishes exactly the images the chart defaults to, built from the Dockerfiles tests/deploy checks."""

from __future__ import annotations

import gzip
import json

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import CHART, REPO, SCHEMAS
from tests.deploy.test_dockerfiles import DOCKERFILES

WORKFLOW = REPO / ".github" / "workflows" / "images.yaml"


def load_workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    return wf


def schema_errors(wf: dict) -> list[str]:
    with gzip.open(SCHEMAS / "github-workflow.json.gz", "rt") as f:
        schema = json.load(f)
    return [e.message[:200] for e in jsonschema.Draft7Validator(schema).iter_errors(wf)]


def test_the_workflow_is_valid_and_the_schema_catches_a_typo() -> None:
    wf = load_workflow()
    assert schema_errors(wf) == []
    wf["jobs"]["build"]["runs_on"] = wf["jobs"]["build"].pop("runs-on")
    assert schema_errors(wf)


def test_it_runs_on_version_tags() -> None:
    assert load_workflow()["on"]["push"] == {"tags": ["v*"]}


def test_it_builds_the_dockerfiles_the_tests_check_into_the_charts_image_names() -> None:
    wf = load_workflow()
    matrix = wf["jobs"]["build"]["strategy"]["matrix"]["include"]
    assert sorted(REPO / m["dockerfile"] for m in matrix) == sorted(DOCKERFILES)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for m in matrix:
        # The chart's default repository is ghcr.io/<owner>/<image>; the digest lands in the same values key.
        assert values[m["values_key"]]["repository"].split("/")[-1] == m["image"]
        assert values[m["values_key"]]["repository"].startswith("ghcr.io/")
    steps = wf["jobs"]["build"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "${{ matrix.dockerfile }}" and build["with"]["push"] is True
    names = next(s for s in steps if s.get("id") == "names")["run"]
    assert "ghcr.io/${OWNER,,}/${{ matrix.image }}" in names


def test_the_tag_must_match_the_charts_app_version_and_digests_become_values() -> None:
    wf = load_workflow()
    names = next(s for s in wf["jobs"]["build"]["steps"] if s.get("id") == "names")["run"]
    assert "charts/Chart.yaml" in names and "appVersion" in names and "exit 1" in names
    record = next(s for s in wf["jobs"]["build"]["steps"] if s.get("name") == "Record the digest")
    assert record["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert "digest:" in record["run"] and "${{ matrix.values_key }}" in record["run"]
    assembled = " ".join(s.get("run", "") for s in wf["jobs"]["digests"]["steps"])
    assert "image-digests.yaml" in assembled and "gh release upload" in assembled


@pytest.mark.parametrize("key", ["image", "gpuImage"])
def test_a_recorded_digest_file_is_accepted_by_the_chart(key: str, tmp_path) -> None:  # noqa: ANN001
    from tests.deploy.helpers import render

    # What the workflow's printf writes for one image.
    digest = "sha256:" + "0" * 64
    (tmp_path / "d.yaml").write_text(f'{key}:\n  repository: ghcr.io/eureka-rl/x\n  digest: "{digest}"\n')
    docs = render("-f", str(tmp_path / "d.yaml"), "-f", str(CHART / "ci/gpu-values.yaml"))
    images = {c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert f"ghcr.io/eureka-rl/x@{digest}" in images
