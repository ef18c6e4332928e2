"""Crash back-off: after a failed update a node waits, in whole minutes, longer than 2^crash_count
(capped at 24 hours) before the controller lets it start again. Same rule and rounding as the Rust brupop.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from brupop.models.shadow import ShadowStatus

MAX_BACKOFF_MINUTES: Final = 24 * 60
# 2^11 minutes already exceed the 24 h cap, so larger crash counts need no exponentiation.
_CAPPED_FROM: Final = 11


def backoff_minutes(crash_count: int) -> int:
    """Whole minutes that must be *exceeded* after a failure before retrying."""
    if crash_count >= _CAPPED_FROM:
        return MAX_BACKOFF_MINUTES
    return min(1 << crash_count, MAX_BACKOFF_MINUTES)


def retry_at(status: ShadowStatus) -> datetime | None:
    """The first instant at which the node may start an update again; None when it never failed."""
    failed = status.state_transition_failure_timestamp
    if failed is None:
        return None
    # floor(minutes since failure) > N  <=>  at least N + 1 whole minutes have passed.
    return failed.instant + timedelta(minutes=backoff_minutes(status.crash_count) + 1)


def may_retry(status: ShadowStatus, *, now: datetime) -> bool:
    at = retry_at(status)
    return at is None or now >= at
