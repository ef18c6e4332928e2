"""What can be notified: the events, and the notice the controller hands over for each.

A notice carries a fixed set of fields; templates (`brupop.notify.templates`) may use exactly these, so a
template that names anything else is refused when the controller starts, never when a message is sent.
Fields an event does not have are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final


class Event(StrEnum):
    """The events a destination can subscribe to (`NOTIFY_EVENTS`)."""

    ROLLOUT_STARTED = "rollout-started"
    """The first node of a pool starts its update to a version."""
    NODE_STARTED = "node-started"
    NODE_FAILED = "node-failed"
    NODE_DONE = "node-done"
    POLICY_HALTED = "policy-halted"
    """A pool's failure budget is spent: nothing new starts in it until an operator resumes it."""
    POLICY_RESUMED = "policy-resumed"
    ROLLOUT_DONE = "rollout-done"
    """Every node of a pool runs the version (or the last one left has failed)."""
    NODE_STUCK = "node-stuck"
    GATE_BLOCKED = "gate-blocked"
    """A health gate keeps a node from starting."""

    @property
    def setting(self) -> str:
        """The event's part of a variable name: NODE_FAILED for node-failed."""
        return self.value.upper().replace("-", "_")


DEFAULT_EVENTS: Final = frozenset(
    {
        Event.ROLLOUT_STARTED,
        Event.NODE_FAILED,
        Event.NODE_STUCK,
        Event.POLICY_HALTED,
        Event.POLICY_RESUMED,
        Event.ROLLOUT_DONE,
    }
)
"""What a destination gets unless told otherwise: what needs a person, and the start and end of a rollout;
a message per node step would bury those in a large fleet."""

FIELDS: Final = (
    "event",
    "at",
    "cluster",
    "node",
    "policy",
    "from_version",
    "to_version",
    "reason",
    "done",
    "total",
)
"""The names a template may use ($node, ${to_version}, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One thing that happened. `policy` is the pool's name (`(environment)` for the default pool)."""

    event: Event
    at: datetime
    node: str | None = None
    policy: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    reason: str | None = None
    done: int | None = None
    """Nodes of the pool that run the target version."""
    total: int | None = None
    """Nodes in the pool."""

    def fields(self, *, cluster: str | None) -> dict[str, str | int | None]:
        """Every template field's value (None where the event has none)."""
        return {
            "event": self.event.value,
            "at": self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cluster": cluster,
            "node": self.node,
            "policy": self.policy,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "reason": self.reason,
            "done": self.done,
            "total": self.total,
        }
