"""`make bench` and `make bench-<name>` run their benchmarks (read from `make -n`: nothing is executed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.helpers import REPO

DEFAULT_BENCHES = ["reward", "buffer", "rollout", "weights"]


def _dry_run(target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_bench_runs_every_default_benchmark() -> None:
    out = _dry_run("bench")
    assert [name for name in DEFAULT_BENCHES if f"bench/{name}.py" in out] == DEFAULT_BENCHES


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("name", [*DEFAULT_BENCHES, "async_vs_sync", "demo", "signatures", "peer_trl"])
def test_each_bench_target_runs_its_script(name: str) -> None:
    assert f"bench/{name}.py" in _dry_run(f"bench-{name}")
