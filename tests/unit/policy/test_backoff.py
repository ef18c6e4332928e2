from datetime import UTC, datetime, timedelta

import pytest

from brupop.models.shadow import ShadowState
from brupop.policy.backoff import MAX_BACKOFF_MINUTES, backoff_minutes, may_retry, retry_at
from tests.factories import shadow

FAILED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("crashes", "minutes"),
    [(0, 1), (1, 2), (4, 16), (5, 32), (10, 1024), (11, 1440), (12, 1440), (2**32 - 1, 1440)],
)
def test_backoff_grows_as_powers_of_two_capped_at_a_day(crashes: int, minutes: int) -> None:
    assert backoff_minutes(crashes) == minutes
    assert backoff_minutes(crashes) <= MAX_BACKOFF_MINUTES


@pytest.mark.parametrize(
    ("crashes", "elapsed", "allowed"),
    [
        # The Rust brupop's own cases (gap in whole minutes, crash count): 30 min after 5 crashes is too
        # early (needs > 32), 244 min is late enough.
        (5, timedelta(minutes=30), False),
        (5, timedelta(minutes=244), True),
        # Whole minutes, strictly greater: 2 min 59 s after one crash is still "2 minutes".
        (1, timedelta(minutes=2, seconds=59), False),
        (1, timedelta(minutes=3), True),
        (10, timedelta(minutes=1024, seconds=59), False),
        (10, timedelta(minutes=1025), True),
        (30, timedelta(minutes=1440, seconds=59), False),
        (30, timedelta(minutes=1441), True),
        # A failure stamped in the future (clock skew) waits until it is in the past.
        (0, -timedelta(minutes=5), False),
    ],
)
def test_may_retry_after_whole_minutes(crashes: int, elapsed: timedelta, allowed: bool) -> None:
    status = shadow("a", state=ShadowState.IDLE, crashes=crashes, failed_at=FAILED).status
    assert status is not None
    assert may_retry(status, now=FAILED + elapsed) is allowed


def test_never_failed_means_no_wait() -> None:
    status = shadow("a", crashes=3).status
    assert status is not None
    assert retry_at(status) is None
    assert may_retry(status, now=FAILED)


def test_retry_at_is_the_first_allowed_instant() -> None:
    status = shadow("a", crashes=2, failed_at=FAILED).status
    assert status is not None
    at = retry_at(status)
    assert at == FAILED + timedelta(minutes=5)
    assert may_retry(status, now=at)
    assert not may_retry(status, now=at - timedelta(microseconds=1))


def test_a_failure_at_the_end_of_time_keeps_the_node_waiting_instead_of_overflowing() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    failed = shadow("n", state=ShadowState.IDLE, crashes=3, failed_at=last)
    assert failed.status is not None
    assert retry_at(failed.status) == datetime.max.replace(tzinfo=UTC)
    assert not may_retry(failed.status, now=last)
