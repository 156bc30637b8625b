"""`--random-order SEED` shuffles modules and the tests in each, keeps a module's tests together, and is
the same order for the same seed."""

from __future__ import annotations

from types import SimpleNamespace

from tests.random_order import shuffled


def test_shuffled_is_a_seeded_permutation_that_keeps_modules_together() -> None:
    items = [SimpleNamespace(nodeid=f"tests/m{m}.py::t{t}") for m in range(4) for t in range(5)]
    order = shuffled(items, 3)  # type: ignore[arg-type]
    assert sorted(i.nodeid for i in order) == sorted(i.nodeid for i in items) and order != items
    modules = [i.nodeid.split("::")[0] for i in order]
    assert len({m for k, m in enumerate(modules) if k == 0 or modules[k - 1] != m}) == 4  # each module one run
    assert shuffled(items, 3) == order and shuffled(items, 4) != order  # type: ignore[arg-type]
