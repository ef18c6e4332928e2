"""Metrics of the health gates and post-update verification, per update policy.

- `brupop_gate_blocked{policy,gate}`: nodes waiting to start or to be cordoned that the gate blocks now;
- `brupop_nodes_verifying{policy}`: updated nodes being verified or soaking (each still holds its slot);
- `brupop_verifications_total{policy,outcome}`: verifications ended, `Passed` or `Failed` (a failure is a
  failed update: the policy's failure budget counts it).

A series whose pair stopped blocking or verifying is removed rather than left at 0, as the fleet gauges do
(`brupop.controller.metrics`), so the number of series follows what is happening, not what ever happened.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from brupop.models.policy import GateKind
from brupop.models.verifying import VerificationOutcome


class HealthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gate_blocked = Gauge(
            "brupop_gate_blocked",
            "Nodes waiting to start (or to be cordoned) that a health gate blocks now.",
            ["policy", "gate"],
            registry=registry,
        )
        self.verifying = Gauge(
            "brupop_nodes_verifying",
            "Updated nodes being verified or soaking (each holds its update slot).",
            ["policy"],
            registry=registry,
        )
        self.verifications = Counter(
            "brupop_verifications",
            "Post-update verifications ended, by outcome (Passed, Failed).",
            ["policy", "outcome"],
            registry=registry,
        )
        self._blocked: set[tuple[str, ...]] = set()
        self._verifying: set[tuple[str, ...]] = set()

    def observe(self, *, blocked: Mapping[tuple[str, GateKind], int], verifying: Mapping[str, int]) -> None:
        self._blocked = _publish(
            self.gate_blocked,
            {(policy, str(gate)): n for (policy, gate), n in blocked.items()},
            self._blocked,
        )
        self._verifying = _publish(
            self.verifying, {(policy,): n for policy, n in verifying.items()}, self._verifying
        )

    def verified(self, policy: str, outcome: VerificationOutcome) -> None:
        self.verifications.labels(policy, outcome.value).inc()


def _publish(
    gauge: Gauge, values: Mapping[tuple[str, ...], int], previous: set[tuple[str, ...]]
) -> set[tuple[str, ...]]:
    for labels in previous - values.keys():
        gauge.remove(*labels)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    return set(values)
