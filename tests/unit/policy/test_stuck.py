from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import END_OF_TIME, Timestamp
from brupop.policy.rollout import NodeInfo, RolloutConfig, plan
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import DEFAULT_STUCK_AFTER, deadline, stuck
from tests.factories import shadow
from tests.pools import env_pools

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
S = ShadowState
LIMIT = timedelta(minutes=45)


def stepping(spec: ShadowState, state: ShadowState, *, started: datetime | None) -> BottlerocketShadow:
    found = shadow("n1", spec=spec, state=state, current="1.0.0", target="1.1.0", spec_version="1.1.0")
    stamp = Timestamp.from_datetime(started) if started else None
    return replace(found, spec=replace(found.spec, state_transition_timestamp=stamp))


def test_a_step_past_its_deadline_is_stuck_and_one_failure() -> None:
    node = stepping(S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE, started=NOW - timedelta(hours=1))
    assert deadline(node, LIMIT) == NOW - timedelta(minutes=15)
    found = stuck(node, node="n1", limit=LIMIT, now=NOW)
    assert found is not None
    assert (found.heading_to, found.since) == (S.REBOOTED_INTO_UPDATE, NOW - timedelta(hours=1))
    failure = found.failure()
    assert (failure.node, failure.at.instant) == ("n1", NOW - timedelta(minutes=15))
    assert "not RebootedIntoUpdate within 45m" in failure.reason
    assert found.failure() == stuck(node, node="n1", limit=LIMIT, now=NOW + timedelta(hours=1)).failure()  # type: ignore[union-attr]
    assert found.message() == "n1 has not reached RebootedIntoUpdate since 2025-06-01T11:00:00+00:00"


def test_error_reset_waiting_to_be_idle_is_timed_too() -> None:
    node = stepping(S.IDLE, S.ERROR_RESET, started=NOW - timedelta(hours=2))
    assert stuck(node, node="n1", limit=LIMIT, now=NOW) is not None


def test_not_stuck_before_the_deadline_outside_a_cycle_or_without_a_limit_or_start() -> None:
    fresh = stepping(
        S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE, started=NOW - timedelta(minutes=44)
    )
    assert stuck(fresh, node="n1", limit=LIMIT, now=NOW) is None
    idle = stepping(S.IDLE, S.IDLE, started=NOW - timedelta(days=1))
    assert deadline(idle, LIMIT) is None
    old = stepping(S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE, started=NOW - timedelta(days=1))
    assert deadline(old, None) is None
    unknown_start = stepping(S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE, started=None)
    assert stuck(unknown_start, node="n1", limit=LIMIT, now=NOW) is None


@given(
    spec=st.sampled_from(list(S)),
    state=st.sampled_from(list(S)),
    minutes_ago=st.integers(0, 300),
    limit=st.none() | st.integers(1, 120).map(lambda m: timedelta(minutes=m)),
)
def test_stuck_exactly_when_a_cycle_step_outlasts_its_limit(
    spec: ShadowState, state: ShadowState, minutes_ago: int, limit: timedelta | None
) -> None:
    node = stepping(spec, state, started=NOW - timedelta(minutes=minutes_ago))
    found = stuck(node, node="n1", limit=limit, now=NOW)
    expected = limit is not None and is_active(node) and timedelta(minutes=minutes_ago) >= limit
    assert (found is not None) == expected
    if found is not None:
        assert found.deadline <= NOW
        assert found.failure().at.instant == found.deadline


# The per-state defaults (the controller's STUCK_AFTER_<STATE>) and how a rollout pass uses them.

LABELS = {"bottlerocket.aws/updater-interface-version": "2.0.0"}


@pytest.mark.parametrize(
    ("spec", "state"),
    [
        (S.STAGED_AND_PERFORMED_UPDATE, S.IDLE),  # the agent never staged (its pod cannot start)
        (S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE),  # never back after the reboot
        (S.MONITORING_UPDATE, S.REBOOTED_INTO_UPDATE),
        (S.IDLE, S.MONITORING_UPDATE),
        (S.IDLE, S.ERROR_RESET),  # a failed node that never releases its cordon
    ],
)
def test_every_state_the_agent_must_reach_has_a_default_deadline(
    spec: ShadowState, state: ShadowState
) -> None:
    node = stepping(spec, state, started=NOW)
    assert deadline(node, DEFAULT_STUCK_AFTER[spec]) == NOW + DEFAULT_STUCK_AFTER[spec]


def test_the_defaults_leave_room_for_a_whole_drain_and_reboot() -> None:
    assert DEFAULT_STUCK_AFTER[S.REBOOTED_INTO_UPDATE] > timedelta(minutes=30 + 30)  # drain + reboot limits
    assert set(DEFAULT_STUCK_AFTER) == {
        S.STAGED_AND_PERFORMED_UPDATE,
        S.REBOOTED_INTO_UPDATE,
        S.MONITORING_UPDATE,
        S.IDLE,
    }


def test_a_step_that_began_at_the_end_of_time_never_times_out_rather_than_overflowing() -> None:
    last = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    node = stepping(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, started=last)
    assert deadline(node, LIMIT) == END_OF_TIME
    assert stuck(node, node="n1", limit=LIMIT, now=END_OF_TIME - timedelta(seconds=1)) is None


def test_a_stuck_node_is_reported_keeps_its_slot_and_the_pass_wakes_at_the_next_deadline() -> None:
    limits = {**DEFAULT_STUCK_AFTER, S.STAGED_AND_PERFORMED_UPDATE: timedelta(minutes=10)}
    late = stepping(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, started=NOW - timedelta(minutes=11))
    late = replace(late, metadata={"name": "brs-late", "ownerReferences": [{"name": "late"}]})
    soon = stepping(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, started=NOW - timedelta(minutes=4))
    idle = shadow("idle", current="1.0.0", target="1.1.0")
    nodes = {n: NodeInfo(name=n, uid=n, labels=LABELS) for n in ("late", "n1", "idle")}
    shadows = [late, soon, idle]
    pools = env_pools(shadows, nodes, limit=2, now=NOW)
    result = plan(shadows, nodes, now=NOW, config=RolloutConfig(stuck_after=limits), pools=pools)
    assert list(result.stuck) == ["brs-late"]
    assert result.stuck["brs-late"].deadline == NOW - timedelta(minutes=1)
    assert result.started == ()
    assert result.active == 2
    assert result.wake_at == NOW + timedelta(minutes=6)
    assert ShadowSpec() not in result.spec_changes.values()
