"""A small pool of scoring worker processes with a hard per-item timeout and a bounded number of pending items.

One driver thread per worker process takes items from a shared queue, sends each to its worker and
waits at most `item_timeout_s`; a worker that overruns (or dies) is killed and replaced while the other
drivers keep going. Admission is all-or-nothing per request: when queued + in-flight items would exceed
`max_pending_items`, the request is refused (`PoolBusy`) instead of growing an unbounded queue.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from services.reward.config import RewardConfig
from services.reward.core import ItemInput, ItemScore, Status
from services.reward.metrics import reward_metrics
from services.reward.worker import READY, run
from shared.logs import get_logger

log = get_logger("reward.pool")

_START_TIMEOUT_S = 120.0
_WORKER_MEMORY_MB = 2048
_CHUNK = 4  # items a driver hands its worker at once: fewer round trips, little imbalance at a batch's end


class PoolBusy(Exception):
    """Too many items pending; the caller should retry later."""


class PoolClosed(Exception):
    """The pool is stopping or not started."""


@dataclass
class _Task:
    item: ItemInput
    future: Future


class _Driver(threading.Thread):
    """Owns one worker process; replaces it after a timeout or a crash."""

    def __init__(self, index: int, pool: "WorkerPool") -> None:
        super().__init__(name=f"reward-driver-{index}", daemon=True)
        self.index = index
        self.pool = pool
        self.proc: mp.process.BaseProcess | None = None
        self.conn = None
        self.ready = threading.Event()
        self.stopped = False  # set when this driver gave up; it takes no more items

    def _spawn(self) -> None:
        cfg = self.pool.cfg
        parent, child = self.pool.ctx.Pipe()
        # math-verify's own alarms are only a backstop: the hard timeout decides, so a slow item is
        # reported as TIMEOUT (visible) instead of a silent 0 from an alarm that fired under CPU load.
        inner = max(1, math.ceil(cfg.item_timeout_s))
        proc = self.pool.ctx.Process(
            target=run, args=(child, cfg.pretrain_min_think_chars, inner, _WORKER_MEMORY_MB),
            name=f"reward-worker-{self.index}", daemon=True,
        )
        proc.start()
        child.close()
        if not parent.poll(_START_TIMEOUT_S) or parent.recv() != READY:
            proc.kill()
            raise RuntimeError(f"scoring worker {self.index} did not start within {_START_TIMEOUT_S}s")
        self.proc, self.conn = proc, parent
        self.ready.set()
        self.pool.update_size()

    def _kill(self) -> None:
        self.ready.clear()
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None
        self.pool.update_size()

    def _replace(self, why: str, **fields: object) -> None:
        log.warning(why, worker=self.index, **fields)
        self.pool.metrics.worker_restarts.inc()
        self._kill()
        self._spawn()

    def _score(self, tasks: list[_Task]) -> None:
        """Send a chunk to the worker, which streams one score back per item; each gets the full timeout.

        Chunks spare a process round trip per item (what costs most on a busy machine). On a timeout or a
        crash the item at fault scores 0, the worker is replaced, and the rest of the chunk is re-sent.
        """
        timeout = self.pool.cfg.item_timeout_s
        if not self.proc.is_alive():  # died while idle (OOM killer, kill -9): replace it before using it
            self._replace("scoring worker found dead; replacing it")
        while tasks:
            try:
                self.conn.send([(t.item.response, t.item.gold, t.item.mode, t.item.options) for t in tasks])
                while tasks and self.conn.poll(timeout):
                    tasks.pop(0).future.set_result(self.conn.recv())
            except (EOFError, OSError) as e:
                tasks.pop(0).future.set_result(
                    ItemScore(0.0, 0.0, "", Status.INVALID, "verifying this item crashed the scoring worker process; scored 0"))
                self._replace("scoring worker died; replacing it", error=type(e).__name__)
                continue
            if tasks:
                tasks.pop(0).future.set_result(
                    ItemScore(0.0, 0.0, "", Status.TIMEOUT, f"verification took longer than {timeout:g}s; scored 0"))
                self.pool.metrics.timeouts.inc()
                self._replace("item timed out; killing its scoring worker", timeout_s=timeout)

    def _take(self) -> list[_Task] | None:
        """The next chunk: one blocking get, then more already queued, up to a fair share per worker (None = stop)."""
        first = self.pool.tasks.get()
        if first is None:
            return None
        chunk = [first]
        share = max(1, min(_CHUNK, (self.pool.tasks.qsize() + 1) // self.pool.cfg.workers))
        while len(chunk) < share:
            try:
                task = self.pool.tasks.get_nowait()
            except queue.Empty:
                break
            if task is None:
                self.pool.tasks.put(None)  # leave the stop signal for the next _take
                break
            chunk.append(task)
        return [t for t in chunk if t.future.set_running_or_notify_cancel()]

    def run(self) -> None:
        try:
            self._spawn()
            while (chunk := self._take()) is not None:
                try:
                    self._score(chunk)
                except Exception as e:  # the replacement worker failed to start: never leave a caller waiting
                    for task in chunk:
                        task.future.set_exception(PoolClosed(f"scoring worker {self.index} could not be replaced ({e})"))
                    raise
        except Exception as e:
            self.stopped = True
            log.exception("worker driver stopped", worker=self.index)
            if not self.pool.accepting():
                self.pool.fail_pending(e)
        finally:
            self._kill()


class WorkerPool:
    """`score(items)` -> scores in order; thread-safe; `start()` then `close()`."""

    def __init__(self, cfg: RewardConfig) -> None:
        self.cfg = cfg
        self.ctx = mp.get_context(cfg.start_method)
        if cfg.start_method == "forkserver":
            self.ctx.set_forkserver_preload(["services.reward.worker", "math_verify"])
        self.tasks: queue.Queue[_Task | None] = queue.Queue()
        self.metrics = reward_metrics()
        self._lock = threading.Lock()
        self._pending = 0
        self._open = False
        self._drivers = [_Driver(i, self) for i in range(cfg.workers)]

    def start(self, wait_s: float = _START_TIMEOUT_S) -> "WorkerPool":
        self._open = True
        for d in self._drivers:
            d.start()
        end = time.monotonic() + wait_s
        for d in self._drivers:
            d.ready.wait(max(0.0, end - time.monotonic()))
        return self

    def all_started(self) -> bool:
        return all(d.ready.is_set() for d in self._drivers)

    def ready(self) -> bool:
        """Open with at least one live worker (a worker being replaced after a timeout does not flap readiness)."""
        return self._open and self.live_workers() > 0

    def accepting(self) -> bool:
        """Open with at least one driver thread able to take items (it may be replacing its worker)."""
        return self._open and any(d.is_alive() and not d.stopped for d in self._drivers)

    def live_workers(self) -> int:
        return sum(d.ready.is_set() for d in self._drivers)

    def update_size(self) -> None:
        self.metrics.pool_workers.set(self.live_workers())

    def pending(self) -> int:
        return self._pending

    def score(self, items: list[ItemInput]) -> list[ItemScore]:
        with self._lock:
            if not self.accepting():
                raise PoolClosed("the reward service is stopping or has no scoring worker; retry on another replica")
            if self._pending + len(items) > self.cfg.max_pending_items:
                raise PoolBusy(
                    f"{self._pending} items are already pending and this request adds {len(items)} "
                    f"(limit {self.cfg.max_pending_items}); retry later or send smaller batches"
                )
            self._pending += len(items)
            self.metrics.pending_items.set(self._pending)
        try:
            tasks = [_Task(item, Future()) for item in items]
            for t in tasks:
                self.tasks.put(t)
            return [t.future.result() for t in tasks]
        finally:
            with self._lock:
                self._pending -= len(items)
                self.metrics.pending_items.set(self._pending)

    def fail_pending(self, error: Exception) -> None:
        """Fail every queued task (a driver died): callers get an error instead of waiting forever."""
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                return
            if task is not None and task.future.set_running_or_notify_cancel():
                task.future.set_exception(PoolClosed(f"the worker pool failed ({error}); retry later"))

    def close(self) -> None:
        with self._lock:
            self._open = False
        for _ in self._drivers:
            self.tasks.put(None)
        for d in self._drivers:
            d.join(timeout=self.cfg.item_timeout_s + 5)
