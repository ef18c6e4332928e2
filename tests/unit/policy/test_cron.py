"""Cron expressions: every row's expected fire times come from the Rust `cron` crate 0.12.1 itself (run as
an oracle while writing these tests), except the rows marked "year jump" (see the last test)."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.policy.cron import CronError, CronExpression, day_of_week

# (after, expression, first fire time, second fire time), all UTC wall-clock times.
TABLE = [
    ("2024-03-15T10:20:30", "* * * * * * *", "2024-03-15T10:20:31", "2024-03-15T10:20:32"),
    ("2024-03-15T10:20:30", "* * 2-4 * * Mon-Fri *", "2024-03-18T02:00:00", "2024-03-18T02:00:01"),
    ("2024-03-16T10:20:30", "* * 2-4 * * Mon-Fri *", "2024-03-18T02:00:00", "2024-03-18T02:00:01"),
    ("2024-03-15T10:20:30", "0 0 10 * * Mon *", "2024-03-18T10:00:00", "2024-03-25T10:00:00"),
    ("2024-03-15T10:20:30", "0 * 10 * * * *", "2024-03-15T10:21:00", "2024-03-15T10:22:00"),
    ("2024-03-15T10:20:30", "0 0 3 * * Sat *", "2024-03-16T03:00:00", "2024-03-23T03:00:00"),
    (
        "2024-03-15T10:20:30",
        "0 30 9,12,15 1,15 May-Aug Mon,Wed,Fri *",
        "2024-05-01T09:30:00",
        "2024-05-01T12:30:00",
    ),
    ("2024-03-15T10:20:30", "0 0 0 29 2 * *", "2028-02-29T00:00:00", "2032-02-29T00:00:00"),
    ("2024-03-15T10:20:30", "0 0 0 31 * * *", "2024-03-31T00:00:00", "2024-05-31T00:00:00"),
    ("2024-03-15T10:20:30", "*/15 * * * * * *", "2024-03-15T10:20:45", "2024-03-15T10:21:00"),
    ("2024-03-15T10:20:30", "0 5/20 * * * * *", "2024-03-15T10:25:00", "2024-03-15T10:45:00"),
    ("2024-03-15T10:20:30", "0 0 0 1-10/3 * * *", "2024-04-01T00:00:00", "2024-04-04T00:00:00"),
    ("2024-03-15T10:20:30", "0 0 12 * * 1 *", "2024-03-17T12:00:00", "2024-03-24T12:00:00"),
    ("2024-03-15T10:20:30", "0 0 12 * * 7 *", "2024-03-16T12:00:00", "2024-03-23T12:00:00"),
    ("2024-03-15T10:20:30", "0 0 12 * * Sunday *", "2024-03-17T12:00:00", "2024-03-24T12:00:00"),
    ("2024-03-15T10:20:30", "0 0 0 1 January * *", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
    ("2024-03-15T10:20:30", "0 0 0 * JAN-mar ? *", "2024-03-16T00:00:00", "2024-03-17T00:00:00"),
    ("2024-03-15T10:20:30", "0 0 6 ? * Sun,Sat *", "2024-03-16T06:00:00", "2024-03-17T06:00:00"),
    ("2024-03-15T10:20:30", "0 0 0 1 1 * 2023", None, None),
    ("2024-03-15T10:20:30", "0 0 12 * * Mon-Fri 2024/2", "2024-03-15T12:00:00", "2024-03-18T12:00:00"),
    ("2024-03-15T10:20:30", "@weekly", "2024-03-17T00:00:00", "2024-03-24T00:00:00"),
    ("2024-03-15T10:20:30", "@monthly", "2024-04-01T00:00:00", "2024-05-01T00:00:00"),
    ("2024-03-15T10:20:30", "@yearly", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
    ("2024-03-15T10:20:30", "@hourly", "2024-03-15T11:00:00", "2024-03-15T12:00:00"),
    ("2024-03-15T10:20:30", "* * 21-23,0-8 * * * *", "2024-03-15T21:00:00", "2024-03-15T21:00:01"),
    ("2024-03-15T22:20:30", "* * 21-23,0-8 * * * *", "2024-03-15T22:20:31", "2024-03-15T22:20:32"),
    ("2024-12-31T23:59:59", "0,30 * * * * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:30"),
    ("2024-03-15T10:20:30", "0 0 0 13 * Fri *", "2024-09-13T00:00:00", "2024-12-13T00:00:00"),
]


@pytest.mark.parametrize(("after", "expression", "first", "second"), TABLE)
def test_next_fire_times_match_the_rust_crate(
    after: str, expression: str, first: str | None, second: str | None
) -> None:
    cron = CronExpression.parse(expression)
    got_first = cron.next_after(datetime.fromisoformat(after))
    assert (got_first.isoformat() if got_first else None) == first
    if got_first is not None:
        got_second = cron.next_after(got_first)
        assert (got_second.isoformat() if got_second else None) == second
        assert cron.matches(got_first)


def test_table_has_enough_rows() -> None:
    assert len(TABLE) >= 25


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * * *", "expected 6 or 7 fields"),
        ("60 * * * * * *", "second field: 60 is outside 0-59"),
        ("* * 24 * * * *", "hour field: 24 is outside 0-23"),
        ("* * * 0 * * *", "day-of-month field: 0 is outside 1-31"),
        ("* * * * 13 * *", "month field: 13 is outside 1-12"),
        ("* * * * * 0 *", "day-of-week field: 0 is outside 1-7"),
        ("* * * * * * 1969", "year field: 1969 is outside 1970-2100"),
        ("* * * * * * 2101", "year field: 2101 is outside 1970-2100"),
        ("*/0 * * * * * *", "second field: step '0'"),
        ("1/ * * * * * *", "second field: step ''"),
        ("? * * * * * *", "second field: '?' is not a number"),
        ("* * * * * Sat-Sun *", "day-of-week field: range 'Sat-Sun' goes backwards"),
        ("* * * * Smarch * *", "month field: 'Smarch' is not a number or a name"),
        ("1,,2 * * * * * *", "second field: empty item"),
        ("@annually", "expected 6 or 7 fields"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("?", r"\?").replace("*", r"\*")):
        CronExpression.parse(expression)


def test_sunday_is_one_and_saturday_seven() -> None:
    assert day_of_week(datetime(2024, 3, 17).date()) == 1
    assert day_of_week(datetime(2024, 3, 16).date()) == 7
    assert day_of_week(datetime(2024, 3, 18).date()) == 2


def test_six_fields_mean_any_year() -> None:
    assert CronExpression.parse("0 0 0 1 1 *").years == CronExpression.parse("0 0 0 1 1 * *").years


def test_year_jumps_find_the_first_match_of_the_new_year() -> None:
    # cron 0.12 keeps the starting month, day and time as lower bounds after jumping to a later year
    # (it answers 2028-06-26T23:02:47 here); brupop-python returns the real first match.
    cron = CronExpression.parse("47/2 * 23 * * * 2028-2029")
    assert cron.next_after(datetime(2025, 6, 26, 23, 2, 14)) == datetime(2028, 1, 1, 23, 0, 47)
    cron = CronExpression.parse("* * * 5-28 * */2 */3")
    assert cron.next_after(datetime(2025, 10, 30, 19, 0, 37)) == datetime(2027, 1, 5)


def test_an_expression_that_never_fires() -> None:
    assert CronExpression.parse("0 0 0 30 2 * *").next_after(datetime(2024, 1, 1)) is None


def fields() -> st.SearchStrategy[str]:
    def field(low: int, high: int) -> st.SearchStrategy[str]:
        value = st.integers(low, high)
        return st.one_of(
            st.just("*"),
            value.map(str),
            st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
            st.tuples(value, st.integers(1, 10)).map(lambda p: f"{p[0]}/{p[1]}"),
            st.lists(value, min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
        )

    return st.tuples(
        field(0, 59),
        field(0, 59),
        st.sampled_from(["*", "3", "1-4", "22-23,0-1"]),
        st.sampled_from(["*", "1-15"]),
        st.sampled_from(["*", "3", "2-4"]),
        st.sampled_from(["*", "2-6", "1,7", "5"]),
    ).map(" ".join)


@settings(max_examples=100, deadline=None)
@given(fields(), st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31)))
def test_next_after_is_the_first_matching_second(expression: str, after: datetime) -> None:
    cron = CronExpression.parse(expression)
    found = cron.next_after(after)
    assert found is not None
    assert found > after
    assert cron.matches(found)
    # No matching second in between (checked by brute force over at most two hours).
    probe = after.replace(microsecond=0) + timedelta(seconds=1)
    limit = min(found, probe + timedelta(hours=2))
    while probe < limit:
        assert not cron.matches(probe), probe
        probe += timedelta(seconds=1)
