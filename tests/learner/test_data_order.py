"""The shuffled data order: a permutation per epoch, reshuffled each epoch, a function of the cursor alone."""

from __future__ import annotations

from services.learner.driver import Dataset
from shared.dataset import read_jsonl


def test_each_epoch_reads_every_prompt_once_in_a_new_order(dataset) -> None:
    records = read_jsonl(dataset).records
    d = Dataset(records, seed=7)
    n = len(records)
    epochs = [[d.prompt(c).prompt_id for c in range(e * n, (e + 1) * n)] for e in range(3)]
    for e, ids in enumerate(epochs):
        assert sorted(ids) == sorted(f"train:{e}:{i}" for i in range(n))  # every prompt once
    orders = [[i.rsplit(":", 1)[1] for i in ids] for ids in epochs]
    assert orders[0] != [str(i) for i in range(n)]  # shuffled, not file order
    assert orders[0] != orders[1] != orders[2]  # reshuffled per epoch
    assert Dataset(records, seed=8).order(0) != d.order(0)  # the seed decides


def test_a_restart_at_any_cursor_neither_skips_nor_repeats(dataset) -> None:
    """What `--resume` does: a new process (a new Dataset) continues from the buffer's cursor."""
    records = read_jsonl(dataset).records
    n = len(records)
    straight = [Dataset(records, seed=1).prompt(c).prompt_id for c in range(2 * n)]
    for cut in (1, n - 1, n + 3):
        first = Dataset(records, seed=1)
        resumed = Dataset(records, seed=1)
        got = [first.prompt(c).prompt_id for c in range(cut)] + [resumed.prompt(c).prompt_id for c in range(cut, 2 * n)]
        assert got == straight
