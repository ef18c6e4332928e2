"""The health metrics: nodes each gate blocks per policy and nodes being verified per policy, series of
pairs that stopped dropped rather than left at a stale value, and verification outcomes counted."""

from prometheus_client import CollectorRegistry

from brupop.controller.health_metrics import HealthMetrics
from brupop.models.policy import GateKind
from brupop.models.verifying import VerificationOutcome


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_blocked_and_verifying_nodes_per_policy_and_vanished_series_dropped() -> None:
    registry = CollectorRegistry()
    metrics = HealthMetrics(registry)
    metrics.observe(
        blocked={("quiet", GateKind.PROMETHEUS): 3, ("careful", GateKind.PODS): 1},
        verifying={"verified": 1},
    )
    assert value(registry, "brupop_gate_blocked", policy="quiet", gate="prometheus") == 3
    assert value(registry, "brupop_gate_blocked", policy="careful", gate="pods") == 1
    assert value(registry, "brupop_nodes_verifying", policy="verified") == 1
    metrics.observe(blocked={("quiet", GateKind.PROMETHEUS): 1}, verifying={})
    assert value(registry, "brupop_gate_blocked", policy="quiet", gate="prometheus") == 1
    assert value(registry, "brupop_gate_blocked", policy="careful", gate="pods") is None
    assert value(registry, "brupop_nodes_verifying", policy="verified") is None


def test_verification_outcomes_are_counted_per_policy() -> None:
    registry = CollectorRegistry()
    metrics = HealthMetrics(registry)
    metrics.verified("verified", VerificationOutcome.PASSED)
    metrics.verified("verified", VerificationOutcome.FAILED)
    metrics.verified("verified", VerificationOutcome.FAILED)
    assert value(registry, "brupop_verifications_total", policy="verified", outcome="Passed") == 1
    assert value(registry, "brupop_verifications_total", policy="verified", outcome="Failed") == 2
