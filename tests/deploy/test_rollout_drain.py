"""Scale-down with the chart's timings: a real rollout worker gets SIGTERM (what its preStop hook sends, and then
the kubelet) in the middle of a batch longer than its drain timeout; it must exit, with every claim released to
the buffer, before the rendered terminationGracePeriodSeconds ends (the kubelet's SIGKILL). The buffer's lease is
far longer than the test, so a claim that was not released would still be pending."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_proc import free_port
from tests.deploy.helpers import env_of, one, pod_spec, render
from tests.rollout.conftest import REPO, Stack, running_stack, tiny_path, wait_for  # noqa: F401 - tiny_path: fixture

LEASE_S = 3600


@pytest.fixture(scope="module")
def long_lease_stack(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Iterator[Stack]:
    """Redis, buffer (one-hour lease) and reward processes, and an in-process weight stream at version 0."""
    with running_stack(tmp_path_factory.mktemp("drain"), tiny_path, lease_s=LEASE_S) as st:
        yield st


def chart_timings(*args: str) -> tuple[dict[str, str], int]:
    """The rollout container's EUREKA_* timings and the pod's grace period, as the chart renders them."""
    spec = pod_spec(one(render(*args), "Deployment", "eureka-rollout"))
    env = env_of(spec["containers"][0])
    return ({k: env[k] for k in ("EUREKA_DRAIN_TIMEOUT_S", "EUREKA_GRPC__DEADLINE_S")},
            spec["terminationGracePeriodSeconds"])


def drain_with(stack: Stack, timing_env: dict[str, str], grace_s: int, worker_id: str, must_release: bool) -> None:
    drain_s = float(timing_env["EUREKA_DRAIN_TIMEOUT_S"])
    port = free_port()
    # Long responses: the batch in flight outlives the drain timeout, so the release path is what runs.
    args = stack.worker_args(port, worker_id, **{"recipe.max-response-tokens": 3500, "recipe.n-samples": 4,
                                                 "claim-batch-prompts": 4})
    log = stack.tmp / f"{worker_id}.log"
    proc = subprocess.Popen(args, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **timing_env, "EUREKA_LOG_LEVEL": "INFO"})
    try:
        stats0 = stack.stats()
        ids = stack.enqueue(4, tag=worker_id)
        wait_for(lambda: stack.status(port).prompts_in_flight == 4, 120, "a batch of 4 in flight", every_s=0.01)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker was still running when the grace period ({grace_s} s) ended: "
                        f"the kubelet's SIGKILL would leave its claims waiting {LEASE_S} s for their lease")
        took = time.monotonic() - sent
        assert code == 0, log.read_text()[-3000:]
        stats = stack.stats()
        assert stats.prompts_pending == stats0.prompts_pending == 0, "a claim is left waiting for its lease"
        assert stats.prompts_reclaimed_total == stats0.prompts_reclaimed_total
        put = stats.groups_put_total - stats0.groups_put_total
        assert put + stats.prompt_backlog - stats0.prompt_backlog == len(ids)  # released prompts are queued again
        released = sum(int(n) for n in re.findall(r"prompts released.*reason=drain.*released=(\d+)", log.read_text()))
        if must_release:
            assert released >= 1 and took >= drain_s, "the batch finished inside the drain: nothing was released"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_with_a_short_drain_releases_every_claim_before_the_grace_period(long_lease_stack: Stack) -> None:
    # The shortest grace period the chart renders for a 3 s drain (it refuses anything shorter).
    timing_env, grace = chart_timings("--set", "rollout.drainTimeoutSeconds=3",
                                      "--set", "rollout.terminationGracePeriodSeconds=38")
    assert timing_env["EUREKA_DRAIN_TIMEOUT_S"] == "3" and grace == 38
    drain_with(long_lease_stack, timing_env, grace, "drain-short", must_release=True)


@pytest.mark.slow
def test_sigterm_with_the_default_timings_releases_every_claim_before_the_grace_period(long_lease_stack: Stack) -> None:
    timing_env, grace = chart_timings()
    assert float(timing_env["EUREKA_DRAIN_TIMEOUT_S"]) == 60 and grace == 120
    # The batch may finish inside the 60 s drain on a fast machine (then it is put, not released): either way
    # nothing may be left pending when the grace period ends.
    drain_with(long_lease_stack, timing_env, grace, "drain-default", must_release=False)

