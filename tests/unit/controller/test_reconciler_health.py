"""The reconciler with the health gates and verification wired in (`brupop.controller.health` over real
caches: Prometheus through respx, Pods and workloads from scripted sources): nothing listed or asked
without health settings, a gate holding new starts and staged nodes before their cordon (in-flight nodes
finish), the waiting annotation, a GateBlocked Event once, the metrics, verification and soak holding the
slot, and a failed verification ending the cycle as a failed update that spends the failure budget."""

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from brupop.controller.health import Health
from brupop.controller.health_metrics import HealthMetrics
from brupop.controller.metrics import FleetMetrics
from brupop.controller.queries import PrometheusQueries
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.controller.workloads import ClusterWorkloads
from brupop.kube.client import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS
from brupop.models import constants as c
from brupop.models.progress import CycleStart, History, Outcome, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import VerificationOutcome, VerificationRecord
from brupop.observe.prometheus import PrometheusClient
from brupop.policy.rollout import NodeInfo
from tests.controller_doubles import LABELS, Fleet, Lease
from tests.factories import shadow
from tests.unit.controller.pokes import Pokes
from tests.unit.controller.sources import Kube

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
S = ShadowState
POOL = "example.com/pool"
URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
ALERTS = 'ALERTS{alertstate="firing",severity="critical"}'


def firing(*alerts: str) -> httpx.Response:
    result = [{"metric": {"alertname": a, "alertstate": "firing"}, "value": [1, "1"]} for a in alerts]
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})


def at(node: str, state: ShadowState, *, since: datetime = NOW, version: str = "1.1.0") -> BottlerocketShadow:
    """A node whose agent reached `state`, as the spec asked at `since`."""
    current = "1.1.0" if state is S.MONITORING_UPDATE else "1.0.0"
    found = shadow(node, spec=state, state=state, current=current, target="1.1.0")
    spec = ShadowSpec(state=state, state_transition_timestamp=Timestamp.from_datetime(since), version=version)
    began = CycleStart(
        from_version="1.0.0", to_version=version, start=Timestamp.from_datetime(since - timedelta(minutes=10))
    )
    metadata = {**found.metadata, "annotations": {c.CYCLE_ANNOTATION: json.dumps(began.to_wire())}}
    return BottlerocketShadow(metadata=metadata, spec=spec, status=found.status)


class World:
    """A fleet in one policy's pool, a reconciler with real health parts, and its metrics."""

    def __init__(self, *shadows: BottlerocketShadow, clock: list[datetime], **spec: Any) -> None:
        self.fleet = Fleet(list(shadows))
        for name in self.fleet.node_info:
            self.fleet.node_info[name] = NodeInfo(name=name, uid="u", labels={**LABELS, POOL: "web"})
        self.fleet.policy_objects["web"] = {
            "metadata": {"name": "web", "uid": "uid-web", "generation": 1},
            "spec": {"nodeSelector": {"matchLabels": {POOL: "web"}}, **spec},
        }
        self.pokes = Pokes()
        self.kube = Kube({PODS: [], REPLICASETS: [], DEPLOYMENTS: [], STATEFULSETS: [], DAEMONSETS: []})
        self.queries = PrometheusQueries(
            interval=timedelta(milliseconds=20),
            on_change=self.pokes,
            clock=lambda: clock[0],
            client=lambda q: PrometheusClient(url=q.url, timeout=q.timeout),
        )
        self.registry = CollectorRegistry()
        self.health = Health(
            queries=self.queries,
            workloads=ClusterWorkloads(self.kube, on_change=self.pokes),
            metrics=HealthMetrics(self.registry),
        )
        self.reconciler = Reconciler(
            view=self.fleet,
            writer=self.fleet,
            leadership=Lease(),
            settings=ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "1"}, now=NOW),
            metrics=FleetMetrics(self.registry),
            clock=lambda: clock[0],
            health=self.health,
        )

    def state(self, node: str) -> ShadowState:
        return self.fleet.by_name[f"brs-{node}"].spec.state

    def annotations(self, node: str) -> Mapping[str, str]:
        return self.fleet.by_name[f"brs-{node}"].annotations

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def answered(self, times: int) -> None:
        """Wait until Prometheus's outcome changed `times` times in all (each change pokes)."""
        await self.pokes.until(lambda: self.pokes.count >= times)


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_without_health_settings_each_step_is_taken_at_once_and_nothing_is_listed_or_asked(
    mocked: respx.MockRouter,
) -> None:
    world = World(at("a", S.STAGED_AND_PERFORMED_UPDATE), clock=[NOW], maxConcurrent=2)
    world.fleet.by_name["brs-b"] = at("b", S.MONITORING_UPDATE)
    world.fleet.node_info["b"] = NodeInfo(name="b", uid="u", labels={**LABELS, POOL: "web"})
    await world.reconciler.reconcile_once()
    assert (world.state("a"), world.state("b")) == (S.REBOOTED_INTO_UPDATE, S.IDLE)
    assert c.VERIFICATION_ANNOTATION not in world.annotations("a")
    assert c.WAITING_ANNOTATION not in world.annotations("a")
    assert world.queries.asking == frozenset()
    assert all(source.lists == 0 for source in world.kube.sources.values())
    assert not mocked.calls
    await world.health.aclose()


async def test_a_firing_alert_holds_new_starts_and_staged_nodes_until_it_clears_in_flight_nodes_finish(
    mocked: respx.MockRouter,
) -> None:
    answers = [firing("KubeNodeNotReady")]
    mocked.get(QUERY_URL).mock(side_effect=lambda request: answers[0])
    clock = [NOW]
    world = World(
        at("a", S.STAGED_AND_PERFORMED_UPDATE),
        at("r", S.REBOOTED_INTO_UPDATE),
        shadow("b", current="1.0.0", target="1.1.0"),
        clock=clock,
        maxConcurrent=3,
        gates={"prometheus": {"url": URL, "query": ALERTS}},
    )
    await world.reconciler.reconcile_once()
    await world.answered(1)
    clock[0] = NOW + timedelta(seconds=5)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.STAGED_AND_PERFORMED_UPDATE  # not cordoned
    assert world.state("b") is S.IDLE  # not started
    assert world.state("r") is S.MONITORING_UPDATE  # past its cordon: it finishes
    said = Waiting.from_json(world.annotations("a")[c.WAITING_ANNOTATION])
    assert said.reason == "GateBlocked"
    assert said.message == (
        f"blocked by the prometheus gate before its cordon: alert KubeNodeNotReady firing (query {ALERTS})"
    )
    assert said.since.instant == NOW  # since the first block (not asked yet, then firing: one block)
    assert Waiting.from_json(world.annotations("b")[c.WAITING_ANNOTATION]).reason == "GateBlocked"
    assert world.metric("brupop_gate_blocked", policy="web", gate="prometheus") == 2
    assert world.fleet.policy_events.count(("web", "GateBlocked", False)) == 1
    [shown] = world.fleet.policy_objects["web"]["status"]["blockedBy"]
    assert (shown["gate"], shown["nodes"], shown["since"]) == (
        "prometheus",
        ["a", "b"],
        Timestamp.from_datetime(NOW).text,
    )
    answers[0] = firing()
    await world.answered(2)
    clock[0] = NOW + timedelta(seconds=10)
    await world.reconciler.reconcile_once()
    assert (world.state("a"), world.state("b")) == (S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE)
    assert c.WAITING_ANNOTATION not in world.annotations("a")
    assert c.WAITING_ANNOTATION not in world.annotations("b")
    assert world.metric("brupop_gate_blocked", policy="web", gate="prometheus") is None
    await world.health.aclose()


async def test_prometheus_down_blocks_with_its_reason_and_fail_open_does_not(
    mocked: respx.MockRouter,
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connect failed") from ConnectionRefusedError(111, "Connection refused")

    mocked.get(QUERY_URL).mock(side_effect=refused)
    for fail_open in (False, True):
        clock = [NOW]
        gate = {"url": URL, "query": ALERTS, "failOpen": fail_open}
        world = World(shadow("b", current="1.0.0", target="1.1.0"), clock=clock, gates={"prometheus": gate})
        await world.reconciler.reconcile_once()
        await world.answered(1)
        await world.reconciler.reconcile_once()
        if fail_open:
            assert world.state("b") is S.STAGED_AND_PERFORMED_UPDATE
        else:
            assert world.state("b") is S.IDLE
            said = Waiting.from_json(world.annotations("b")[c.WAITING_ANNOTATION])
            assert said.message.startswith("blocked by the prometheus gate: Prometheus unreachable: ")
            assert said.message.endswith(" (fail closed)"), said.message
        await world.health.aclose()


async def test_verification_and_soak_keep_the_slot_then_free_it(mocked: respx.MockRouter) -> None:
    clock = [NOW]
    world = World(
        at("a", S.MONITORING_UPDATE),
        shadow("b", current="1.0.0", target="1.1.0"),
        clock=clock,
        verification={"workloads": False, "soak": "1m"},
    )
    next_pass = await world.reconciler.reconcile_once()
    assert world.state("a") is S.MONITORING_UPDATE  # soaking: the slot stays taken
    assert world.state("b") is S.IDLE
    record = VerificationRecord.from_json(world.annotations("a")[c.VERIFICATION_ANNOTATION])
    assert record.verified_at == Timestamp.from_datetime(NOW)
    assert Waiting.from_json(world.annotations("a")[c.WAITING_ANNOTATION]).reason == "Soaking"
    assert world.metric("brupop_nodes_verifying", policy="web") == 1
    assert world.fleet.policy_objects["web"]["status"]["verifying"] == 1
    next_pass = await world.reconciler.reconcile_once()
    assert next_pass == NOW + timedelta(minutes=1)  # the soak's end wakes the pass
    clock[0] = NOW + timedelta(seconds=30)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.MONITORING_UPDATE  # the soak never ends early
    clock[0] = NOW + timedelta(minutes=1)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.IDLE
    record = VerificationRecord.from_json(world.annotations("a")[c.VERIFICATION_ANNOTATION])
    assert record.outcome is VerificationOutcome.PASSED
    assert world.metric("brupop_verifications_total", policy="web", outcome="Passed") == 1
    assert world.metric("brupop_nodes_verifying", policy="web") is None
    await world.health.aclose()


async def test_a_staged_node_is_cordoned_with_its_record_in_the_same_patch(mocked: respx.MockRouter) -> None:
    world = World(at("a", S.STAGED_AND_PERFORMED_UPDATE), clock=[NOW], verification={"workloads": False})
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.REBOOTED_INTO_UPDATE
    assert world.fleet.writes.count("spec brs-a") == 1
    record = VerificationRecord.from_json(world.annotations("a")[c.VERIFICATION_ANNOTATION])
    assert (record.version, record.outcome) == ("1.1.0", None)
    await world.health.aclose()


async def test_a_failed_verification_is_a_failed_update_and_a_budget_of_one_halts_the_pool(
    mocked: respx.MockRouter,
) -> None:
    clock = [NOW]
    world = World(
        at("a", S.MONITORING_UPDATE),
        shadow("b", current="1.0.0", target="1.1.0"),
        clock=clock,
        verification={"workloads": False, "timeout": "1m"},
        failureBudget={"maxFailures": 1, "window": "1h"},
    )
    world.fleet.node_info["a"] = NodeInfo(name="a", uid="u", labels={**LABELS, POOL: "web"}, ready=False)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.MONITORING_UPDATE
    said = Waiting.from_json(world.annotations("a")[c.WAITING_ANNOTATION])
    assert said.reason == "Verifying"
    assert "Ready" in said.message, said.message
    assert world.fleet.events == []
    next_pass = await world.reconciler.reconcile_once()
    assert next_pass == NOW + timedelta(minutes=1)  # the verification's deadline wakes the pass
    clock[0] = NOW + timedelta(minutes=1, seconds=1)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.IDLE  # the cycle ends: brupop cannot take an update back
    record = VerificationRecord.from_json(world.annotations("a")[c.VERIFICATION_ANNOTATION])
    assert record.outcome is VerificationOutcome.FAILED
    assert "Ready" in record.reason, record.reason
    assert ("brs-a", "VerificationFailed", True) in world.fleet.events
    assert ("a", "VerificationFailed") in world.fleet.node_events
    assert world.metric("brupop_verifications_total", policy="web", outcome="Failed") == 1
    await world.reconciler.reconcile_once()
    assert ("web", "PolicyHalted", True) in world.fleet.policy_events
    status = world.fleet.policy_objects["web"]["status"]
    assert status["halted"]["failedNodes"] == ["a"]
    assert "verification failed" in status["failures"][0]["reason"]
    # The agent reports Idle: the cycle goes into the history as Failed, and b does not start (halted).
    a = world.fleet.by_name["brs-a"]
    assert a.status is not None
    world.fleet.by_name["brs-a"] = replace(a, status=replace(a.status, current_state=S.IDLE))
    await world.reconciler.reconcile_once()
    assert world.state("b") is S.IDLE
    [cycle] = History.from_json(world.annotations("a")[c.HISTORY_ANNOTATION]).cycles
    assert cycle.outcome is Outcome.FAILED
    assert cycle.reason.startswith("verification failed: "), cycle
    await world.health.aclose()


async def test_a_node_held_at_its_cordon_past_its_stuck_deadline_is_not_stuck(
    mocked: respx.MockRouter,
) -> None:
    mocked.get(QUERY_URL).mock(return_value=firing("KubeNodeNotReady"))
    clock = [NOW]
    world = World(
        at("a", S.STAGED_AND_PERFORMED_UPDATE),
        clock=clock,
        stuckAfter="10m",
        gates={"prometheus": {"url": URL, "query": ALERTS}},
    )
    await world.reconciler.reconcile_once()
    await world.answered(1)
    clock[0] = NOW + timedelta(hours=1)
    await world.reconciler.reconcile_once()
    assert world.state("a") is S.STAGED_AND_PERFORMED_UPDATE
    assert ("brs-a", "UpdateStuck", True) not in world.fleet.events  # the controller holds it, not the agent
    await world.health.aclose()
