"""The scaling decision: backlog target, bounds, step limits, cooldown and the staleness veto."""

from __future__ import annotations

import pytest

from services.autoscaler.core import Autoscaler, Observation, Policy, stale_fraction

POLICY = Policy(min_replicas=1, max_replicas=8, target_backlog_per_replica=10, max_step_up=2, max_step_down=1,
                cooldown_s=30, max_stale_fraction=0.2)


def obs(backlog: int, put: int = 0, stale: int = 0) -> Observation:
    return Observation(prompt_backlog=backlog, groups_put_total=put, groups_stale_total=stale)


def test_backlog_sets_the_target_within_the_step_limit() -> None:
    a = Autoscaler(POLICY)
    d = a.decide(current=1, obs=obs(45), now=0)  # wants ceil(45/10) = 5, may add 2
    assert (d.replicas, d.reason) == (3, "backlog")


def test_cooldown_holds_after_a_change_then_lets_the_next_step_through() -> None:
    a = Autoscaler(POLICY)
    assert a.decide(1, obs(45), now=0).replicas == 3
    held = a.decide(3, obs(45), now=10)
    assert (held.replicas, held.reason) == (3, "cooldown")
    assert a.decide(3, obs(45), now=31).replicas == 5


def test_steady_when_the_backlog_matches_and_no_cooldown_is_started() -> None:
    a = Autoscaler(POLICY)
    d = a.decide(3, obs(25), now=0)
    assert (d.replicas, d.reason) == (3, "steady")
    assert not d.changes(3)
    # Steady decisions do not start a cooldown: the next real change goes through at once.
    assert a.decide(3, obs(80), now=1).replicas == 5


def test_scale_down_is_limited_to_max_step_down_and_never_below_min() -> None:
    a = Autoscaler(POLICY)
    assert a.decide(6, obs(0), now=0).replicas == 5
    assert a.decide(5, obs(0), now=100).replicas == 4
    b = Autoscaler(POLICY)
    assert b.decide(1, obs(0), now=0).replicas == 1


def test_max_replicas_caps_a_huge_backlog() -> None:
    a = Autoscaler(POLICY)
    assert a.decide(7, obs(10_000), now=0).replicas == 8
    assert a.decide(8, obs(10_000), now=100).reason == "steady"


def test_out_of_bounds_is_corrected_at_once_even_in_cooldown() -> None:
    a = Autoscaler(POLICY)
    a.decide(1, obs(45), now=0)
    d = a.decide(12, obs(45), now=1)  # someone scaled by hand to 12
    assert (d.replicas, d.reason) == (8, "bounds")
    zero = Autoscaler(POLICY).decide(0, obs(0), now=0)
    assert (zero.replicas, zero.reason) == (1, "bounds")


def test_stale_groups_veto_growth_and_step_down() -> None:
    a = Autoscaler(POLICY)
    a.decide(4, obs(40, put=100, stale=0), now=0)  # first look: no history, steady at 4
    d = a.decide(4, obs(200, put=200, stale=50), now=100)  # 50 of 100 new groups went stale
    assert (d.replicas, d.reason) == (3, "stale")


def test_a_little_staleness_does_not_veto() -> None:
    a = Autoscaler(POLICY)
    a.decide(2, obs(20, put=100, stale=0), now=0)
    d = a.decide(2, obs(60, put=200, stale=10), now=100)  # 10% stale, under 20%
    assert (d.replicas, d.reason) == (4, "backlog")


@pytest.mark.parametrize(
    ("prev", "cur", "expected"),
    [
        (None, obs(0, 10, 5), 0.0),
        (obs(0, 10, 0), obs(0, 20, 5), 0.5),
        (obs(0, 10, 0), obs(0, 10, 0), 0.0),  # nothing put: no information
        (obs(0, 100, 50), obs(0, 5, 1), 0.0),  # counters went back (buffer restarted): no information
        (obs(0, 10, 0), obs(0, 11, 9), 1.0),  # stale may count groups put earlier: capped at 1
    ],
)
def test_stale_fraction(prev: Observation | None, cur: Observation, expected: float) -> None:
    assert stale_fraction(prev, cur) == pytest.approx(expected)
