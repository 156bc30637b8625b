"""The `broadcast_worker` fault of `eureka chaos --broadcast true`: kill -9 of a rollout worker inside a weight
broadcast round.

The driver reads the learner's broadcast store (a TCPStore client, as a worker is): a round has begun when the hub
sets `go/<round>`, and a member is done with it when it sets `done/<round>/<ticket>`. The kill lands between the
two, in a round that every rollout worker is a member of and none is done with yet (the run's broadcast buckets are
small, so a round of the small world lasts long enough to be caught); a round caught later does not count, and the
next one is tried. The hub must fail or finish the round without the dead member and publish on; the restarted
worker pulls its first version over gRPC.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from eureka_cli.local.chaos_pipeline import Fault, Pipeline


def kill_mid_round(d: Pipeline, address: str, avoid: set[str], at_s: float, timeout_s: float) -> str:
    """kill -9 and restart of a member of a broadcast round while it is in the round; '' when done, else why not."""
    from shared.weights.group import BroadcastConfig, connect_store

    end = time.monotonic() + timeout_s
    store = None
    r = seen = late = errors = 0
    last_error = ""
    while time.monotonic() < end:
        lead = d.sup.procs["learner"]
        if not lead.alive or d.holding():
            store, r = None, 0  # a restarted learner hosts a new store, its rounds counted from 1
            time.sleep(0.5)
            continue
        try:
            if store is None:
                store = connect_store(BroadcastConfig(enabled=True, address=address), is_master=False, timeout_s=5.0)
                r = _next_round(store)
            if not store.check([f"go/{r}"]):
                time.sleep(0.001)
                continue
            members = json.loads(store.get(f"go/{r}"))["members"]  # tickets (the hub drops their join records)
            seen += 1
            with d.lock:
                # Every worker is a member and none is done yet: whichever is killed dies inside the round.
                inside = len(members) == d.cfg.rollout_workers and not any(store.check([f"done/{r}/{t}"])
                                                                          for t in members)
                target = d.live_rollouts(avoid) if inside else None
                if target is not None:
                    d.sup.signal(target, signal.SIGKILL)
                    d.sup.wait(target)
                    killed = time.monotonic()
                    d.restart(target)
                    fault = Fault("broadcast_worker", target, at_s,
                                  detail=f"killed in round {r} of {len(members)} members, before any was done")
                    d.record(fault)
            if target is None:  # a member was done (or a worker was not in it) before we got there: the next round
                r += 1
                late += 1
                continue
            d.background(d.serving, fault, target, killed)
            return ""
        except (RuntimeError, ValueError) as e:  # the store went away with its learner, or is not up yet
            store, r, errors, last_error = None, 0, errors + 1, str(e).splitlines()[0][:160]
            time.sleep(0.5)
    return (f"no broadcast round caught with a member in it within {timeout_s} s (rounds seen {seen}, a member "
            f"done first in {late}; store errors {errors}{': ' + last_error if last_error else ''})")


def _next_round(store: Any) -> int:
    """The first round the hub has not begun."""
    r = 1
    while store.check([f"go/{r}"]):
        r += 1
    return r
