"""The chart's broadcast weight path: learner and rollout get the same store address (the learner Service's
broadcast port), the backend follows the GPUs, and the NetworkPolicy lets the group's members meet."""

from __future__ import annotations

from tests.deploy.helpers import CHART, env_of, find, one, pod_spec, rendered

ON = ("-f", str(CHART / "ci/broadcast-values.yaml"))


def _envs(*args: str) -> dict[str, dict[str, object]]:
    docs = rendered(*args)
    learner = one(docs, "StatefulSet", "eureka-learner")
    rollout = one(docs, "Deployment", "eureka-rollout")
    return {name: env_of(pod_spec(doc)["containers"][0]) for name, doc in (("learner", learner), ("rollout", rollout))}


def test_learner_and_rollout_share_the_broadcast_settings() -> None:
    envs = _envs(*ON)
    keys = ("EUREKA_BROADCAST__ENABLED", "EUREKA_BROADCAST__ADDRESS", "EUREKA_BROADCAST__BACKEND",
            "EUREKA_BROADCAST__BUCKET_BYTES")
    assert [envs["learner"][k] for k in keys] == ["true", "eureka-learner:50055", "gloo", "268435456"]
    assert [envs["rollout"][k] for k in keys] == [envs["learner"][k] for k in keys]
    svc = one(rendered(*ON), "Service", "eureka-learner")
    assert {"name": "broadcast", "port": 50055, "targetPort": "broadcast", "protocol": "TCP"} in svc["spec"]["ports"]
    assert _envs()["rollout"]["EUREKA_BROADCAST__ENABLED"] == "false"


def test_nccl_only_when_both_sides_have_gpus() -> None:
    both = _envs(*ON, "--set", "learner.gpu.enabled=true", "--set", "rollout.gpu.enabled=true",
                 "--set", "rollout.backend=vllm")
    assert both["learner"]["EUREKA_BROADCAST__BACKEND"] == both["rollout"]["EUREKA_BROADCAST__BACKEND"] == "nccl"
    one_side = _envs(*ON, "--set", "rollout.gpu.enabled=true", "--set", "rollout.backend=vllm")
    assert one_side["rollout"]["EUREKA_BROADCAST__BACKEND"] == "gloo"


def _peers(policy: dict) -> list[set[str]]:
    """The components each port-less ingress rule admits."""
    return [{p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in rule["from"]}
            for rule in policy["spec"]["ingress"] if "ports" not in rule]


def test_the_network_policy_admits_the_group_members_on_every_port_only_when_on() -> None:
    for component in ("learner", "rollout"):
        on = one(rendered(*ON), "NetworkPolicy", f"eureka-{component}")
        assert {"learner", "rollout"} in _peers(on), component
        off = one(rendered("--set", "networkPolicy.enabled=true"), "NetworkPolicy", f"eureka-{component}")
        assert _peers(off) == [], component
    assert all(_peers(p) == [] for p in find(rendered(*ON), "NetworkPolicy")
               if p["metadata"]["name"] in ("eureka-reward", "eureka-buffer", "eureka-redis"))
