"""A local HTTP server that speaks the Kubernetes scale subresource API (no cluster can run here).

It implements what the API server does for GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale:
autoscaling/v1 Scale objects, merge-patch bodies, a 404 Status for an unknown Deployment, 403 when the
caller lacks the verb, and records every request, so the real `kubernetes` client code path is exercised.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message, "reason": reason,
            "code": code}


def handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
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
                    "application/merge-patch+json", "application/strategic-merge-patch+json",
                    "application/json-patch+json",
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
