"""The UpdatePolicy models: the reader accepts every good policy of the shared table and refuses every bad
one at the field the API server names, with the API server's message where the check is a CEL rule; the
small parsers the policy modules use (durations, local times) agree with the rules."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.policy import (
    CRON_SHORTHANDS,
    Blackout,
    Condition,
    ConditionStatus,
    Failure,
    Halt,
    PolicyState,
    UpdatePolicy,
    UpdatePolicySpec,
    UpdatePolicyStatus,
    WindowState,
    duration,
    duration_text,
    local_time,
)
from brupop.models.timestamp import Timestamp
from brupop.models.wire import WireError
from brupop.policy.cron import SHORTHANDS
from tests.policy_cases import BAD, GOOD


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_policies_are_read_and_written_back(name: str) -> None:
    spec = UpdatePolicySpec.from_wire(GOOD[name])
    assert UpdatePolicySpec.from_wire(spec.to_wire()) == spec


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policies_are_refused_at_the_field_the_api_server_names(case: str) -> None:
    bad = BAD[case]
    with pytest.raises(WireError) as refused:
        UpdatePolicy.from_wire({"spec": bad.spec})
    assert refused.value.location == bad.dotted
    if bad.same_message:
        assert bad.fragment in refused.value.message


def test_the_cron_shorthands_are_the_cron_parsers() -> None:
    assert set(CRON_SHORTHANDS) == set(SHORTHANDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("5m1s", timedelta(seconds=301)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert duration(text) == expected


def test_a_duration_the_schema_would_refuse_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration("1d")


def test_local_times_end_dates_last_the_whole_day() -> None:
    assert local_time("2025-12-24") == datetime(2025, 12, 24)
    assert local_time("2025-12-24", end=True) == datetime(2025, 12, 25)
    assert local_time("2025-12-24T18:00", end=True) == datetime(2025, 12, 24, 18)
    assert local_time("2025-12-24T18:00:30") == datetime(2025, 12, 24, 18, 0, 30)
    with pytest.raises(ValueError, match="not a date"):
        local_time("24.12.2025")


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),
    length=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    start_form=st.sampled_from(["date", "minutes", "seconds"]),
    end_form=st.sampled_from(["date", "minutes", "seconds"]),
)
def test_the_blackout_order_rule_agrees_with_the_parsed_times(
    start: datetime, length: timedelta, start_form: str, end_form: str
) -> None:
    """The CEL rule compares completed strings (a date end as T24:00:00); the reader's twin compares
    parsed times: both must say the same for every pair of forms."""
    end = start + length

    def text(moment: datetime, form: str) -> str:
        if form == "date":
            return moment.date().isoformat()
        return moment.isoformat(timespec=form)

    def completed(value: str, day_end: str) -> str:
        return value + f"T{day_end}" if len(value) == 10 else value + ":00" if len(value) == 16 else value

    wire: dict[str, Any] = {"start": text(start, start_form), "end": text(end, end_form)}
    cel_says = completed(wire["end"], "24:00:00") > completed(wire["start"], "00:00:00")
    try:
        Blackout.from_wire(wire)
        reader_says = True
    except WireError:
        reader_says = False
    assert reader_says == cel_says


def test_status_round_trips_and_object_accessors() -> None:
    at = Timestamp.parse("2025-06-01T10:00:00Z")
    status = UpdatePolicyStatus(
        observed_generation=3,
        state=PolicyState.HALTED,
        selected=4,
        limit="2",
        window=WindowState.CLOSED,
        next_opening=at,
        halted=Halt(since=at, failed_nodes=["a", "b"], message="spent"),
        failures=[Failure(node="a", at=at, reason="boom")],
        conditions=[
            Condition(
                type="Halted",
                status=ConditionStatus.TRUE,
                reason="FailureBudgetSpent",
                last_transition_time=at,
            )
        ],
    )
    assert UpdatePolicyStatus.from_wire(status.to_wire()) == status
    policy = UpdatePolicy.from_wire(
        {
            "metadata": {"name": "p", "generation": 3, "annotations": {"x": "y"}},
            "spec": {"nodeSelector": {}},
            "status": status.to_wire(),
        }
    )
    assert (policy.name, policy.generation, policy.annotations) == ("p", 3, {"x": "y"})
    bare = UpdatePolicy.from_wire({"metadata": {"generation": True}, "spec": {"nodeSelector": {}}})
    assert (bare.name, bare.generation, bare.annotations) == ("", None, {})


@given(st.integers(0, 99999 * 3600))
def test_duration_text_reads_back_as_the_same_duration(seconds: int) -> None:
    span = timedelta(seconds=seconds)
    text = duration_text(span)
    assert text == "0s" or duration(text) == span
    assert duration_text(timedelta(minutes=90)) == "1h30m"
