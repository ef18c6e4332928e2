"""Failure budgets: when a pool has seen `maxFailures` failed node updates within the sliding `window`, it
halts itself; nothing new starts in it until an operator clears the halt, and nodes already in a cycle
finish theirs.

The state lives in the policy's status (the failures counted, the halt), so a controller restart
forgets nothing; each pass folds the failures it observes into it (`account`). A failure is one node
update that ended in ErrorReset (the shadow's failure time), failed its verification, or got stuck
(`brupop.policy.stuck`). A node's update counts at most once per cycle: failures of the same node are one
when they share their time or their cycle (the cycle's start, `brupop.policy.progress.attributed`), and the
first one seen is kept (its time and reason), so a node stuck and then reset, stuck in two steps, or stuck
again under an edited `stuckAfter` is one failure, and seeing a failure again changes nothing.

Clearing: the annotation `brupop.bottlerocket.aws/resumed-at` on the policy holds an RFC 3339 time. A halt
that began at or before it is cleared, and the failures up to it no longer count, so one
`kubectl annotate --overwrite` resumes the pool without re-halting it at once. A time in the future is
ignored (and reported): it would otherwise forgive failures that have not happened yet. Removing the
`failureBudget` from the spec also ends a halt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from brupop.models.constants import POLICY_PLURAL, RESUMED_AT_ANNOTATION
from brupop.models.policy import Failure, Halt, duration_text
from brupop.models.shadow import BottlerocketShadow
from brupop.models.timestamp import Timestamp
from brupop.policy.limits import Count, Percent

CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far in the future a resumed-at time or a failure may be (clocks differ) and still count."""


@dataclass(frozen=True, slots=True)
class Budget:
    max_failures: Count | Percent
    window: timedelta

    def threshold(self, pool_size: int) -> int:
        """The failure that halts the pool (at least the first: a budget never halts an empty record)."""
        return max(1, self.max_failures.of(pool_size))


@dataclass(frozen=True, slots=True)
class BudgetState:
    failures: tuple[Failure, ...] = ()
    """The failures that count now, oldest first."""
    halt: Halt | None = None
    future: tuple[Failure, ...] = ()
    """Failures dated after now + CLOCK_SKEW (a node's clock gone wrong): reported, never counted (a failure
    near the end of time would otherwise count, and keep the pool halted, for ever)."""

    stale_resume: datetime | None = None
    """A resumed-at time older than the halt, which clears nothing (an operator may think it did)."""

    def notices(self) -> tuple[str, ...]:
        future = tuple(
            f"{f.node}'s failure is dated {f.at.text}, in the future (is its clock wrong?); not counted"
            for f in self.future
        )
        if self.stale_resume is None or self.halt is None:
            return future
        stale = (
            f"resumed-at {self.stale_resume.isoformat()} is older than the halt "
            f"(since {self.halt.since.text}) and clears nothing: set it again to resume"
        )
        return (stale, *future)


def resume_command(policy: str) -> str:
    return (
        f"kubectl annotate {POLICY_PLURAL} {policy} --overwrite "
        f'{RESUMED_AT_ANNOTATION}="$(date -u +%Y-%m-%dT%H:%M:%SZ)"'
    )


def resumed_at(annotations: Mapping[str, str], *, now: datetime) -> tuple[datetime | None, str | None]:
    """The policy's resume time, and a notice when the annotation is there but cannot be used."""
    text = annotations.get(RESUMED_AT_ANNOTATION)
    if text is None:
        return None, None
    try:
        moment = Timestamp.parse(text.strip()).instant
    except ValueError:
        return (
            None,
            f"{RESUMED_AT_ANNOTATION}={text!r} is not an RFC 3339 time (e.g. 2025-06-01T12:00:00Z); ignored",
        )
    if moment > now + CLOCK_SKEW:
        return None, f"{RESUMED_AT_ANNOTATION}={text!r} is in the future; ignored"
    return moment, None


def failure_of(shadow: BottlerocketShadow, *, node: str) -> Failure | None:
    """The node's last failed update, as its shadow records it."""
    status = shadow.status
    if status is None or status.state_transition_failure_timestamp is None:
        return None
    return Failure(
        node=node,
        at=status.state_transition_failure_timestamp,
        reason=f"update to {shadow.spec.version or status.target_version} failed "
        f"(crash count {status.crash_count})",
    )


def _identities(failure: Failure) -> set[tuple[str, str, datetime]]:
    """What makes two failures one: the same node and time, or the same node and cycle."""
    keys = {("at", failure.node, failure.at.instant)}
    if failure.cycle is not None:
        keys.add(("cycle", failure.node, failure.cycle.instant))
    return keys


def account(
    budget: Budget | None,
    *,
    pool: str,
    previous: BudgetState,
    observed: Iterable[Failure],
    pool_size: int,
    resumed: datetime | None,
    now: datetime,
) -> BudgetState:
    """The budget's state after this pass."""
    if budget is None:
        return BudgetState()
    halt = previous.halt
    if halt is not None and resumed is not None and resumed >= halt.since.instant:
        halt = None
    seen: set[tuple[str, str, datetime]] = set()
    found: list[Failure] = []
    for failure in (*previous.failures, *observed):
        keys = _identities(failure)
        if not keys & seen:
            found.append(failure)
        seen |= keys
    oldest = now - budget.window
    latest = now + CLOCK_SKEW
    future = tuple(sorted((f for f in found if f.at.instant > latest), key=lambda f: f.node))
    counted = sorted(
        (f for f in found if oldest < f.at.instant <= latest and (resumed is None or f.at.instant > resumed)),
        key=lambda f: (f.at.instant, f.node),
    )
    threshold = budget.threshold(pool_size)
    # Only the newest `threshold` failures can matter, which bounds what the status keeps.
    counted = counted[-threshold:]
    if halt is None and len(counted) >= threshold:
        nodes = sorted({f.node for f in counted})
        spent = f"{len(counted)} failed updates within {duration_text(budget.window)} ({', '.join(nodes)})"
        halt = Halt(
            since=Timestamp.from_datetime(now),
            failed_nodes=nodes,
            message=f"{spent} spent the failure budget; nothing new starts until an operator resumes the "
            f"pool: {resume_command(pool)}",
        )
    stale = resumed if halt is not None and resumed is not None and resumed < halt.since.instant else None
    return BudgetState(failures=tuple(counted), halt=halt, future=future, stale_resume=stale)
