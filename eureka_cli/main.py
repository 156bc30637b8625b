"""`eureka`: one console script whose subcommands start each service or job.

Flags are generated from each entry point's pydantic settings (`--recipe.n-samples 4`); precedence is
flags > env `EUREKA_*` > `--config FILE.yaml` > defaults. Heavy imports happen only inside the entry.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from pydantic import ValidationError

from eureka_cli import __version__
from eureka_cli.commands import COMMANDS, Command


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _add_settings_flags(parser: argparse.ArgumentParser, settings_ref: str) -> None:
    from shared.config import flatten_fields

    settings = _load(settings_ref)
    old_names = {new: old for old, new in settings.renamed.items()}
    for path, info in flatten_fields(settings):
        flags = ["--" + name.replace("_", "-") for name in (path, old_names.get(path)) if name]
        is_bool = info.annotation is bool
        parser.add_argument(
            *flags,
            dest=path,
            default=argparse.SUPPRESS,
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            metavar="VALUE",
            help=f"{info.description or ''} (default: {info.default!r})".strip(),
        )


def build_parser(only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eureka", description="Eureka: MM-Eureka RL as services.")
    parser.add_argument("--version", action="version", version=f"eureka {__version__}")
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): root}
    for cmd in COMMANDS:
        for depth in range(1, len(cmd.words)):
            prefix = cmd.words[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                sub.add_argument("--version", action="version", version=f"eureka {__version__}")
                groups[prefix] = sub.add_subparsers(dest=f"command_{depth}", metavar="COMMAND")
        p = groups[cmd.words[:-1]].add_parser(cmd.words[-1], help=cmd.help, description=cmd.help)
        p.add_argument("--version", action="version", version=f"eureka {__version__}")
        p.set_defaults(_command=cmd)
        if cmd.settings:
            p.add_argument("--config", default=None, help="YAML file (its section or top level)")
            if only is None or only == cmd.words:
                _add_settings_flags(p, cmd.settings)
    return parser


def _matching_command(argv: list[str]) -> tuple[str, ...] | None:
    words = tuple(a for a in argv if not a.startswith("-"))
    for cmd in COMMANDS:
        if words[: len(cmd.words)] == cmd.words:
            return cmd.words
    return None


def run(cmd: Command, args: argparse.Namespace) -> int:
    if cmd.settings is None or cmd.entry is None:
        print(f"eureka {' '.join(cmd.words)}: not built yet", file=sys.stderr)
        return 2
    from shared.config import load_settings, nest_overrides, parse_flag_value

    flat = {k: parse_flag_value(v) for k, v in vars(args).items() if "." in k or not k.startswith(("_", "command", "config"))}
    try:
        settings = load_settings(_load(cmd.settings), args.config, cmd.section, **nest_overrides(flat))
    except (ValidationError, ValueError) as e:
        print(f"eureka {' '.join(cmd.words)}: invalid configuration:\n{_describe(e)}", file=sys.stderr)
        return 2
    return int(_load(cmd.entry)(settings) or 0)


def _describe(e: ValueError) -> str:
    """The error without the offending values: an input may hold the service token or the Redis password."""
    if not isinstance(e, ValidationError):
        return str(e)
    errors = e.errors(include_input=False)
    return "\n".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in errors)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=_matching_command(argv))
    args = parser.parse_args(argv)
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 0 if not argv else 2
    return run(cmd, args)
