"""The autoscaler's Kubernetes calls against a local HTTP server that speaks the scale subresource API.

No cluster can run here. The server below implements what the API server does for
GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale (autoscaling/v1 Scale objects,
merge-patch bodies, 404 Status for an unknown Deployment, 403 when the caller lacks the verb), so the
real `kubernetes` client code path (URL, verb, content type, body, response parsing) is exercised.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.autoscaler.core import Autoscaler, Observation, Policy
from services.autoscaler.kube import ScaleClient, ScaleError
from services.autoscaler.server import step

_PATH = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)/scale$")


@dataclass
class FakeApiServer:
    """The scale subresource of a few Deployments, plus a record of every request."""

    replicas: dict[tuple[str, str], int]
    forbidden_verbs: set[str] = field(default_factory=set)
    requests: list[dict] = field(default_factory=list)
    url: str = ""

    def scale(self, ns: str, name: str) -> dict:
        n = self.replicas[(ns, name)]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {"replicas": n},
            "status": {"replicas": n, "selector": "app.kubernetes.io/component=rollout"},
        }


def _status(code: int, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": code}


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, verb: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            api.requests.append({"verb": verb, "path": self.path, "content_type": self.headers.get("Content-Type"),
                                 "body": body})
            m = _PATH.match(self.path.split("?")[0])
            if m is None:
                return self._reply(404, _status(404, "NotFound", f"the server could not find {self.path}"))
            ns, name = m.groups()
            if verb in api.forbidden_verbs:
                return self._reply(403, _status(403, "Forbidden", f"cannot {verb} deployments/scale"))
            if (ns, name) not in api.replicas:
                return self._reply(404, _status(404, "NotFound", f'deployments.apps "{name}" not found'))
            if verb == "patch":
                if self.headers.get("Content-Type") not in (
                    "application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"
                ):
                    return self._reply(415, _status(415, "UnsupportedMediaType", "unsupported patch type"))
                replicas = body["spec"]["replicas"]
                if not isinstance(replicas, int) or replicas < 0:
                    return self._reply(422, _status(422, "Invalid", "spec.replicas must be a non-negative integer"))
                api.replicas[(ns, name)] = replicas
            return self._reply(200, api.scale(ns, name))

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._handle("get")

        def do_PATCH(self) -> None:  # noqa: N802
            self._handle("patch")

    return Handler


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    state = FakeApiServer(replicas={("eureka", "eureka-rollout"): 2, ("eureka", "other"): 5})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


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
