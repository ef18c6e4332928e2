"""Plain words for what `status` shows: moments in the pool's own time zone with how far away they are
("Sat 03:00 Europe/Berlin (in 2 d 4 h)"), and each structured admission reason (`brupop.policy.admission`)
as a sentence an operator understands without knowing brupop's internals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_never
from zoneinfo import ZoneInfo

from brupop.models.constants import PAUSE_ALL_POLICY
from brupop.policy.admission import (
    BackingOff,
    BlackedOut,
    GateBlocked,
    Halted,
    Held,
    InvalidPolicy,
    NodeNotSeen,
    NoFreeSlot,
    Paused,
    Reason,
    WindowClosed,
)


def span(delta: timedelta) -> str:
    """A duration at the precision a person wants: 40 s, 5 min, 3 h 20 min, 2 d 4 h."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        rest = minutes % 60
        return f"{hours} h" + (f" {rest} min" if rest else "")
    rest = hours % 24
    return f"{days} d" + (f" {rest} h" if rest else "")


def relative(moment: datetime, now: datetime) -> str:
    delta = moment - now
    if abs(delta) < timedelta(seconds=1):
        return "now"
    return f"in {span(delta)}" if delta > timedelta(0) else f"{span(delta)} ago"


def moment(at: datetime, zone: ZoneInfo, now: datetime) -> str:
    """`at` as local time in `zone`: the time alone today, the weekday within a week, else the date; then
    the zone and how far away it is."""
    local, today = at.astimezone(zone), now.astimezone(zone)
    if local.date() == today.date():
        shown = local.strftime("%H:%M")
    elif abs(local.date() - today.date()) < timedelta(days=6):
        shown = local.strftime("%a %H:%M")
    else:
        shown = local.strftime("%Y-%m-%d %H:%M")
    return f"{shown} {zone.key} ({relative(at, now)})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _names(nodes: tuple[str, ...]) -> str:
    shown = ", ".join(nodes[:5])
    return shown + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")


def waiting(reason: Reason, *, node: str, zone: ZoneInfo, now: datetime, crash_count: int = 0) -> str:
    """Why `node`, which wants to start, does not, in plain words."""
    match reason:
        case InvalidPolicy(pool=pool, problems=problems):
            return f"policy {pool} cannot be followed: {'; '.join(problems)}"
        case Paused(pool=pool):
            if pool == PAUSE_ALL_POLICY:
                return "paused by `kubectl brupop pause` (resume: kubectl brupop resume)"
            return f"paused by policy {pool} (resume: kubectl brupop resume {pool})"
        case Halted(pool=pool, since=since, failed_nodes=failed):
            return (
                f"policy {pool} halted {relative(since, now)} after failures on {_names(failed)} "
                f"(resume: kubectl brupop resume {pool})"
            )
        case Held(reason=why):
            return f"held by annotation: {why} (release: kubectl brupop release {node})"
        case BackingOff(until=until):
            return (
                f"back-off until {moment(until, zone, now)} after {_plural(crash_count, 'failed update')} "
                f"(skip it: kubectl brupop retry {node})"
            )
        case BlackedOut(until=until, reason=why):
            return f"blackout{f' ({why})' if why else ''} until {moment(until, zone, now)}"
        case WindowClosed(opens=opens):
            if opens is None:
                return "waiting for the window, which never opens again"
            return f"waiting for the window, opens {moment(opens, zone, now)}"
        case NoFreeSlot(in_cycle=busy, limit=limit):
            return f"no free slot ({busy}/{limit} updating)"
        case GateBlocked(gate=gate, reason=why, since=since):
            return f"blocked by the {gate} gate: {why} (since {relative(since, now)})"
        case NodeNotSeen():
            return "its Node object is not visible"
        case _:
            assert_never(reason)
