from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.policy import Failure
from brupop.models.shadow import ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.budget import Budget, BudgetState, account, failure_of, resume_command, resumed_at
from brupop.policy.limits import Count, Percent
from tests.factories import shadow

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
RESUMED = "brupop.bottlerocket.aws/resumed-at"
TWO_PER_HOUR = Budget(max_failures=Count(2), window=timedelta(hours=1))


def failed(node: str, minutes_ago: float) -> Failure:
    return Failure(node=node, at=Timestamp.from_datetime(NOW - timedelta(minutes=minutes_ago)), reason="boom")


def run(
    state: BudgetState,
    *observed: Failure,
    budget: Budget | None = TWO_PER_HOUR,
    size: int = 10,
    resumed: datetime | None = None,
    now: datetime = NOW,
) -> BudgetState:
    return account(
        budget, pool="web", previous=state, observed=observed, pool_size=size, resumed=resumed, now=now
    )


def test_the_second_failure_within_the_window_halts_the_pool() -> None:
    one = run(BudgetState(), failed("a", 30))
    assert one.halt is None
    assert len(one.failures) == 1
    assert run(one, failed("a", 30)) == one  # the same failure seen again changes nothing
    two = run(one, failed("b", 1))
    assert two.halt is not None
    assert two.halt.since.instant == NOW
    assert two.halt.failed_nodes == ["a", "b"]
    assert "2 failed updates within 1h (a, b)" in two.halt.message
    assert resume_command("web") in two.halt.message
    later = run(two, now=NOW + timedelta(hours=5))
    assert later.halt == two.halt
    assert later.failures == ()


def test_failures_outside_the_window_do_not_count() -> None:
    state = run(BudgetState(), failed("a", 90), failed("b", 1))
    assert state.halt is None
    assert [f.node for f in state.failures] == ["b"]


def test_a_resume_at_or_after_the_halt_clears_it_and_forgives_the_failures_before_it() -> None:
    halted = run(BudgetState(), failed("a", 2), failed("b", 1))
    assert run(halted, resumed=NOW - timedelta(seconds=1)).halt == halted.halt  # before the halt: no effect
    resumed = run(halted, failed("a", 2), resumed=NOW, now=NOW + timedelta(minutes=1))
    assert resumed == BudgetState()
    again = run(resumed, failed("c", -0.5), resumed=NOW, now=NOW + timedelta(minutes=1))
    assert again.halt is None
    assert [f.node for f in again.failures] == ["c"]


def test_percentages_round_up_and_never_halt_on_nothing_and_no_budget_means_no_halt() -> None:
    tenth = Budget(max_failures=Percent(10), window=timedelta(hours=1))
    assert tenth.threshold(25) == 3
    assert tenth.threshold(0) == 1
    halted = run(BudgetState(), failed("a", 1), budget=tenth, size=0)
    assert halted.halt is not None
    assert run(halted, budget=None) == BudgetState()


def test_the_status_keeps_only_what_can_matter() -> None:
    state = run(BudgetState(), *(failed(f"n{i}", i) for i in range(10)))
    assert [f.node for f in state.failures] == ["n1", "n0"]


@pytest.mark.parametrize(
    ("value", "moment", "notice"),
    [
        (None, None, None),
        ("2025-06-01T11:00:00Z", NOW - timedelta(hours=1), None),
        (" 2025-06-01T12:04:00Z ", NOW + timedelta(minutes=4), None),
        ("2025-06-01T13:00:00Z", None, "is in the future; ignored"),
        ("yesterday", None, "is not an RFC 3339 time"),
    ],
)
def test_resumed_at_annotation(value: str | None, moment: datetime | None, notice: str | None) -> None:
    found, note = resumed_at({} if value is None else {RESUMED: value}, now=NOW)
    assert found == moment
    assert (note is None) if notice is None else (note is not None and notice in note)


def test_a_failure_is_read_from_the_shadow() -> None:
    assert failure_of(shadow("a"), node="a") is None
    assert failure_of(shadow("a", state=None), node="a") is None
    failing = shadow("a", state=ShadowState.ERROR_RESET, target="1.1.0", crashes=2, failed_at=NOW)
    found = failure_of(failing, node="a")
    assert found is not None
    assert (found.node, found.at.instant, found.reason) == (
        "a",
        NOW,
        "update to 1.1.0 failed (crash count 2)",
    )


@given(
    ages=st.lists(st.integers(-5, 120), max_size=12),
    limit=st.integers(1, 5),
    resumed_ago=st.none() | st.integers(0, 120),
)
def test_halted_exactly_when_enough_failures_count(
    ages: list[int], limit: int, resumed_ago: int | None
) -> None:
    budget = Budget(max_failures=Count(limit), window=timedelta(hours=1))
    resumed = None if resumed_ago is None else NOW - timedelta(minutes=resumed_ago)
    observed = [failed(f"n{i}", age) for i, age in enumerate(ages)]
    state = run(BudgetState(), *observed, budget=budget, resumed=resumed)
    counting = [
        age for age in ages if age < 60 and (resumed is None or NOW - timedelta(minutes=age) > resumed)
    ]
    assert (state.halt is not None) == (len(counting) >= limit)
    assert len(state.failures) == min(len(counting), limit)


def test_a_failure_dated_in_the_future_is_reported_and_never_counted() -> None:
    """A node whose clock is wrong: counted, its failure would never leave the window."""
    ahead = Failure(node="skewed", at=Timestamp.from_datetime(NOW + timedelta(days=300)), reason="boom")
    within_skew = Failure(node="close", at=Timestamp.from_datetime(NOW + timedelta(minutes=4)), reason="boom")
    state = run(BudgetState(), ahead, within_skew)
    assert state.failures == (within_skew,)
    assert state.halt is None
    assert state.future == (ahead,)
    assert state.notices() == (
        f"skewed's failure is dated {ahead.at.text}, in the future (is its clock wrong?); not counted",
    )


def test_a_resume_older_than_the_halt_clears_nothing_and_says_so() -> None:
    """A resumed-at left from an earlier halt: the operator must set it again, and the status tells them."""
    halted = run(BudgetState(), failed("a", 10), failed("b", 5))
    assert halted.halt is not None
    earlier = NOW - timedelta(hours=2)
    still = run(halted, resumed=earlier, now=NOW + timedelta(minutes=1))
    assert still.halt == halted.halt
    assert still.notices() == (
        f"resumed-at {earlier.isoformat()} is older than the halt (since {halted.halt.since.text}) and "
        "clears nothing: set it again to resume",
    )
    assert run(BudgetState(), failed("a", 10), resumed=earlier).notices() == ()
