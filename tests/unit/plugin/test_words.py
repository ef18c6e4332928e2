from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from brupop.models.policy import GateKind
from brupop.plugin.words import moment, relative, span, waiting
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

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # Thursday, 13:00 in Berlin
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 s"),
        (40, "40 s"),
        (300, "5 min"),
        (3600, "1 h"),
        (12000, "3 h 20 min"),
        (86400, "1 d"),
        (187200, "2 d 4 h"),
    ],
)
def test_spans_are_as_precise_as_a_person_needs(seconds: int, words: str) -> None:
    assert span(timedelta(seconds=seconds)) == words
    assert span(timedelta(seconds=-seconds)) == words


def test_relative_moments() -> None:
    assert relative(NOW + timedelta(minutes=5), NOW) == "in 5 min"
    assert relative(NOW - timedelta(hours=2), NOW) == "2 h ago"
    assert relative(NOW + timedelta(milliseconds=300), NOW) == "now"


def test_moments_are_local_to_the_zone_with_the_weekday_within_a_week_and_the_date_beyond() -> None:
    assert moment(NOW + timedelta(hours=2), BERLIN, NOW) == "15:00 Europe/Berlin (in 2 h)"
    assert moment(datetime(2026, 3, 7, 2, tzinfo=UTC), BERLIN, NOW) == "Sat 03:00 Europe/Berlin (in 1 d 14 h)"
    assert (
        moment(datetime(2026, 4, 1, tzinfo=UTC), BERLIN, NOW)
        == "2026-04-01 02:00 Europe/Berlin (in 26 d 12 h)"
    )


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (InvalidPolicy(pool="p", problems=("a", "b")), "policy p cannot be followed: a; b"),
        (Paused(pool="p"), "paused by policy p (resume: kubectl brupop resume p)"),
        (Paused(pool="brupop-pause-all"), "paused by `kubectl brupop pause` (resume: kubectl brupop resume)"),
        (
            Halted(
                pool="p", since=NOW - timedelta(minutes=3), failed_nodes=("a", "b", "c", "d", "e", "f", "g")
            ),
            "policy p halted 3 min ago after failures on a, b, c, d, e and 2 more (resume: kubectl brupop resume p)",
        ),
        (Held(reason="tests"), "held by annotation: tests (release: kubectl brupop release n1)"),
        (
            BackingOff(until=NOW + timedelta(minutes=7)),
            "back-off until 13:07 Europe/Berlin (in 7 min) after 1 failed update (skip it: kubectl brupop retry n1)",
        ),
        (
            BlackedOut(until=NOW + timedelta(days=1), reason="freeze"),
            "blackout (freeze) until Fri 13:00 Europe/Berlin (in 1 d)",
        ),
        (
            BlackedOut(until=NOW + timedelta(hours=1), reason=None),
            "blackout until 14:00 Europe/Berlin (in 1 h)",
        ),
        (WindowClosed(opens=None), "waiting for the window, which never opens again"),
        (
            WindowClosed(opens=NOW + timedelta(hours=14)),
            "waiting for the window, opens Fri 03:00 Europe/Berlin (in 14 h)",
        ),
        (NoFreeSlot(in_cycle=3, limit=3), "no free slot (3/3 updating)"),
        (NodeNotSeen(), "its Node object is not visible"),
        (
            GateBlocked(
                gate=GateKind.PROMETHEUS,
                reason="alert KubeNodeNotReady firing",
                since=NOW - timedelta(minutes=2),
            ),
            "blocked by the prometheus gate: alert KubeNodeNotReady firing (since 2 min ago)",
        ),
    ],
)
def test_every_reason_in_plain_words(reason: Reason, words: str) -> None:
    assert waiting(reason, node="n1", zone=BERLIN, now=NOW, crash_count=1) == words
