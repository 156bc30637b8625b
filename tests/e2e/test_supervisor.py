"""The supervisor's death rule on real child processes: a process that `finishes` may end with 0 at any time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eureka_cli.local.supervisor import ProcessDied, Supervisor


@pytest.mark.parametrize(("code", "finishes", "dies"), [(0, True, False), (3, True, True), (0, False, True)])
def test_check_counts_an_exit_as_a_death_unless_a_finishing_process_ended_with_0(
    tmp_path: Path, code: int, finishes: bool, dies: bool
) -> None:
    sup = Supervisor(tmp_path)
    sup.start("job", [sys.executable, "-c", f"raise SystemExit({code})"], finishes=finishes)
    assert sup.wait("job", timeout_s=30) == code
    if dies:
        with pytest.raises(ProcessDied, match=f"job exited with code {code}"):
            sup.check()
    else:
        sup.check()


def test_a_restart_keeps_finishes(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    sup.start("job", [sys.executable, "-c", "raise SystemExit(0)"], finishes=True)
    sup.wait("job", timeout_s=30)
    again = sup.start("job", [])
    assert again.finishes and again.argv == sup.procs["job"].argv
    sup.wait("job", timeout_s=30)
    sup.check()
