"""Main of one scoring worker process: receive chunks of items on a pipe, score them on this main thread, send scores.

math-verify guards parse/verify with `signal.alarm`, which only works on a main thread; the parent's
hard per-item timeout (kill and replace) covers what the alarm cannot interrupt (a huge integer power).
"""

from __future__ import annotations

import resource
import signal
from multiprocessing.connection import Connection

from services.reward.core import ItemInput, ItemScore, Status, score_item

READY = "ready"


def _limit_memory(mb: int) -> None:
    if mb:
        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run(conn: Connection, min_think_chars: int, inner_timeout_s: int, memory_mb: int) -> None:
    """Score chunks of items until the pipe closes or a None arrives, sending one score per item as it is done.

    The parent kills this process on a timeout.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    _limit_memory(memory_mb)
    score_item(ItemInput("<think>x</think><answer>1/2</answer>", "0.5"), min_think_chars, inner_timeout_s)  # warm sympy
    conn.send(READY)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        for fields in msg:
            try:
                score = score_item(ItemInput(*fields), min_think_chars, inner_timeout_s)
            except Exception as e:  # the worker's edge: report the item as failed instead of dying on it
                score = ItemScore(0.0, 0.0, "", Status.INVALID, f"verification failed ({type(e).__name__}); scored 0")
            conn.send(score)
