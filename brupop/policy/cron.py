"""Cron expressions with the Rust brupop's syntax (the `cron` crate, 0.12):

    sec  min  hour  day-of-month  month  day-of-week  [year]

seconds 0-59, minutes 0-59, hours 0-23, days 1-31, months 1-12 or Jan-Dec, days of the week 1-7 with
**Sunday = 1** or Sun-Sat, years 1970-2100 (the year field may be left out). Each field takes `*`, a value,
a range `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a comma-separated list of those; day-of-month and
day-of-week also take `?` for "any". `@yearly`, `@monthly`, `@weekly` (Sundays), `@daily` and `@hourly`
stand for the obvious expressions. A time fires when *every* field matches (day-of-month AND
day-of-week, unlike Vixie cron's OR). Times are wall-clock times; time zones are `schedule`'s business.

`next_after` skips whole years, months, days, hours and minutes that cannot match, so even a window like
`* * 0-5 * * * *` or an expression that never fires costs at most a few thousand steps.
"""

from __future__ import annotations

import bisect
import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

MIN_YEAR: Final = 1970
MAX_YEAR: Final = 2100

_MONTHS: Final = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_name) if name})
# Sunday = 1 ... Saturday = 7.
_DAYS: Final = {name: i + 1 for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_DAYS.update(
    {
        name: i + 1
        for i, name in enumerate(
            ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
        )
    }
)


# Shorthands the Rust crate accepts.
SHORTHANDS: Final = {
    "@yearly": "0 0 0 1 1 * *",
    "@monthly": "0 0 0 1 * * *",
    "@weekly": "0 0 0 * * 1 *",
    "@daily": "0 0 0 * * * *",
    "@hourly": "0 0 * * * * *",
}


class CronError(ValueError):
    """An expression that cannot be parsed; the message names the field and the bad part."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    any_mark: bool = False  # accepts "?"


_FIELDS: Final = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31, any_mark=True),
    _Field("month", 1, 12, names=_MONTHS),
    _Field("day-of-week", 1, 7, names=_DAYS, any_mark=True),
    _Field("year", MIN_YEAR, MAX_YEAR),
)


def _value(field: _Field, token: str) -> int:
    key = token.strip().lower()
    if field.names and key in field.names:
        return field.names[key]
    if not key.isdigit():
        raise CronError(f"{field.name} field: {token!r} is not a number{' or a name' if field.names else ''}")
    number = int(key)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.name} field: {number} is outside {field.low}-{field.high}")
    return number


def _parse_field(field: _Field, text: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field.name} field: empty item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(
                    f"{field.name} field: step {step_text!r} in {part!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*" or (base == "?" and field.any_mark):
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(field, first), _value(field, last)
            if low > high:
                raise CronError(f"{field.name} field: range {base!r} goes backwards")
        else:
            low = _value(field, base)
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    return tuple(sorted(values))


def _next(values: tuple[int, ...], start: int) -> int | None:
    index = bisect.bisect_left(values, start)
    return values[index] if index < len(values) else None


def day_of_week(day: date) -> int:
    """Cron numbering: Sunday = 1 ... Saturday = 7."""
    return (day.weekday() + 1) % 7 + 1


@dataclass(frozen=True, slots=True)
class CronExpression:
    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    years: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        parts = SHORTHANDS.get(text.strip(), text).split()
        if len(parts) not in (6, 7):
            shape = "sec min hour day-of-month month day-of-week [year]"
            raise CronError(f"expected 6 or 7 fields ({shape}), got {len(parts)}")
        if len(parts) == 6:
            parts.append("*")
        fields = [_parse_field(field, part) for field, part in zip(_FIELDS, parts, strict=True)]
        return cls(text, *fields)

    def day_matches(self, day: date) -> bool:
        return day.day in self.days and day_of_week(day) in self.weekdays

    def matches(self, moment: datetime) -> bool:
        """Whether the wall-clock second `moment` fires."""
        return (
            moment.year in self.years
            and moment.month in self.months
            and self.day_matches(moment.date())
            and moment.hour in self.hours
            and moment.minute in self.minutes
            and moment.second in self.seconds
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first wall-clock second strictly after `moment` that fires, or None if none ever does."""
        t = moment.replace(microsecond=0, tzinfo=None) + timedelta(seconds=1)
        while t.year <= MAX_YEAR:
            if t.year not in self.years:
                year = _next(self.years, t.year + 1)
                if year is None:
                    return None
                t = datetime(year, 1, 1)
            elif t.month not in self.months:
                month = _next(self.months, t.month + 1)
                t = datetime(t.year + 1, 1, 1) if month is None else datetime(t.year, month, 1)
            elif not self.day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                hour = _next(self.hours, t.hour + 1)
                day = datetime(t.year, t.month, t.day)
                t = day + timedelta(days=1) if hour is None else day.replace(hour=hour)
            elif t.minute not in self.minutes:
                minute = _next(self.minutes, t.minute + 1)
                hour_start = t.replace(minute=0, second=0)
                t = hour_start + timedelta(hours=1) if minute is None else hour_start.replace(minute=minute)
            elif t.second not in self.seconds:
                second = _next(self.seconds, t.second + 1)
                minute_start = t.replace(second=0)
                t = (
                    minute_start + timedelta(minutes=1)
                    if second is None
                    else minute_start.replace(second=second)
                )
            else:
                return t
        return None
