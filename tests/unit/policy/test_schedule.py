from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.policy.cron import CronExpression
from brupop.policy.schedule import (
    Schedule,
    ScheduleError,
    ScheduleKind,
    legacy_window,
    schedule_from_settings,
)

NOW = datetime(2024, 3, 15, 10, 20, 30, tzinfo=UTC)  # a Friday


def schedule(text: str, *, zone: str = "UTC", now: datetime = NOW) -> Schedule:
    return Schedule.create(CronExpression.parse(text), ZoneInfo(zone), now=now)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("* * * * * * *", ScheduleKind.WINDOW),
        ("* * 2-4 * * Mon-Fri *", ScheduleKind.WINDOW),
        ("* * 0-5 * * * *", ScheduleKind.WINDOW),
        ("0 0 10 * * Mon *", ScheduleKind.TRIGGER),
        ("0 * 10 * * * *", ScheduleKind.TRIGGER),  # every minute of hour 10 is still a trigger (#591)
        ("0 0 0 1 1 * 2023", ScheduleKind.TRIGGER),  # never fires again
    ],
)
def test_window_or_trigger_from_the_next_two_fire_times(text: str, kind: ScheduleKind) -> None:
    assert schedule(text).kind is kind


def test_spacing_of_fire_times_one_second_one_day_one_week() -> None:
    for text, gap in [("* * * * * * *", 1), ("0 0 0 * * * *", 86400), ("0 0 0 * * 2 *", 7 * 86400)]:
        s = schedule(text)
        first = s.next_fire_after(NOW)
        assert first is not None
        assert s.next_fire_after(first) == first + timedelta(seconds=gap)


def test_a_window_is_open_exactly_while_it_matches() -> None:
    s = schedule("* * 2-4 * * Mon-Fri *")
    monday = datetime(2024, 3, 18, tzinfo=UTC)
    assert not s.is_open(monday.replace(hour=1, minute=59, second=59), drained_at=NOW)
    assert s.is_open(monday.replace(hour=2), drained_at=NOW)
    assert s.is_open(monday.replace(hour=4, minute=59, second=59), drained_at=NOW)
    assert not s.is_open(monday.replace(hour=5), drained_at=NOW)
    assert not s.is_open(datetime(2024, 3, 16, 3, tzinfo=UTC), drained_at=NOW)  # Saturday
    assert s.next_opening(NOW, drained_at=NOW) == monday.replace(hour=2)
    assert s.next_opening(monday.replace(hour=3), drained_at=NOW) == monday.replace(hour=3)


def test_a_trigger_opens_at_its_time_and_closes_once_drained() -> None:
    s = schedule("0 0 3 * * Sat *")
    trigger = datetime(2024, 3, 16, 3, tzinfo=UTC)
    started = NOW
    assert not s.is_open(trigger - timedelta(seconds=1), drained_at=started)
    assert s.is_open(trigger, drained_at=started)
    assert s.is_open(trigger + timedelta(hours=5), drained_at=started)  # still draining
    drained = trigger + timedelta(hours=5)
    assert not s.is_open(trigger + timedelta(hours=6), drained_at=drained)
    assert s.next_opening(trigger + timedelta(hours=6), drained_at=drained) == trigger + timedelta(days=7)


def test_a_trigger_before_start_up_is_not_replayed() -> None:
    s = schedule("0 0 3 * * Fri *")  # fired at 03:00 today, before NOW
    assert not s.is_open(NOW, drained_at=NOW)


@given(st.integers(0, 14 * 86400))
def test_nothing_is_open_without_a_fire_time_since_drained(offset: int) -> None:
    s = schedule("0 0 3 * * Sat *")
    now = NOW + timedelta(seconds=offset)
    fired = s.next_fire_after(NOW)
    assert fired is not None
    assert s.is_open(now, drained_at=NOW) is (fired <= now)


def test_time_zones_read_the_expression_on_local_wall_clock() -> None:
    s = schedule("* * 2-3 * * * *", zone="America/New_York")
    assert s.is_open(datetime(2024, 1, 10, 7, 30, tzinfo=UTC), drained_at=NOW)  # 02:30 EST
    assert not s.is_open(datetime(2024, 1, 10, 2, 30, tzinfo=UTC), drained_at=NOW)


def test_a_local_time_skipped_by_dst_never_fires() -> None:
    # 2024-03-10: New York jumps from 02:00 to 03:00, so 02:30 does not happen that day.
    s = schedule("0 30 2 * * * *", zone="America/New_York", now=datetime(2024, 3, 9, 12, tzinfo=UTC))
    fired = s.next_fire_after(datetime(2024, 3, 9, 12, tzinfo=UTC))
    assert fired == datetime(2024, 3, 11, 6, 30, tzinfo=UTC)  # 02:30 EDT on the 11th


def test_a_repeated_local_time_fires_once() -> None:
    # 2024-11-03: New York falls back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
    s = schedule("0 30 1 * * * *", zone="America/New_York", now=datetime(2024, 11, 2, tzinfo=UTC))
    first = s.next_fire_after(datetime(2024, 11, 3, tzinfo=UTC))
    assert first == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert s.next_fire_after(first) == datetime(2024, 11, 4, 6, 30, tzinfo=UTC)  # next day, EST


@pytest.mark.parametrize(
    ("start", "stop", "cron"),
    [
        ("0:0:0", "5:0:0", "* * 0-5 * * * *"),
        ("21:0:0", "8:30:0", "* * 21-23,0-8 * * * *"),
        ("09:15:00", "17:45:00", "* * 9-17 * * * *"),
        ("3:00:00", "3:59:59", "* * 3-3 * * * *"),
    ],
)
def test_legacy_windows_use_whole_hours_with_the_stop_hour_included(start: str, stop: str, cron: str) -> None:
    assert legacy_window(start, stop) == cron


def test_midnight_wrapping_legacy_window_is_open_on_both_sides() -> None:
    s, _ = schedule_from_settings(
        cron_expression=None, window_start="21:0:0", window_stop="8:30:0", timezone=None, now=NOW
    )
    assert s.kind is ScheduleKind.WINDOW
    for hour, open_ in [(20, False), (21, True), (23, True), (0, True), (8, True), (9, False)]:
        assert s.is_open(NOW.replace(hour=hour, minute=59), drained_at=NOW) is open_, hour


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 3 1 3 * 2024",  # fired earlier this year
        "0 0 23 31 12 * 2023",  # fired on New Year's Eve: its rollout may run on past midnight
        "* * * * * * 2023",  # a window of last year
    ],
)
def test_a_schedule_that_fires_no_more_is_accepted_with_a_warning(expression: str) -> None:
    """A controller restarted after the last fire (mid-rollout of that trigger, or in the new year) must
    still run: it finishes nodes in their cycle and resets failed ones. Refusing it (exit 2) made every
    restart after New Year a crash loop."""
    fired, warnings = schedule_from_settings(
        cron_expression=expression, window_start=None, window_stop=None, timezone=None, now=NOW
    )
    assert fired.next_fire_after(NOW) is None
    assert warnings == [
        f"SCHEDULER_CRON_EXPRESSION={expression!r} fires no more after 2024-03-15T10:20:30+00:00: no update "
        "starts unless a one-shot trigger that already fired has not drained yet; nodes in a cycle finish"
    ]


def test_settings_precedence() -> None:
    default, warnings = schedule_from_settings(
        cron_expression=None, window_start=None, window_stop=None, timezone=None, now=NOW
    )
    assert default.expression.text == "* * * * * * *"
    assert warnings == []
    cron_wins, warnings = schedule_from_settings(
        cron_expression="0 0 3 * * Sat *",
        window_start="1:0:0",
        window_stop="2:0:0",
        timezone="Europe/Paris",
        now=NOW,
    )
    assert cron_wins.expression.text == "0 0 3 * * Sat *"
    assert cron_wins.zone == ZoneInfo("Europe/Paris")
    assert "ignored because SCHEDULER_CRON_EXPRESSION is set" in warnings[0]
    legacy, warnings = schedule_from_settings(
        cron_expression=None, window_start="1:0:0", window_stop="2:0:0", timezone=None, now=NOW
    )
    assert legacy.expression.text == "* * 1-2 * * * *"
    assert "deprecated" in warnings[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron_expression": "* * *"}, "SCHEDULER_CRON_EXPRESSION='* * *': expected 6 or 7 fields"),
        ({"cron_expression": "* * 25 * * * *"}, "SCHEDULER_CRON_EXPRESSION='* * 25 * * * *': hour field: 25"),
        ({"window_start": "1:0:0"}, "UPDATE_WINDOW_START is set alone"),
        ({"window_stop": "1:0:0"}, "UPDATE_WINDOW_STOP is set alone"),
        (
            {"window_start": "25:0:0", "window_stop": "1:0:0"},
            "UPDATE_WINDOW_START='25:0:0': expected a time of day",
        ),
        ({"window_start": "1:0:0", "window_stop": "noon"}, "UPDATE_WINDOW_STOP='noon'"),
        ({"timezone": "Mars/Olympus"}, "SCHEDULER_TIMEZONE='Mars/Olympus': not a known IANA time zone"),
        ({"timezone": "../etc"}, "SCHEDULER_TIMEZONE='../etc'"),
        (
            {"cron_expression": "0 0 0 30 2 * *"},
            "SCHEDULER_CRON_EXPRESSION='0 0 0 30 2 * *': never fires (a day that no month has",
        ),
        (
            {"cron_expression": "0 0 0 31 4,6,9,11 * *"},
            "SCHEDULER_CRON_EXPRESSION='0 0 0 31 4,6,9,11 * *': never fires",
        ),
    ],
)
def test_bad_settings_name_variable_value_and_what_is_accepted(kwargs: dict[str, str], message: str) -> None:
    full = {"cron_expression": None, "window_start": None, "window_stop": None, "timezone": None, **kwargs}
    with pytest.raises(ScheduleError) as info:
        schedule_from_settings(**full, now=NOW)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
