"""The end-of-run audit of `eureka chaos`: every accepted trajectory group and every prompt accounted for.

Sources of truth: the buffer's Redis keys (`groups:ids` = every accepted put, `groups:dropped`,
the `groups` stream = still waiting, `cursor`, `prompts`, `prompts:dead`, `stats`) and the
learner's run dir (`trained_ids.jsonl`, `checkpoint.json`). Read after the learner's last step.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from shared.redis_proc import RedisProc

PREFIX = "eureka:"
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def audit(redis: RedisProc, learner_dir: Path, steps: int) -> dict:
    """lost = accepted groups neither trained, dropped nor still waiting; duplicated = trained twice,
    trained and dropped, or a second accepted group for one prompt."""
    r = redis.client()
    accepted = {_s(g): _s(e) for g, e in r.hgetall(PREFIX + "groups:ids").items()}  # group_id -> entry id
    dropped = {_s(e): _s(why) for e, why in r.hgetall(PREFIX + "groups:dropped").items()}
    waiting = {_s(e) for e, _ in r.xrange(PREFIX + "groups")}
    trained_list = [e for rec in _jsonl(learner_dir / "trained_ids.jsonl") for e in rec["entry_ids"]]
    trained = set(trained_list)
    entries = set(accepted.values())
    pending_at_end = waiting - trained
    lost = entries - trained - set(dropped) - pending_at_end
    per_prompt = Counter(g.rsplit("#", 1)[0] for g in accepted)
    dup_trained = len(trained_list) - len(trained)
    dup_dropped = len(trained & set(dropped))
    dup_prompts = sum(n - 1 for n in per_prompt.values() if n > 1)
    ckpt = json.loads((learner_dir / "checkpoint.json").read_text())
    stats = {_s(k): int(v) for k, v in r.hgetall(PREFIX + "stats").items()}
    enqueued = int(r.get(PREFIX + "cursor") or 0)
    dead = r.xlen(PREFIX + "prompts:dead")
    queued = r.xlen(PREFIX + "prompts")
    r.close()
    return {
        "acknowledged": len(entries),
        "trained": len(trained),
        "dropped": len(dropped),
        "dropped_filtered": sum(1 for w in dropped.values() if "filtered" in w),
        "dropped_stale": sum(1 for w in dropped.values() if "stale" in w),
        "pending_at_end": len(pending_at_end),
        "lost": len(lost),
        "lost_ids": sorted(lost)[:20],
        "duplicated": dup_trained + dup_dropped + dup_prompts,
        "unknown_trained": len(trained - entries),  # trained ids the buffer never accepted (must be 0)
        "prompts_enqueued": enqueued,
        "prompts_completed": len(per_prompt),
        "prompts_dead_lettered": dead,
        "prompts_queued_at_end": queued,
        "prompts_unaccounted": enqueued - len(per_prompt) - dead - queued,
        "prompts_reclaimed": stats.get("prompts_reclaimed_total", 0),
        "puts_duplicate": stats.get("groups_duplicate_total", 0),
        "final_policy_version": ckpt["policy_version"],
        "final_step": ckpt["step"],
        "steps_ok": ckpt["step"] == steps and ckpt["policy_version"] == steps,
    }


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def figures_table(report: dict) -> str:
    """The markdown figures of one chaos run (what docs/RELIABILITY.md shows between its markers)."""
    rows = ["| fault | planned | delivered | down (fault → serving), max s | progress after restart, mean / max s |",
            "|---|---|---|---|---|"]
    for kind, f in report["faults"].items():
        rows.append(f"| {kind} | {f['planned']} | {f['n']} | {f['down_s_max']} | "
                    f"{f['progress_s_mean']} / {f['progress_s_max']} |")
    r = report
    lines = [
        f"Seed {r['seed']}, {r['steps']} steps, {r['faults_delivered']} of {r['faults_planned']} planned faults "
        f"delivered ({r['kills']} of {r['kills_planned']} kills) in {r['chaos_time_s']} s under faults, "
        f"{r['held_after_training_s']} s of it holding the trained pipeline "
        f"({r['wall_time_s']} s with both evaluations); learner resumes from a checkpoint (log lines, one per rank): "
        f"{r['learner_resumed_from_checkpoint']}; unplanned exits: {len(r['unplanned_exits'])}; "
        f"{r['rollout_backend']} rollout workers, a learner of {r['learner_nodes']} node(s); 1-minute load average "
        f"under faults {_load(r.get('load_average_1m'))}.",
        "",
        *rows,
        "",
        "| audit | value |",
        "|---|---|",
        f"| groups acknowledged (accepted puts) | {r['acknowledged']} |",
        f"| trained | {r['trained']} |",
        f"| dropped (filtered / stale) | {r['dropped']} ({r['dropped_filtered']} / {r['dropped_stale']}) |",
        f"| pending at end (put, not yet sampled) | {r['pending_at_end']} |",
        f"| **lost / duplicated** | **{r['lost']} / {r['duplicated']}** |",
        f"| prompts enqueued = completed + dead-lettered + queued | {r['prompts_enqueued']} = "
        f"{r['prompts_completed']} + {r['prompts_dead_lettered']} + {r['prompts_queued_at_end']} "
        f"(unaccounted {r['prompts_unaccounted']}) |",
        f"| prompts reclaimed after a lease / duplicate puts | {r['prompts_reclaimed']} / {r['puts_duplicate']} |",
        f"| final policy version / steps | {r['final_policy_version']} / {r['steps']} |",
        f"| held-out accuracy base → final | {r['base_accuracy']:.3f} → {r['final_accuracy']:.3f} |",
    ]
    return "\n".join(lines)


def _load(load: dict | None) -> str:
    return f"mean {load['mean']}, max {load['max']}" if load else "not sampled"


def rewrite_docs(path: Path, table: str) -> None:
    """Replace what lies between the chaos markers of `path` with `table`."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
    path.write_text(new)
