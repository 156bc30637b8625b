"""`pytest --random-order SEED`: test modules, and the tests inside each, in an order shuffled with SEED.

The check that no test depends on another having run first (what pytest-randomly does, without its
reseeding of `random`). Tests of one module stay together, so module-scoped fixtures start once.
"""

from __future__ import annotations

import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--random-order", type=int, default=None, metavar="SEED",
                     help="shuffle test modules and the tests in each with SEED (an order-independence check)")


def shuffled(items: list[pytest.Item], seed: int) -> list[pytest.Item]:
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    groups = list(modules.values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    return [item for group in groups for item in group]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--random-order")
    if seed is not None:
        items[:] = shuffled(items, seed)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--random-order")
    return None if seed is None else f"random order: --random-order {seed}"
