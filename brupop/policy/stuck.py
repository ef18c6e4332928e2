"""Stuck nodes: a node in its update cycle that has spent longer than its pool's `stuckAfter` on one
step. Each step begins when the controller sets the node's next target state (the spec's
`state_transition_timestamp`), so the time since then is the time the node has spent reaching it; the
ErrorReset step (the node should report Idle again) is timed the same way.

A stuck node keeps its slot (nobody knows whether it is rebooting), is reported, and counts once against
the failure budget: its failure's time is the deadline it missed, so every pass reports the same failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from brupop.models.policy import Failure, duration_text
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.statemachine import is_active


@dataclass(frozen=True, slots=True)
class Stuck:
    node: str
    heading_to: ShadowState
    """The state the node has not reached."""
    since: datetime
    deadline: datetime

    def failure(self) -> Failure:
        return Failure(
            node=self.node,
            at=Timestamp.from_datetime(self.deadline),
            reason=f"stuck: not {self.heading_to.value} within {duration_text(self.deadline - self.since)}",
        )

    def message(self) -> str:
        return f"{self.node} has not reached {self.heading_to.value} since {self.since.isoformat()}"


def deadline(shadow: BottlerocketShadow, limit: timedelta | None) -> datetime | None:
    """When the node's current step times out (None: no limit, not in a cycle, or no step start known)."""
    started = shadow.spec.state_transition_timestamp
    if limit is None or started is None or not is_active(shadow):
        return None
    return started.instant + limit


def stuck(shadow: BottlerocketShadow, *, node: str, limit: timedelta | None, now: datetime) -> Stuck | None:
    """The node's Stuck report when its current step is past the deadline."""
    due = deadline(shadow, limit)
    started = shadow.spec.state_transition_timestamp
    if due is None or started is None or now < due:
        return None
    return Stuck(node=node, heading_to=shadow.spec.state, since=started.instant, deadline=due)
