"""Crash back-off: after a failed update a node waits, in whole minutes, longer than 2^crash_count
(capped at 24 hours) before the controller lets it start again. Same rule and rounding as the Rust brupop.

An operator may waive the back-off of one failure (`kubectl brupop retry`): the shadow's retry annotation
then names that failure's time, exactly as the status has it. Only that failure's back-off is waived; a
later failure has another time, so it backs off again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from brupop.models.constants import RETRY_ANNOTATION
from brupop.models.shadow import ShadowStatus
from brupop.models.timestamp import later

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
    return later(failed.instant, timedelta(minutes=backoff_minutes(status.crash_count) + 1))


def may_retry(status: ShadowStatus, *, now: datetime) -> bool:
    at = retry_at(status)
    return at is None or now >= at


def waived(status: ShadowStatus, annotations: Mapping[str, str]) -> bool:
    """Whether someone waived the back-off of the node's last failure (the retry annotation names it)."""
    failed = status.state_transition_failure_timestamp
    return failed is not None and annotations.get(RETRY_ANNOTATION) == failed.text
