"""Fleet metrics, recomputed from the whole set of shadows after every reconcile pass.

Gauges keep the Rust brupop's names (`brupop_hosts_state{state}`,
`brupop_hosts_version{bottlerocket_version}`) but drop the series of a value that vanished instead of
pinning it at 0 forever. Transitions between two
observations feed counters of completed and failed updates and a histogram of time spent in each state.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from brupop.models.shadow import BottlerocketShadow, ShadowState

STATE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True, slots=True)
class _Seen:
    state: ShadowState
    since: datetime


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.hosts_state = Gauge(
            "brupop_hosts_state", "Nodes per reported state.", ["state"], registry=registry
        )
        self.hosts_version = Gauge(
            "brupop_hosts_version",
            "Nodes per running Bottlerocket version.",
            ["bottlerocket_version"],
            registry=registry,
        )
        self.updating = Gauge("brupop_nodes_updating", "Nodes in an update cycle now.", registry=registry)
        self.window_open = Gauge(
            "brupop_update_window_open", "1 while the schedule lets new updates start.", registry=registry
        )
        self.completed = Counter(
            "brupop_updates_completed",
            "Node updates that finished (MonitoringUpdate -> Idle).",
            registry=registry,
        )
        self.failed = Counter(
            "brupop_updates_failed", "Update attempts that ended in ErrorReset.", registry=registry
        )
        self.state_seconds = Histogram(
            "brupop_state_duration_seconds",
            "Time nodes spent in each reported state.",
            ["state"],
            registry=registry,
            buckets=STATE_BUCKETS,
        )
        self._seen: dict[str, _Seen] = {}
        self._states: set[str] = set()
        self._versions: set[str] = set()

    def observe(
        self, shadows: Iterable[BottlerocketShadow], *, now: datetime, active: int, window_open: bool
    ) -> None:
        states: Tally[str] = Tally()
        versions: Tally[str] = Tally()
        seen: dict[str, _Seen] = {}
        for shadow in shadows:
            status = shadow.status
            if status is None:
                continue
            states[status.current_state.value] += 1
            versions[status.current_version] += 1
            seen[shadow.name] = self._transition(shadow.name, status.current_state, now)
        self._seen = seen
        self._states = _publish(self.hosts_state, states, self._states)
        self._versions = _publish(self.hosts_version, versions, self._versions)
        self.updating.set(active)
        self.window_open.set(1 if window_open else 0)

    def _transition(self, name: str, state: ShadowState, now: datetime) -> _Seen:
        before = self._seen.get(name)
        if before is None:
            return _Seen(state, now)
        if before.state is state:
            return before
        self.state_seconds.labels(before.state.value).observe(max((now - before.since).total_seconds(), 0.0))
        if state is ShadowState.ERROR_RESET:
            self.failed.inc()
        elif before.state is ShadowState.MONITORING_UPDATE and state is ShadowState.IDLE:
            self.completed.inc()
        return _Seen(state, now)


def _publish(gauge: Gauge, counts: Tally[str], previous: set[str]) -> set[str]:
    for value in previous - counts.keys():
        gauge.remove(value)
    for value, count in counts.items():
        gauge.labels(value).set(count)
    return set(counts)
