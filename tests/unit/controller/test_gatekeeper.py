"""The gatekeeper: per-node gate verdicts for the nodes waiting at a gate from the caches (Prometheus
through respx, Pods from scripted informer sources), a block's `since` kept across passes, Prometheus
asked only while some node waits or soaks, the Pod cache only while some policy has a pod gate, fail
closed by default, and what an Event and the metric need (gates that began blocking, counts)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from brupop.controller.gatekeeper import Began, Gatekeeper
from brupop.controller.queries import PrometheusQueries
from brupop.controller.workloads import ClusterWorkloads
from brupop.kube.client import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS
from brupop.models.health import NodeHealth
from brupop.models.policy import GateKind, Gates
from brupop.observe.prometheus import PrometheusClient
from brupop.policy.admission import GateBlocked
from brupop.policy.limits import Count
from brupop.policy.pools import Pool
from tests.unit.controller.pokes import Pokes
from tests.unit.controller.sources import Kube

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
ALERTS = 'ALERTS{alertstate="firing",severity="critical"}'
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
NODES = [NodeHealth(name=n, ready=True, unschedulable=False) for n in ("n1", "n2", "n3")]


def firing(*alerts: str) -> httpx.Response:
    result = [{"metric": {"alertname": a, "alertstate": "firing"}, "value": [1, "1"]} for a in alerts]
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connect failed") from ConnectionRefusedError(111, "Connection refused")


def pool(name: str, gates: dict[str, Any] | None) -> Pool:
    return Pool(
        name=name,
        limit=Count(1),
        schedule=None,
        gates=None if gates is None else Gates.from_wire(gates),
    )


BACKUP_POD = {
    "metadata": {"namespace": "ops", "name": "backup-0", "resourceVersion": "3", "labels": {"app": "backup"}},
    "spec": {"nodeName": "n2"},
    "status": {"phase": "Running"},
}


class World:
    """A gatekeeper over real caches: Prometheus through respx (or `transport`), Pods from a scripted
    source."""

    def __init__(
        self, pods: list[dict[str, Any]] | None = None, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.pokes = Pokes()
        self.kube = Kube(
            {PODS: pods or [], REPLICASETS: [], DEPLOYMENTS: [], STATEFULSETS: [], DAEMONSETS: []}
        )
        self.queries = PrometheusQueries(
            interval=timedelta(hours=1),
            on_change=self.pokes,
            clock=lambda: NOW,
            client=lambda q: PrometheusClient(url=q.url, timeout=q.timeout, transport=transport),
        )
        self.workloads = ClusterWorkloads(self.kube, on_change=self.pokes)
        self.gatekeeper = Gatekeeper(queries=self.queries, workloads=self.workloads)

    async def aclose(self) -> None:
        await self.queries.aclose()
        await self.workloads.aclose()


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_no_gates_no_verdicts_and_nothing_asked_or_watched(mocked: respx.MockRouter) -> None:
    world = World()
    report = world.gatekeeper.evaluate(
        {"plain": pool("plain", None)}, {"plain": ["n1"]}, nodes=NODES, in_cycle=frozenset(), now=NOW
    )
    assert report.blocked == {}
    assert report.first() == {}
    assert report.began == ()
    assert world.queries.asking == frozenset()
    assert world.workloads.pods() is None
    await world.aclose()


async def test_a_firing_alert_blocks_every_waiting_node_and_its_since_is_kept(
    mocked: respx.MockRouter,
) -> None:
    answers = [firing("KubeNodeNotReady")]
    mocked.get(QUERY_URL).mock(side_effect=lambda request: answers[0])
    world = World()
    pools = {"quiet": pool("quiet", {"prometheus": {"url": URL, "query": ALERTS}})}
    first = world.gatekeeper.evaluate(
        pools, {"quiet": ["n1", "n2"]}, nodes=NODES, in_cycle=frozenset(), now=NOW
    )
    not_asked = GateBlocked(gate=GateKind.PROMETHEUS, reason="Prometheus has not been asked yet", since=NOW)
    assert first.blocked == {"n1": (not_asked,), "n2": (not_asked,)}  # fail closed until it answers
    assert first.began == (
        Began(pool="quiet", gate=GateKind.PROMETHEUS, reason=not_asked.reason, nodes=("n1", "n2")),
    )
    await world.pokes.until(lambda: world.pokes.count)
    later = NOW + timedelta(seconds=30)
    second = world.gatekeeper.evaluate(
        pools, {"quiet": ["n1", "n2"]}, nodes=NODES, in_cycle=frozenset(), now=later
    )
    blocked = GateBlocked(
        gate=GateKind.PROMETHEUS, reason="alert KubeNodeNotReady firing (query " + ALERTS + ")", since=NOW
    )
    assert second.first() == {"n1": blocked, "n2": blocked}
    assert second.began == ()  # it kept blocking: no new Event
    assert second.counts == {("quiet", GateKind.PROMETHEUS): 2}
    await world.aclose()


async def test_prometheus_is_asked_only_while_a_node_waits_or_soaks(mocked: respx.MockRouter) -> None:
    mocked.get(QUERY_URL).mock(return_value=firing())
    world = World()
    pools = {"quiet": pool("quiet", {"prometheus": {"url": URL, "query": ALERTS}})}
    world.gatekeeper.evaluate(pools, {}, nodes=NODES, in_cycle=frozenset(), now=NOW)
    assert world.queries.asking == frozenset()
    soaking = world.gatekeeper.evaluate(
        pools, {}, verifying={"quiet"}, nodes=NODES, in_cycle=frozenset(), now=NOW
    )
    assert len(world.queries.asking) == 1
    assert [b.gate for b in soaking.pool_blocks["quiet"]] == [GateKind.PROMETHEUS]  # not asked yet
    await world.pokes.until(lambda: world.pokes.count)
    calm = world.gatekeeper.evaluate(
        pools, {}, verifying={"quiet"}, nodes=NODES, in_cycle=frozenset(), now=NOW
    )
    assert calm.pool_blocks == {"quiet": ()}
    world.gatekeeper.evaluate(pools, {}, nodes=NODES, in_cycle=frozenset(), now=NOW)
    assert world.queries.asking == frozenset()
    await world.aclose()


@pytest.mark.parametrize(
    ("fail_open", "blocked"),
    [(False, ["Prometheus unreachable: connection refused (fail closed)"]), (True, [])],
)
async def test_an_unreachable_prometheus_blocks_unless_failing_open(
    fail_open: bool, blocked: list[str]
) -> None:
    world = World(transport=httpx.MockTransport(refused))
    pools = {"quiet": pool("quiet", {"prometheus": {"url": URL, "query": ALERTS, "failOpen": fail_open}})}
    world.gatekeeper.evaluate(pools, {"quiet": ["n1"]}, nodes=NODES, in_cycle=frozenset(), now=NOW)
    await world.pokes.until(lambda: world.pokes.count)
    report = world.gatekeeper.evaluate(pools, {"quiet": ["n1"]}, nodes=NODES, in_cycle=frozenset(), now=NOW)
    assert [b.reason for b in report.blocked.get("n1", ())] == blocked
    await world.aclose()


async def test_a_pod_gate_watches_pods_only_while_a_policy_has_one(mocked: respx.MockRouter) -> None:
    world = World(pods=[BACKUP_POD])
    gates = {"pods": [{"selector": {"matchLabels": {"app": "backup"}}}]}
    pools = {"careful": pool("careful", gates), "plain": pool("plain", None)}
    waiting = {"careful": ["n1"], "plain": ["n3"]}
    first = world.gatekeeper.evaluate(pools, waiting, nodes=NODES, in_cycle=frozenset(), now=NOW)
    assert [b.reason for b in first.blocked["n1"]] == ["the controller has not listed the cluster's pods yet"]
    assert "n3" not in first.blocked
    await world.pokes.until(lambda: world.workloads.pods() is not None)
    second = world.gatekeeper.evaluate(pools, waiting, nodes=NODES, in_cycle=frozenset(), now=NOW)
    assert [b.reason for b in second.blocked["n1"]] == [
        "pod ops/backup-0 matches the blocking selector app=backup"
    ]
    world.gatekeeper.evaluate(
        {"plain": pool("plain", None)}, {"plain": ["n3"]}, nodes=NODES, in_cycle=frozenset(), now=NOW
    )
    assert world.workloads.pods() is None  # no pod gate left: the cache is gone
    await world.aclose()


async def test_a_gate_that_lets_go_and_blocks_again_starts_afresh_and_is_announced_again(
    mocked: respx.MockRouter,
) -> None:
    world = World()
    pools = {"careful": pool("careful", {"cluster": {"maxUnhealthyNodes": 0}})}
    sick = [NODES[0], NodeHealth(name="n2", ready=False, unschedulable=False), NODES[2]]
    first = world.gatekeeper.evaluate(
        pools, {"careful": ["n1", "n3"]}, nodes=sick, in_cycle=frozenset(), now=NOW
    )
    (began,) = first.began
    assert began.message() == (
        "the cluster gate blocks nodes n1, n3: 1 of 3 nodes unhealthy, at most 0 allowed "
        "(maxUnhealthyNodes 0): n2 (NotReady)"
    )
    in_cycle = world.gatekeeper.evaluate(
        pools, {"careful": ["n1"]}, nodes=sick, in_cycle=frozenset({"n2"}), now=NOW
    )
    assert in_cycle.blocked == {}  # brupop's own updating node does not count
    later = NOW + timedelta(minutes=1)
    again = world.gatekeeper.evaluate(pools, {"careful": ["n1"]}, nodes=sick, in_cycle=frozenset(), now=later)
    assert again.first()["n1"].since == later
    assert len(again.began) == 1
    await world.aclose()
