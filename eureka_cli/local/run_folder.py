"""The run folder of `eureka up` and `eureka chaos`: a new timestamped one under runs/, or the one named.

Without `--run-dir` every invocation gets its own folder (`runs/demo-20261202-141500`, a `-2` suffix when
two start in the same second), so a second `make demo` or `eureka chaos` simply runs again. A named folder
that already holds a run is refused, or continued where the command supports `--resume`.
"""

from __future__ import annotations

import time
from pathlib import Path

RUNS = Path("runs")


class RunFolderRefused(ValueError):
    """The named run folder cannot be used as asked (the message says what to do)."""


def claim(run_dir: Path | None, prefix: str, *, resume: bool, holds_run: str, command: str,
          resumable: bool = True) -> Path:
    """The absolute run folder to use, created. `holds_run` is the file or folder whose presence means
    a run is already there."""
    if run_dir is None:
        if resume:
            raise RunFolderRefused(f"eureka {command}: --resume continues a named run; pass its --run-dir "
                                   f"(the folder `eureka {command}` printed when it started)")
        return _new(prefix)
    run_dir = run_dir.resolve()
    if (run_dir / holds_run).exists() and not resume:
        hint = "pass --resume to continue it or " if resumable else ""
        raise RunFolderRefused(f"eureka {command}: {run_dir} already holds a run; {hint}choose another --run-dir "
                               f"(or leave --run-dir out for a new folder under {RUNS}/)")
    if resume and not resumable:
        raise RunFolderRefused(f"eureka {command}: a run cannot be resumed; leave --resume out")
    if resume and not (run_dir / holds_run).exists():
        raise RunFolderRefused(f"eureka {command}: {run_dir} holds no run to resume; leave --resume out to start one")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _new(prefix: str) -> Path:
    RUNS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1, 1000):
        path = RUNS / (f"{prefix}-{stamp}" if n == 1 else f"{prefix}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()
    raise RunFolderRefused(f"too many runs named {prefix}-{stamp} under {RUNS.resolve()}")
