"""The images' recipes (no Docker engine here): non-root user, pinned bases, sources that exist, the CLI entry,
and build steps that call commands the CLI really has."""

from __future__ import annotations

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
def test_build_steps_call_existing_cli_commands(path) -> None:  # noqa: ANN001
    words = {c.words for c in COMMANDS}
    for word, args in instructions(path):
        if word != "RUN":
            continue
        for m in re.finditer(r"\beureka ((?:[a-z][a-z-]* ?)+)", args):
            cmd = tuple(m.group(1).split())
            assert any(cmd[: len(w)] == w for w in words), f"{path.name} runs `eureka {' '.join(cmd)}`, not in the CLI"
