"""The `eureka` console script, run as a real process."""

from __future__ import annotations

import subprocess
import sys

from eureka_cli.commands import COMMANDS


def _eureka(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eureka_cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_top_level_command() -> None:
    out = _eureka("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd.words[0] in out.stdout


def test_version() -> None:
    out = _eureka("--version")
    assert out.returncode == 0 and out.stdout.startswith("eureka ")


def test_every_subcommand_has_help_and_version() -> None:
    for cmd in COMMANDS:
        out = _eureka(*cmd.words, "--help")
        assert out.returncode == 0, (cmd.words, out.stderr)
        assert "--version" in out.stdout
        assert _eureka(*cmd.words, "--version").returncode == 0


def test_unbuilt_commands_say_so() -> None:
    for cmd in COMMANDS:
        if cmd.entry is None:
            out = _eureka(*cmd.words)
            assert out.returncode == 2 and "not built yet" in out.stderr
