from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import deadline, stuck
from tests.factories import shadow

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
