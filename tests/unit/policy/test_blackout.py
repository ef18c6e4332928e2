from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.models.policy import Blackout
from brupop.policy.blackout import Period, clear_from, covering, next_opening, periods
from brupop.policy.cron import CronExpression
from brupop.policy.schedule import Schedule

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_dates_cover_whole_local_days_and_times_end_exclusively() -> None:
    (day,) = periods([Blackout(start="2025-12-24", end="2025-12-26", reason="holidays")], BERLIN)
    assert (day.start, day.end, day.reason) == (utc(2025, 12, 23, 23), utc(2025, 12, 26, 23), "holidays")
    (evening,) = periods([Blackout(start="2025-07-01T18:00", end="2025-07-01T22:30:00")], BERLIN)
    assert (evening.start, evening.end) == (utc(2025, 7, 1, 16), utc(2025, 7, 1, 20, 30))
    assert evening.covers(utc(2025, 7, 1, 16))
    assert not evening.covers(utc(2025, 7, 1, 20, 30))


def test_local_times_across_daylight_saving_changes() -> None:
    # 02:30 does not exist on 2025-03-30 in Berlin: it is read with the winter offset (+01:00).
    (skipped,) = periods([Blackout(start="2025-03-30T02:30", end="2025-03-30T04:00")], BERLIN)
    assert (skipped.start, skipped.end) == (utc(2025, 3, 30, 1, 30), utc(2025, 3, 30, 2))
    # 02:30 happens twice on 2025-10-26: the first one (+02:00) counts.
    (repeated,) = periods([Blackout(start="2025-10-26T00:00", end="2025-10-26T02:30")], BERLIN)
    assert repeated.end == utc(2025, 10, 26, 0, 30)


def test_periods_are_sorted_and_chains_are_crossed_whole() -> None:
    blacked = periods(
        [
            Blackout(start="2025-01-03", end="2025-01-03", reason="late"),
            Blackout(start="2025-01-01", end="2025-01-01", reason="first"),
            Blackout(start="2025-01-02", end="2025-01-02"),
        ],
        ZoneInfo("UTC"),
    )
    assert [p.reason for p in blacked] == ["first", None, "late"]
    assert covering(blacked, utc(2025, 1, 1, 12)) is blacked[0]
    assert covering(blacked, utc(2025, 1, 4)) is None
    assert clear_from(blacked, utc(2025, 1, 1, 12)) == utc(2025, 1, 4)
    assert clear_from(blacked, utc(2024, 12, 31)) == utc(2024, 12, 31)


def window(text: str, now: datetime = T0) -> Schedule:
    return Schedule.create(CronExpression.parse(text), ZoneInfo("UTC"), now=now)


def test_the_next_opening_skips_blackouts() -> None:
    nightly = window("* * 2-3 * * * *")
    blacked = (Period(start=utc(2025, 1, 1, 0), end=utc(2025, 1, 3, 0)),)
    assert next_opening(nightly, blacked, utc(2025, 1, 1, 12), drained_at=T0) == utc(2025, 1, 3, 2)
    assert next_opening(nightly, (), utc(2025, 1, 1, 2, 30), drained_at=T0) == utc(2025, 1, 1, 2, 30)
    ending_inside = (Period(start=utc(2025, 1, 1, 1), end=utc(2025, 1, 1, 3)),)
    assert next_opening(nightly, ending_inside, utc(2025, 1, 1, 0), drained_at=T0) == utc(2025, 1, 1, 3)


def test_a_trigger_in_a_blackout_opens_when_the_blackout_ends_and_a_past_schedule_never() -> None:
    trigger = Schedule.create(CronExpression.parse("0 0 3 * * * *"), ZoneInfo("UTC"), now=T0)
    blacked = (Period(start=utc(2025, 1, 1, 2), end=utc(2025, 1, 1, 4)),)
    assert next_opening(trigger, blacked, utc(2025, 1, 1, 2), drained_at=utc(2025, 1, 1, 1)) == utc(
        2025, 1, 1, 4
    )
    past = window("* * * * * * 2024")
    assert next_opening(past, blacked, utc(2025, 1, 1), drained_at=T0) is None


hours = st.integers(0, 24 * 6)
spans = st.lists(st.tuples(hours, st.integers(1, 30)), max_size=6)


def as_periods(found: list[tuple[int, int]]) -> tuple[Period, ...]:
    return tuple(
        sorted(
            (Period(start=T0 + timedelta(hours=h), end=T0 + timedelta(hours=h + n)) for h, n in found),
            key=lambda p: (p.start, p.end),
        )
    )


@given(found=spans, at=hours)
def test_clear_from_is_the_first_uncovered_instant(found: list[tuple[int, int]], at: int) -> None:
    blacked = as_periods(found)
    moment = T0 + timedelta(hours=at)
    clear = clear_from(blacked, moment)
    assert clear >= moment
    assert covering(blacked, clear) is None
    step = moment
    while step < clear:  # every whole hour before it is covered
        assert covering(blacked, step) is not None
        step += timedelta(hours=1)


@settings(max_examples=50)
@given(found=spans, at=hours, first=st.integers(0, 23), length=st.integers(0, 5))
def test_the_next_opening_is_the_first_open_and_clear_hour(
    found: list[tuple[int, int]], at: int, first: int, length: int
) -> None:
    last = min(first + length, 23)
    schedule = window(f"* * {first}-{last} * * * *")
    blacked = as_periods(found)
    now = T0 + timedelta(hours=at)
    opening = next_opening(schedule, blacked, now, drained_at=T0)
    assert opening is not None
    assert schedule.is_open(opening, drained_at=T0)
    assert covering(blacked, opening) is None
    step = now
    while step < opening:  # nothing earlier on the hour grid is both open and clear
        assert not (schedule.is_open(step, drained_at=T0) and covering(blacked, step) is None)
        step += timedelta(hours=1)
