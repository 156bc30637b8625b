"""Read and patch a Deployment's scale subresource with the official `kubernetes` client.

The only API the autoscaler touches: GET and PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale
(the chart's Role allows exactly these two verbs on that one Deployment).
"""

from __future__ import annotations


class ScaleError(Exception):
    """The Kubernetes API refused or failed a scale call; the message says what to check."""


class ScaleClient:
    def __init__(self, namespace: str, deployment: str, api_url: str | None = None) -> None:
        from kubernetes import client, config

        if api_url:
            cfg = client.Configuration()
            cfg.host = api_url.rstrip("/")
            api_client = client.ApiClient(cfg)
        else:
            config.load_incluster_config()
            api_client = client.ApiClient()
        self._apps = client.AppsV1Api(api_client)
        self.namespace = namespace
        self.deployment = deployment

    def get_replicas(self) -> int:
        scale = self._call("get", lambda: self._apps.read_namespaced_deployment_scale(self.deployment, self.namespace))
        return int(scale.spec.replicas or 0)

    def set_replicas(self, replicas: int) -> int:
        body = {"spec": {"replicas": int(replicas)}}
        scale = self._call(
            "patch", lambda: self._apps.patch_namespaced_deployment_scale(self.deployment, self.namespace, body)
        )
        return int(scale.spec.replicas or 0)

    def _call(self, verb: str, fn):  # noqa: ANN001, ANN202 - a thunk around one client call
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        target = f"deployments/{self.deployment}/scale in namespace {self.namespace}"
        try:
            return fn()
        except ApiException as e:
            hint = {
                403: "the service account lacks get/patch on deployments/scale for this Deployment (check the Role)",
                404: "the Deployment does not exist (check --deployment and --namespace)",
            }.get(e.status, "see the API server's reply")
            raise ScaleError(f"{verb} {target} failed with HTTP {e.status}: {hint}") from e
        except HTTPError as e:
            raise ScaleError(f"{verb} {target} failed: the Kubernetes API is unreachable ({e})") from e
