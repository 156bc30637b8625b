"""`reuse_freed_memory`: freed multi-MB blocks are reused instead of faulted in again (counted in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES_PER_ROUND = 8 * (4 << 20) // 4096  # eight 4 MiB messages alive at once, as a weight pull or a put batch holds
SCRIPT = """
import resource, sys
from shared.malloc import reuse_freed_memory
tuned = reuse_freed_memory() if sys.argv[1] == "tuned" else False
def one_round():
    blocks = [b"x" * (4 << 20) for _ in range(8)]
    del blocks
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    one_round()
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env={**clean, **env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return bool(int(out[0])), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    tuned, faults = _faults("tuned")
    assert tuned
    assert faults < PAGES_PER_ROUND // 10, f"{faults} page faults in 5 rounds with the thresholds set"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_given_in_the_environment_are_kept() -> None:
    tuned, _ = _faults("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert not tuned
