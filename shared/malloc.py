"""glibc malloc thresholds for the services, which move messages of hundreds of KB to a few MB all day.

With glibc's defaults such a block is served by a fresh `mmap` and unmapped when freed, or freed heap
above a few MB is trimmed back to the kernel, so the next message's memory is faulted in again page by
page, which costs more than copying it. Keeping blocks up to 32 MiB on the heap (glibc's own ceiling for
its adaptive threshold) and up to 256 MiB of freed heap in the process lets them be reused.

A process started with `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` keeps what it was given.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def reuse_freed_memory() -> bool:
    """Sets both thresholds for this process (glibc only, once at start); True when they were set."""
    if platform.libc_ver()[0] != "glibc" or any(os.environ.get(name) for name in _ENV):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def give_back_freed_memory() -> None:
    """Hands the freed heap of every malloc arena back to the kernel now (glibc only): for work that frees
    more than it will reuse soon, such as a ZeRO-3 publish's gathered buckets (freed in several arenas)."""
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(None).malloc_trim(0)
