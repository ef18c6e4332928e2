"""Fleet metrics, recomputed from the whole set of shadows after every reconcile pass.

Gauges keep the Rust brupop's names (`brupop_hosts_state{state}`,
`brupop_hosts_version{bottlerocket_version}`) but drop the series of a value that vanished instead of
pinning it at 0 forever. Transitions between two
observations feed counters of completed and failed updates and a histogram of time spent in each state.

Per pool (`policy` is the UpdatePolicy's name, `(environment)` for the nodes no policy selects):
`brupop_policy_nodes{policy,phase}` (UpToDate, Waiting, Updating, Failed, Unknown),
`brupop_policy_halted`, `brupop_policy_paused` and `brupop_policy_window_open` (1 or 0; the missed-window
alert reads the last) and `brupop_policy_failures` (the failures its budget counts now). A deleted policy's
series go.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from brupop.controller.policies import PoolReport
from brupop.models.policy import PolicyState, WindowState
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.policy.budget import BudgetState
from brupop.policy.policy_status import Member

STATE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class _Seen:
    state: ShadowState
    since: datetime
    version: str = ""
    shadow: BottlerocketShadow | None = None
    """The shadow as last observed (the models are immutable: the same object shows the same status)."""


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
        self.stuck = Gauge(
            "brupop_nodes_stuck",
            "Nodes past the deadline of the state they wait for (they keep their update slot).",
            registry=registry,
        )
        self.unreadable = Gauge(
            "brupop_shadows_invalid",
            "BottlerocketShadows the controller cannot read (each counts as a node updating).",
            registry=registry,
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
        self.policy_nodes = Gauge(
            "brupop_policy_nodes",
            "Nodes of each policy's pool by where they stand (UpToDate, Waiting, Updating, Failed, Unknown).",
            ["policy", "phase"],
            registry=registry,
        )
        self.policy_halted = Gauge(
            "brupop_policy_halted",
            "1 while the policy's failure budget is spent: nothing new starts until an operator resumes it.",
            ["policy"],
            registry=registry,
        )
        self.policy_paused = Gauge(
            "brupop_policy_paused",
            "1 while the policy starts nothing new: paused by its spec, or a policy the controller cannot "
            "follow.",
            ["policy"],
            registry=registry,
        )
        self.policy_failures = Gauge(
            "brupop_policy_failures",
            "Failed node updates the policy's failure budget counts now (within its window).",
            ["policy"],
            registry=registry,
        )
        self.policy_window_open = Gauge(
            "brupop_policy_window_open",
            "1 while the policy's schedule lets new updates start (0 while closed or in a blackout).",
            ["policy"],
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "brupop_reconcile_pass_duration_seconds",
            "Time of one reconcile pass over the whole fleet: the plan and its writes.",
            registry=registry,
            buckets=PASS_BUCKETS,
        )
        self._seen: dict[str, _Seen] = {}
        self._states: set[str] = set()
        self._versions: set[str] = set()
        self._pools: set[str] = set()

    def observe(
        self,
        shadows: Iterable[BottlerocketShadow],
        *,
        now: datetime,
        active: int,
        window_open: bool,
        stuck: int,
        unreadable: int,
    ) -> None:
        before = self._seen
        seen: dict[str, _Seen] = {}
        for shadow in shadows:
            name = shadow.name
            known = before.get(name)
            if known is not None and known.shadow is shadow:
                seen[name] = known  # the common case: the same object as last time
                continue
            status = shadow.status
            if status is None:
                continue
            if known is None or known.state is not status.current_state:
                known = self._transition(name, status.current_state, now)
            seen[name] = replace(known, version=status.current_version, shadow=shadow)
        self._seen = seen
        by_state = Tally(s.state for s in seen.values())
        states = Tally({state.value: count for state, count in by_state.items()})
        versions = Tally(s.version for s in seen.values())
        self._states = _publish(self.hosts_state, states, self._states)
        self._versions = _publish(self.hosts_version, versions, self._versions)
        self.updating.set(active)
        self.window_open.set(1 if window_open else 0)
        self.stuck.set(stuck)
        self.unreadable.set(unreadable)

    def observe_pools(self, reports: Mapping[str, PoolReport], *, budgets: Mapping[str, BudgetState]) -> None:
        for pool in self._pools - reports.keys():
            for phase in Member:
                self.policy_nodes.remove(pool, phase.value)
            for gauge in (
                self.policy_halted,
                self.policy_paused,
                self.policy_failures,
                self.policy_window_open,
            ):
                gauge.remove(pool)
        for pool, report in reports.items():
            counts = Tally(report.members.values())
            for phase in Member:
                self.policy_nodes.labels(pool, phase.value).set(counts[phase])
            state = report.status.state
            self.policy_halted.labels(pool).set(0 if budgets[pool].halt is None else 1)
            self.policy_paused.labels(pool).set(
                1 if state in (PolicyState.PAUSED, PolicyState.INVALID) else 0
            )
            self.policy_failures.labels(pool).set(len(budgets[pool].failures))
            self.policy_window_open.labels(pool).set(1 if report.status.window is WindowState.OPEN else 0)
        self._pools = set(reports)

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
