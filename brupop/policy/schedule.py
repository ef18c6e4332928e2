"""When updates may start: the Rust brupop's maintenance schedule, plus a time zone.

A cron expression (see `cron`) is either a *window* or a *one-shot trigger*, decided once, as the Rust
brupop does: if the next two fire times after start-up are exactly one second apart it is a window,
otherwise a trigger. So `* * 2-4 * * Mon-Fri *` is a window (02:00:00-04:59:59 on weekdays) while
`0 * 10 * * * *` (second 0 of every minute of hour 10) is a trigger, which surprises people (#591).

- Window: new updates may start while the current wall-clock second matches.
- Trigger: at each fire time the window opens, and stays open until the controller finds no node that
  wants to start ("drained"); then it waits for the next fire time. The caller keeps `drained_at` (the
  controller keeps it on its leader Lease, so a new leader neither replays a drained trigger nor drops an
  open one; the first leader ever counts from its start, like the Rust brupop, which sleeps until the next
  fire time after a restart).

Nodes already updating always finish; that is the caller's business.

Time zone (`SCHEDULER_TIMEZONE`, an addition): expressions match local wall-clock time in that zone. A
local time that does not exist (spring forward) never fires; a local time that happens twice (fall back)
fires on its first occurrence only, though a window still covers both.

Legacy `UPDATE_WINDOW_START`/`UPDATE_WINDOW_STOP` (`HH:MM:SS`, both or neither) become a window over the
whole hours from start to stop, the stop hour included (what the Rust brupop does, not what its README
says): `0:0:0`/`5:0:0` is `* * 0-5 * * * *`, `21:0:0`/`8:30:0` is `* * 21-23,0-8 * * * *`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from brupop.policy.cron import MAX_YEAR, MIN_YEAR, CronError, CronExpression

ALWAYS: Final = "* * * * * * *"
_LEGACY_TIME = re.compile(r"^(2[0-3]|[01]?[0-9]):([0-5]?[0-9]):([0-5]?[0-9])$")
_MAX_STEPS: Final = 100_000


class ScheduleError(ValueError):
    """A bad schedule setting; the message names the variable, the value and what is accepted."""


class ScheduleKind(StrEnum):
    WINDOW = "window"
    TRIGGER = "trigger"


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: CronExpression
    zone: ZoneInfo
    kind: ScheduleKind

    @classmethod
    def create(cls, expression: CronExpression, zone: ZoneInfo, *, now: datetime) -> Schedule:
        probe = cls(expression, zone, ScheduleKind.TRIGGER)
        first = probe.next_fire_after(now)
        second = probe.next_fire_after(first) if first else None
        window = first is not None and second is not None and second - first == timedelta(seconds=1)
        return cls(expression, zone, ScheduleKind.WINDOW if window else ScheduleKind.TRIGGER)

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def _instant(self, local: datetime) -> datetime | None:
        """The first instant showing wall-clock time `local`; None when the zone skips it."""
        aware = local.replace(tzinfo=self.zone, fold=0)
        if aware.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) != local:
            return None
        return aware.astimezone(UTC)

    def fires_at(self, moment: datetime) -> bool:
        return self.expression.matches(self._local(moment))

    def next_fire_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after `moment` (UTC), or None if the expression never fires again."""
        local: datetime | None = self._local(moment)
        for _ in range(_MAX_STEPS):
            assert local is not None
            local = self.expression.next_after(local)
            if local is None:
                return None
            instant = self._instant(local)
            if instant is not None and instant > moment:
                return instant
        return None

    def is_open(self, now: datetime, *, drained_at: datetime) -> bool:
        """Whether new updates may start at `now`."""
        if self.kind is ScheduleKind.WINDOW:
            return self.fires_at(now)
        fired = self.next_fire_after(drained_at)
        return fired is not None and fired <= now

    def next_opening(self, now: datetime, *, drained_at: datetime) -> datetime | None:
        """`now` when open, else when it next opens (None: never again)."""
        if self.is_open(now, drained_at=drained_at):
            return now
        return self.next_fire_after(max(now, drained_at))


def legacy_window(start: str, stop: str) -> str:
    """The cron window for `UPDATE_WINDOW_START`/`UPDATE_WINDOW_STOP` (whole hours, stop hour included)."""
    hours = []
    for name, value in (("UPDATE_WINDOW_START", start), ("UPDATE_WINDOW_STOP", stop)):
        match = _LEGACY_TIME.match(value.strip())
        if match is None:
            raise ScheduleError(f"{name}={value!r}: expected a time of day HH:MM:SS, e.g. 21:00:00")
        hours.append(int(match.group(1)))
    first, last = hours
    span = f"{first}-{last}" if first <= last else f"{first}-23,0-{last}"
    return f"* * {span} * * * *"


def schedule_from_settings(
    *,
    cron_expression: str | None,
    window_start: str | None,
    window_stop: str | None,
    timezone: str | None,
    now: datetime,
) -> tuple[Schedule, list[str]]:
    """The schedule the environment asks for, and warnings worth logging once at start-up.

    An expression that cannot fire in this year or any later one is refused. One that only fired earlier
    this year (a one-shot trigger) is accepted with a warning: a controller restarted in the middle of that
    trigger's rollout must still finish it (the trigger's state lives on the leader Lease)."""
    warnings: list[str] = []
    try:
        zone = ZoneInfo((timezone or "UTC").strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"SCHEDULER_TIMEZONE={timezone!r}: not a known IANA time zone name (e.g. UTC, Europe/Paris)"
        ) from None
    if (window_start is None) != (window_stop is None):
        given = "UPDATE_WINDOW_START" if window_start is not None else "UPDATE_WINDOW_STOP"
        raise ScheduleError(
            f"{given} is set alone: set both UPDATE_WINDOW_START and UPDATE_WINDOW_STOP, or neither"
        )
    text, variable = cron_expression, "SCHEDULER_CRON_EXPRESSION"
    if window_start is not None and window_stop is not None:
        legacy = legacy_window(window_start, window_stop)
        if cron_expression is not None:
            warnings.append(
                "UPDATE_WINDOW_START/UPDATE_WINDOW_STOP are ignored because SCHEDULER_CRON_EXPRESSION is set"
            )
        else:
            text, variable = legacy, "UPDATE_WINDOW_START/UPDATE_WINDOW_STOP"
            warnings.append(
                f"UPDATE_WINDOW_START/UPDATE_WINDOW_STOP are deprecated; using the cron window {legacy!r}"
            )
    try:
        expression = CronExpression.parse(text or ALWAYS)
    except CronError as err:
        raise ScheduleError(f"{variable}={text!r}: {err}") from None
    schedule = Schedule.create(expression, zone, now=now)
    cron_began = datetime(MIN_YEAR, 1, 1, tzinfo=zone).astimezone(UTC)
    if schedule.next_fire_after(cron_began - timedelta(seconds=1)) is None:
        raise ScheduleError(
            f"{variable}={text!r}: never fires (a day that no month has, such as 30 February; years go "
            f"from {MIN_YEAR} to {MAX_YEAR})"
        )
    if schedule.next_fire_after(now) is None:
        # Not refused: a controller restarted after the last fire (its trigger's rollout open across New
        # Year, or simply later) must still finish nodes in their cycle and reset failed ones; exiting
        # would crash-loop it. It says so at every start instead.
        warnings.append(
            f"{variable}={text!r} fires no more after {now.isoformat(timespec='seconds')}: no update starts "
            "unless a one-shot trigger that already fired has not drained yet; nodes in a cycle finish"
        )
    return schedule, warnings
