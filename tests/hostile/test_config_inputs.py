"""Random YAML files, sections and `EUREKA_*` variables into `load_settings` of every command's settings class:
the only failure is a ValueError (pydantic's ValidationError is one) with a message, never another exception."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eureka_cli.commands import COMMANDS
from shared.config import flatten_fields, load_settings
from tests.hostile.conftest import OUTCOMES, count
from tests.hostile.protogen import TEXT

CLASSES = sorted({c.settings for c in COMMANDS if c.settings})
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def settings_class(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), TEXT,
                    st.sampled_from(["-1", "0", "1e309", "nan", "[1,", "{}", "true", "/nonexistent", "0.0.0.0"]))
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6)


def field_names(cls) -> list[str]:
    return [name for name, _ in flatten_fields(cls)]


@st.composite
def yaml_texts(draw, cls) -> str | bytes:
    """A config file: a mapping of real (dotted) fields to random values, random YAML text, or raw bytes."""
    kind = draw(st.sampled_from(["fields", "text", "bytes"]))
    if kind == "fields":
        names = draw(st.lists(st.sampled_from(field_names(cls)), max_size=4))
        data: dict = {}
        for dotted in names:
            head, _, tail = dotted.partition(".")
            value = draw(VALUES)
            if tail:
                data.setdefault(head, {})
                if isinstance(data[head], dict):
                    data[head][tail] = value
            else:
                data[head] = value
        if draw(st.booleans()):
            data[draw(TEXT)] = draw(VALUES)  # an unknown key
        return yaml.safe_dump(data, allow_unicode=True)
    if kind == "text":
        odd = ["a: [", ": : :", "- 1\n- 2", "x: !!python/object:os.system ls", "&a [*a]", "'", "a: b: c", "\t- x", "?"]
        return draw(st.one_of(st.text(max_size=80), st.sampled_from(odd)))
    return draw(st.binary(max_size=80))


def env_vars(cls) -> st.SearchStrategy[dict[str, str]]:
    names = [("EUREKA_" + n.replace(".", "__")).upper() for n in field_names(cls)]
    value = st.one_of(TEXT, st.sampled_from(["{", "[1,2]", '{"x": 1}', "null", "1e999", "-5", "yes"])).filter(
        lambda v: "\x00" not in v)  # the OS refuses NUL in the environment
    return st.dictionaries(st.sampled_from(names), value, max_size=3)


def attempt(cls, text: str | bytes, env: dict[str, str], section: str) -> None:
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as f:
        f.write(text.encode() if isinstance(text, str) else text)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("EUREKA_")}
    os.environ.update(env)
    try:
        load_settings(cls, f.name, section)
        OUTCOMES["config accepted"] += 1
    except ValueError as e:
        OUTCOMES["config ValueError"] += 1
        assert str(e).strip(), "a config error without a message"
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)
        Path(f.name).unlink()


@pytest.mark.parametrize("path", CLASSES)
@SETTINGS
@given(data=st.data())
def test_random_configs_give_value_errors_only(path, data) -> None:
    cls = settings_class(path)
    text = data.draw(yaml_texts(cls))
    env = data.draw(env_vars(cls))
    section = data.draw(st.sampled_from(["", "reward", "buffer", "learner", "rollout"]))
    count("configs (YAML + env)")
    attempt(cls, text, env, section)


def test_unreadable_config_paths_are_value_errors(tmp_path) -> None:
    for path in (tmp_path, tmp_path / "missing.yaml"):
        count("configs (YAML + env)")
        with pytest.raises(ValueError, match="config file"):
            load_settings(settings_class(CLASSES[0]), path, "")
