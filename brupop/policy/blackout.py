"""Blackout periods: local-time ranges (in the policy's time zone) in which no new update starts, whatever
the schedule says, e.g. a year-end change freeze.

A period runs from its start to its end, end excluded (a bare date as the end means through that day, see
`brupop.models.policy.local_time`). Local times become instants in the zone: a time the clock skips
(spring forward) is read with the offset before the change, a time it shows twice (fall back) is its first
occurrence. Overlapping or touching periods chain: a node waits until the end of the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from brupop.models.policy import Blackout, local_time
from brupop.policy.schedule import Schedule


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    """UTC instants; `end` is the first instant after the period."""
    reason: str | None = None

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def periods(blackouts: Iterable[Blackout], zone: ZoneInfo) -> tuple[Period, ...]:
    """The blackouts of a policy the reader accepted, as UTC periods sorted by start."""
    return tuple(
        sorted(
            (
                Period(
                    start=_instant(local_time(b.start), zone),
                    end=_instant(local_time(b.end, end=True), zone),
                    reason=b.reason,
                )
                for b in blackouts
            ),
            key=lambda p: (p.start, p.end),
        )
    )


def covering(blacked: Sequence[Period], moment: datetime) -> Period | None:
    """The period covering `moment` that started first, if any."""
    return next((p for p in blacked if p.covers(moment)), None)


def clear_from(blacked: Sequence[Period], moment: datetime) -> datetime:
    """The first instant at or after `moment` that no period covers (`moment` itself when none does)."""
    clear = moment
    for period in blacked:  # sorted by start: each period can only push `clear` later
        if period.covers(clear):
            clear = period.end
    return clear


def next_opening(
    schedule: Schedule, blacked: Sequence[Period], now: datetime, *, drained_at: datetime
) -> datetime | None:
    """The first instant at or after `now` at which the window is open and no blackout covers it (None: the
    schedule never opens again outside the blackouts). A trigger that fires in a blackout opens the window
    when the blackout ends, as the window stays open until the pool is drained."""
    moment = now
    while True:
        moment = clear_from(blacked, moment)
        opening = schedule.next_opening(moment, drained_at=drained_at)
        if opening is None or covering(blacked, opening) is None:
            return opening
        moment = opening
