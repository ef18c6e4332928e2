"""How brupop retries calls to the Kubernetes API: full-jitter exponential back-off, at least as long as the
server asks for (Retry-After), and only for failures that may succeed later (no answer, 429, 5xx).

Kept apart from the client so that informers, the client's own retries and the controller's write passes
share one rule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 32)))


MAX_RETRY_AFTER = 300.0
"""Seconds; a longer Retry-After is taken as this (a server asking for an hour is not obeyed blindly)."""


def wait_before_retry(backoff: Backoff, attempt: int, *, retry_after: float | None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): the jittered back-off, but never less than
    the server's Retry-After."""
    delay = backoff.delay(attempt)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
