"""A real Prometheus for the tests: started on a free loopback port with a temporary TSDB, always stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from shared.process import terminate
from tests.conftest import free_port

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
                "$namespace": ".*", "$release": ".*"}  # the dashboards' variables at "All"


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by fixed durations."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


@contextmanager
def prometheus(workdir: Path, targets: dict[str, list[str]] | None = None, interval: str = "1s",
               file_sd: Path | None = None) -> Iterator[str]:
    """Run `prometheus` scraping `targets` ({job: ["host:port", ...]}) and the targets listed in the `file_sd`
    JSON file (Prometheus file service discovery, re-read as it changes); yields its base URL."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed: run `make apt` (it apt-installs the prometheus package)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]}
                                 for job, t in (targets or {}).items()]}
    if file_sd is not None:
        config["scrape_configs"].append({"job_name": "eureka", "file_sd_configs": [
            {"files": [str(file_sd)], "refresh_interval": "1s"}]})
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus did not become ready: {log}")
            time.sleep(0.2)
        yield url
    finally:
        terminate(proc, grace_s=15)


def query(url: str, expr: str) -> dict:
    """The JSON answer of /api/v1/query (status "success" or "error" with errorType/error)."""
    q = urllib.parse.urlencode({"query": promql(expr)})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 400 bad_data for a parse error carries the JSON body too
        return json.loads(e.read())
