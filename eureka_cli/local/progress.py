"""The terminal progress line of `eureka up`: step, version, reward, accuracy, format, length, staleness, tokens/s, ETA."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def scrape_total(urls: list[str], metric: str) -> float:
    """Sum of a counter over several /metrics endpoints (unreachable ones count 0)."""
    total = 0.0
    for url in urls:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()  # noqa: S310 - loopback only
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric:
                    total += sample.value
    return total


class Progress:
    """Follows the learner's metrics.jsonl and shows one tqdm bar with the latest step's figures."""

    def __init__(self, metrics_path: Path, total_steps: int, rollout_metrics_urls: list[str]) -> None:
        from tqdm import tqdm

        self.path = metrics_path
        self.urls = rollout_metrics_urls
        self.offset = 0
        self.rows: list[dict] = []
        self.bar = tqdm(total=total_steps, desc="RL", unit="step", dynamic_ncols=True)
        self._tokens = (time.monotonic(), 0.0)

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            chunk = f.read()
        complete, _, _ = chunk.rpartition("\n")
        if not complete:
            return
        self.offset += len(complete) + 1
        for line in complete.splitlines():
            self.rows.append(json.loads(line))
        last = self.rows[-1]
        now, tokens = time.monotonic(), scrape_total(self.urls, "eureka_rollout_tokens_total")
        rate = (tokens - self._tokens[1]) / max(now - self._tokens[0], 1e-9)
        self._tokens = (now, tokens)
        self.bar.n = int(last.get("step", len(self.rows)))
        self.bar.set_postfix(
            v=last.get("policy_version"), reward=_f(last.get("reward")), acc=_f(last.get("accuracy")),
            fmt=_f(last.get("format")), len=_f(last.get("response_tokens"), 1), stale=_f(last.get("staleness_mean"), 1),
            tok_s=f"{rate:.0f}",
        )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
