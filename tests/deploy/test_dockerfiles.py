"""The images' recipes (no Docker engine here): non-root user, pinned bases, sources that exist, the CLI entry,
and build steps that call commands the CLI really has."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from eureka_cli.commands import COMMANDS
from tests.deploy.helpers import REPO

DOCKERFILES = [REPO / "deploy" / "Dockerfile", REPO / "deploy" / "Dockerfile.gpu"]


def instructions(path) -> list[tuple[str, str]]:  # noqa: ANN001
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_the_non_root_user_the_chart_expects(path) -> None:  # noqa: ANN001
    users = [args for word, args in instructions(path) if word == "USER"]
    assert users and users[-1] == "10001:10001"  # podSecurityContext.runAsUser / compose `user`
    assert "useradd --uid 10001" in path.read_text()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned(path) -> None:  # noqa: ANN001
    (base,) = [args for word, args in instructions(path) if word == "FROM"]
    image = base.split()[0]
    assert ":" in image and not image.endswith(":latest"), image


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_the_entry_point_is_eureka(path) -> None:  # noqa: ANN001
    ins = instructions(path)
    for word, args in ins:
        if word == "COPY":
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert (REPO / src).exists(), f"{path.name}: COPY {src} does not exist"
    assert ("ENTRYPOINT", '["eureka"]') in ins
    assert "deploy/healthcheck.py" in path.read_text()  # the compose healthchecks and TLS probes run it


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_steps_call_existing_cli_commands_with_real_flags(path) -> None:  # noqa: ANN001
    from shared.config import flatten_fields

    calls = 0
    for word, args in instructions(path):
        if word != "RUN":
            continue
        for step in args.split("&&"):
            tokens = shlex.split(step)
            if not tokens or tokens[0] != "eureka":
                continue
            calls += 1
            matches = [c for c in COMMANDS if tuple(tokens[1 : 1 + len(c.words)]) == c.words]
            assert matches, f"{path.name} runs `{step.strip()}`, which is not a command of the CLI"
            cmd = matches[0]
            assert cmd.settings, f"`eureka {' '.join(cmd.words)}` is not built yet"
            module, _, name = cmd.settings.partition(":")
            fields = {p for p, _ in flatten_fields(getattr(importlib.import_module(module), name))}
            for flag in (t for t in tokens if t.startswith("--")):
                assert flag[2:].replace("-", "_") in fields, f"{path.name}: `{flag}` is not a flag of {cmd.words}"
    assert calls >= 2  # make-base and data make-synthetic
