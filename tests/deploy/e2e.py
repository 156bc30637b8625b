"""End-to-end observability check: `eureka up` on the small world, a real Prometheus scraping every metrics
port, then every dashboard panel's query must return data. Used by the slow test in test_dashboards.py."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from eureka_cli.commands import COMMANDS
from tests.deploy.helpers import dashboard_exprs, start_eureka, stop_process
from tests.deploy.prom import prometheus, query

RUN_TIMEOUT_S = 900
STEPS = 8  # the run must still be going when the panels are queried (a stopped target's series go stale)
MIN_POLICY_VERSION = 2  # a few learner steps: rates, histograms and the version lag all have samples


def _up_is_built() -> None:
    (up,) = [c for c in COMMANDS if c.words == ("up",)]
    if up.entry is None:
        pytest.skip("`eureka up` is not built yet (its CLI entry is empty); this test runs once it lands")


def _has_data(answer: dict) -> bool:
    return answer.get("status") == "success" and bool(answer["data"]["result"])


def run_up_and_query_panels(tmp_path: Path) -> list[str]:
    """Returns "dashboard / panel: expr" for every query that came back empty (or errored)."""
    _up_is_built()
    run_dir = tmp_path / "run"
    # `eureka up` writes every metrics endpoint (free ports) to run_dir/prometheus_targets.json (file_sd format).
    targets = run_dir / "prometheus_targets.json"
    args = ["up", "--run-dir", str(run_dir), "--steps", str(STEPS), "--eval-limit", "8", "--learner-procs", "1",
            "--world", "2"]
    up = start_eureka(args, {}, tmp_path / "up.log")
    try:
        with prometheus(tmp_path / "prom", file_sd=targets) as url:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while True:
                version = query(url, "max(eureka_learner_policy_version)")
                if _has_data(version) and float(version["data"]["result"][0]["value"][1]) >= MIN_POLICY_VERSION:
                    break
                if up.poll() is not None:
                    pytest.fail(f"`eureka up` exited with {up.returncode}: {(tmp_path / 'up.log').read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the learner did not reach version {MIN_POLICY_VERSION} in {RUN_TIMEOUT_S}s")
                time.sleep(2)
            time.sleep(5)  # a few more scrapes so every rate() window holds two samples
            return [f"{name} / {title}: {expr}" for name, title, expr in dashboard_exprs()
                    if not _has_data(query(url, expr))]
    finally:
        stop_process(up, signal.SIGINT, grace_s=120)
