from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from brupop.controller.metrics import FleetMetrics
from brupop.models.shadow import ShadowState
from tests.factories import shadow
from tests.unit.controller.test_reconciler_policies import policy, reconciler, world

NOW = datetime(2024, 3, 1, tzinfo=UTC)
S = ShadowState


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_gauges_count_states_and_versions_and_drop_vanished_series() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    fleet = [shadow("a"), shadow("b", current="1.1.0"), shadow("c", state=None)]
    metrics.observe(fleet, now=NOW, active=0, window_open=True, stuck=0, unreadable=0)
    assert value(registry, "brupop_hosts_state", state="Idle") == 2
    assert value(registry, "brupop_hosts_version", bottlerocket_version="1.0.0") == 1
    assert value(registry, "brupop_update_window_open") == 1

    metrics.observe(
        [shadow("a", current="1.1.0", spec=S.REBOOTED_INTO_UPDATE, state=S.REBOOTED_INTO_UPDATE)],
        now=NOW,
        active=1,
        window_open=False,
        stuck=1,
        unreadable=2,
    )
    assert value(registry, "brupop_hosts_state", state="Idle") is None
    assert value(registry, "brupop_hosts_state", state="RebootedIntoUpdate") == 1
    assert value(registry, "brupop_hosts_version", bottlerocket_version="1.0.0") is None
    assert value(registry, "brupop_nodes_updating") == 1
    assert value(registry, "brupop_update_window_open") == 0
    assert value(registry, "brupop_nodes_stuck") == 1
    assert value(registry, "brupop_shadows_invalid") == 2


def test_transitions_feed_counters_and_durations() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    steps = [
        (S.IDLE, 0),
        (S.STAGED_AND_PERFORMED_UPDATE, 60),
        (S.ERROR_RESET, 90),
        (S.IDLE, 100),
        (S.MONITORING_UPDATE, 400),
        (S.IDLE, 410),
        (S.IDLE, 500),
    ]
    for state, seconds in steps:
        metrics.observe(
            [shadow("a", spec=state, state=state)],
            now=NOW + timedelta(seconds=seconds),
            active=0,
            window_open=True,
            stuck=0,
            unreadable=0,
        )
    assert value(registry, "brupop_updates_failed_total") == 1
    assert value(registry, "brupop_updates_completed_total") == 1
    assert value(registry, "brupop_state_duration_seconds_sum", state="Idle") == 60 + 300
    assert value(registry, "brupop_state_duration_seconds_count", state="StagedAndPerformedUpdate") == 1
    assert value(registry, "brupop_state_duration_seconds_sum", state="MonitoringUpdate") == 10


async def test_each_policys_window_is_exported_for_the_missed_window_alert() -> None:
    fleet = world(shadow("a", current="1.0.0", target="1.1.0"), schedule={"cron": "* * 2-4 * * * *"})
    fleet.policy_objects["open"] = policy("open")
    registry = CollectorRegistry()
    r = reconciler(fleet, [datetime(2024, 3, 15, 10, 0, tzinfo=UTC)], registry=registry)
    await r.reconcile_once()
    assert value(registry, "brupop_policy_window_open", policy="web") == 0  # 10:00, outside 02:00-04:59
    assert value(registry, "brupop_policy_window_open", policy="open") == 1
    assert value(registry, "brupop_policy_window_open", policy="(environment)") == 1
    del fleet.policy_objects["open"]
    await r.reconcile_once()
    assert value(registry, "brupop_policy_window_open", policy="open") is None
