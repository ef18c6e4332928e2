"""Count-or-percent limits (a pool's `maxConcurrent`, a failure budget's `maxFailures`) and what they come
to for a pool of a given size.

A percentage rounds up, as Kubernetes rounds a PodDisruptionBudget's maxUnavailable: the disruption
controller calls `intstr.GetScaledValueFromIntOrPercent(maxUnavailable, expectedCount, true)`
(k8s.io/apimachinery/pkg/util/intstr/intstr.go), which is `ceil(percent * total / 100)`. So 10% of 25
nodes is 3, 10% of 5 nodes is 1, and any percentage above 0% of a non-empty pool allows at least one node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from brupop.models.policy import PERCENT

UNLIMITED: Final = "unlimited"


@dataclass(frozen=True, slots=True)
class Count:
    value: int

    def of(self, pool_size: int) -> int:
        return self.value

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Percent:
    value: int

    def of(self, pool_size: int) -> int:
        # Integer ceiling division: exact where the float formula could round at large sizes.
        return -(-self.value * pool_size // 100)

    def __str__(self) -> str:
        return f"{self.value}%"


@dataclass(frozen=True, slots=True)
class Unlimited:
    def of(self, pool_size: int) -> None:
        return None

    def __str__(self) -> str:
        return UNLIMITED


Limit = Count | Percent | Unlimited


def parse_limit(value: int | str) -> Limit:
    """A value the schema accepted: an integer, `N%` or `unlimited`."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value}: a count cannot be negative")
        return Count(value)
    if value == UNLIMITED:
        return Unlimited()
    match = re.fullmatch(PERCENT, value)
    if match is None:
        raise ValueError(f"{value!r}: expected a count, a percentage from 0% to 100% or {UNLIMITED!r}")
    return Percent(int(match[1]))


def from_env(max_concurrent: int | None) -> Limit:
    """MAX_CONCURRENT_UPDATE as the controller parsed it (None: unlimited)."""
    return Unlimited() if max_concurrent is None else Count(max_concurrent)


def describe(limit: int | None) -> str:
    """A resolved limit as the status shows it."""
    return UNLIMITED if limit is None else str(limit)


def tolerance(value: int | str, total: int) -> int:
    """A tolerance written as a count or a percentage of `total`, rounded down (unlike a limit): "at most
    10% unhealthy" of 5 nodes tolerates none, so one unhealthy node (20%) is more than 10%."""
    limit = parse_limit(value)
    if isinstance(limit, Unlimited):
        raise ValueError(f"{value!r}: a tolerance is a count or a percentage")
    return limit.value if isinstance(limit, Count) else limit.value * total // 100
