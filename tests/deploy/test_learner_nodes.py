"""The chart's multi-node learner against the launcher it starts: each node's rendered command and environment,
resolved as Kubernetes (and LeaderWorkerSet) resolve them, read by `services.learner.launch` itself, give every
node the same rendezvous, its own node rank, and the world size the settings were validated for."""

from __future__ import annotations

import importlib.util
import os

import pytest

from services.learner.config import LearnerConfig
from services.learner.launch import DEFAULT_MASTER_PORT, topology, torchrun_command
from shared.config import load_settings
from tests.deploy.helpers import CHART, env_of, find, one, pod_spec, rendered

MULTI = ("-f", str(CHART / "ci/multinode-values.yaml"))
LWS_VALUES = ("-f", str(CHART / "ci/multinode-lws-values.yaml"))
LWS_API = ("--api-versions", "leaderworkerset.x-k8s.io/v1")
NAMESPACE = "ml"  # what `rendered` installs into


def _resolve(env: dict[str, object], pod_index: int) -> dict[str, str]:
    """The variables a pod of that index sees: plain values as they are, the pod-index label filled in,
    secrets as placeholders (their values are not the launcher's business)."""
    out = {}
    for name, value in env.items():
        if isinstance(value, str):
            out[name] = value
        elif value == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}:
            out[name] = str(pod_index)
        else:
            assert "secretKeyRef" in value or "fieldRef" in value, f"{name}: unexpected value source {value}"
            out[name] = "from-a-secret"
    return out


def _nodes(docs: list[dict]) -> list[tuple[dict, dict[str, str], str]]:
    """(container, resolved environment, global-rank-0 address) for every learner node of the rendered release."""
    groups = find(docs, "LeaderWorkerSet")
    if not groups:
        sts = one(docs, "StatefulSet", "eureka-learner")
        c = pod_spec(sts)["containers"][0]
        leader = f"eureka-learner-0.eureka-learner-nodes.{NAMESPACE}.svc.cluster.local"
        return [(c, _resolve(env_of(c), i), leader) for i in range(sts["spec"]["replicas"])]
    (group,) = groups
    t, name = group["spec"]["leaderWorkerTemplate"], group["metadata"]["name"]
    leader = f"{name}-0.{name}.{NAMESPACE}"  # LeaderWorkerSet's LWS_LEADER_ADDRESS for group 0
    out = []
    for i in range(t["size"]):
        c = (t["leaderTemplate"] if i == 0 else t["workerTemplate"])["spec"]["containers"][0]
        lws = {"LWS_LEADER_ADDRESS": leader, "LWS_GROUP_SIZE": str(t["size"]), "LWS_WORKER_INDEX": str(i)}
        out.append((c, {**_resolve(env_of(c), i), **lws}, leader))
    return out


@pytest.mark.parametrize("args", [MULTI, (*MULTI, *LWS_API), LWS_VALUES],
                         ids=["statefulset", "leaderworkerset-served", "leaderworkerset-values"])
def test_every_node_joins_one_rendezvous_with_its_own_rank(args: tuple[str, ...],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = _nodes(rendered(*args))
    assert len(nodes) >= 2
    commands = []
    for index, (c, env, leader) in enumerate(nodes):
        assert c["command"] == ["python", "-m", "services.learner.launch"] and not c.get("args")
        assert importlib.util.find_spec(c["command"][2]) is not None  # a module of this tree (the image's)
        for name in [n for n in os.environ if n.startswith("EUREKA_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        cfg = load_settings(LearnerConfig, None, "learner")  # what the launcher reads: EUREKA_* (no --config)
        topo = topology(env, cfg.world_size, gpus=int(c["resources"]["limits"]["nvidia.com/gpu"]))
        assert (topo.nnodes, topo.node_rank, topo.master_addr) == (len(nodes), index, leader)
        assert topo.master_port == int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT))
        assert topo.world_size == cfg.world_size  # the launcher keeps the settings' world, validated with it
        assert "MASTER_ADDR" in env or "LWS_LEADER_ADDRESS" in env  # so launch runs torchrun, not a local spawn
        cmd = torchrun_command(cfg, topo)
        assert f"--node-rank={index}" in cmd and f"--nproc-per-node={topo.nproc_per_node}" in cmd
        assert cfg.resume and str(cfg.run_dir).startswith("/checkpoints/")  # a restarted group continues
        commands.append([a for a in cmd if not a.startswith("--node-rank=")])
    assert all(cmd == commands[0] for cmd in commands)  # one rendezvous endpoint and id, one shape
    assert f"--rdzv-endpoint={nodes[0][2]}:{nodes[0][1].get('MASTER_PORT', DEFAULT_MASTER_PORT)}" in commands[0]
