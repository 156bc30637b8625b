"""The autoscaler's Kubernetes calls against the local scale-subresource server of scale_api.py.

The real `kubernetes` client code path (URL, verb, content type, body, response parsing, errors) is exercised;
RBAC enforcement and a real API server's admission are not (no cluster can run here).
"""

from __future__ import annotations

import pytest

from services.autoscaler.core import Autoscaler, Observation, Policy
from services.autoscaler.kube import ScaleClient, ScaleError
from services.autoscaler.server import step
from tests.autoscaler.scale_api import FakeApiServer

def test_get_and_patch_the_scale_subresource(api: FakeApiServer) -> None:
    kube = ScaleClient("eureka", "eureka-rollout", api.url)
    assert kube.get_replicas() == 2
    assert kube.set_replicas(4) == 4
    assert api.replicas[("eureka", "eureka-rollout")] == 4
    assert api.replicas[("eureka", "other")] == 5  # only the named Deployment is touched
    get, patch = api.requests
    assert (get["verb"], get["path"]) == ("get", "/apis/apps/v1/namespaces/eureka/deployments/eureka-rollout/scale")
    assert patch["verb"] == "patch"
    assert patch["path"] == "/apis/apps/v1/namespaces/eureka/deployments/eureka-rollout/scale"
    assert patch["body"] == {"spec": {"replicas": 4}}


def test_missing_deployment_is_a_scale_error_with_a_hint(api: FakeApiServer) -> None:
    kube = ScaleClient("eureka", "nope", api.url)
    with pytest.raises(ScaleError, match="HTTP 404: the Deployment does not exist"):
        kube.get_replicas()


def test_forbidden_patch_names_the_role_and_changes_nothing(api: FakeApiServer) -> None:
    api.forbidden_verbs.add("patch")
    kube = ScaleClient("eureka", "eureka-rollout", api.url)
    with pytest.raises(ScaleError, match="HTTP 403: .*check the Role"):
        kube.set_replicas(7)
    assert api.replicas[("eureka", "eureka-rollout")] == 2


def test_unreachable_api_server_is_a_scale_error() -> None:
    from tests.conftest import free_port

    kube = ScaleClient("eureka", "eureka-rollout", f"http://127.0.0.1:{free_port()}")
    kube._apps.api_client.configuration.retries = 0  # noqa: SLF001 - fail fast instead of urllib3's 3 retries
    with pytest.raises(ScaleError, match="unreachable"):
        kube.get_replicas()


def test_step_scales_up_on_backlog_then_holds_in_cooldown(api: FakeApiServer) -> None:
    kube = ScaleClient("eureka", "eureka-rollout", api.url)
    scaler = Autoscaler(Policy(1, 8, 10, 2, 1, cooldown_s=30, max_stale_fraction=0.2))
    d = step(scaler, kube, Observation(prompt_backlog=100, groups_put_total=0, groups_stale_total=0), now=0)
    assert d.replicas == 4 and api.replicas[("eureka", "eureka-rollout")] == 4
    patches = [r for r in api.requests if r["verb"] == "patch"]
    held = step(scaler, kube, Observation(100, 0, 0), now=5)
    assert held.reason == "cooldown"
    assert [r for r in api.requests if r["verb"] == "patch"] == patches  # no new patch
    assert api.replicas[("eureka", "eureka-rollout")] == 4
