"""Stuck nodes: a node in its update cycle that has spent longer than its pool's `stuckAfter` on one
step. Each step begins when the controller sets the node's next target state (the spec's
`state_transition_timestamp`), so the time since then is the time the node has spent reaching it; the
ErrorReset step (the node should report Idle again) is timed the same way.

A stuck node keeps its slot (nobody knows whether it is rebooting), is reported, and counts once against
the failure budget: its failure's time is the deadline it missed, so every pass reports the same failure.

Until a pool says otherwise, each state has its own limit (`DEFAULT_STUCK_AFTER`, which the controller's
`STUCK_AFTER_<STATE>` variables override): staging takes minutes, a drain and a reboot may take an hour. A
step that began near the end of time (`9999-12-31T23:59:59Z`) never times out rather than overflowing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from brupop.models.policy import Failure, duration_text
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp, later
from brupop.policy.statemachine import is_active

S = ShadowState

DEFAULT_STUCK_AFTER: Final[Mapping[ShadowState, timedelta]] = {
    # Refresh, download, prepare and activate an image: minutes on a slow link.
    S.STAGED_AND_PERFORMED_UPDATE: timedelta(hours=1),
    # Load-balancer wait, a drain (DRAIN_TIMEOUT, 30 min by default) and a reboot (30 min at most).
    S.REBOOTED_INTO_UPDATE: timedelta(hours=2),
    # Check the version and uncordon.
    S.MONITORING_UPDATE: timedelta(minutes=30),
    # Back to Idle after a finished or failed cycle: undo the cordon, deactivate a staged update.
    S.IDLE: timedelta(minutes=30),
}


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
    return later(started.instant, limit)


def stuck(shadow: BottlerocketShadow, *, node: str, limit: timedelta | None, now: datetime) -> Stuck | None:
    """The node's Stuck report when its current step is past the deadline."""
    due = deadline(shadow, limit)
    started = shadow.spec.state_transition_timestamp
    if due is None or started is None or now < due:
        return None
    return Stuck(node=node, heading_to=shadow.spec.state, since=started.instant, deadline=due)
