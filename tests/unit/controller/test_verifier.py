"""The verifier: the caches it asks for (Pods and workloads while a policy verifies workloads, a health
query only while a node of its pool is being verified), the snapshot before a cordon, and the verdict after
an update from what the caches hold (a health answer from before the node came back is not used)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx

from brupop.controller.queries import PrometheusQueries
from brupop.controller.verifier import Verifier
from brupop.controller.workloads import ClusterWorkloads
from brupop.kube.client import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS
from brupop.models.health import NodeHealth, Readiness, WorkloadRef, WorkloadSnapshot
from brupop.models.policy import Verification
from brupop.models.shadow import ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import VerificationRecord
from brupop.policy.checkpoints import Finish, Hold
from brupop.policy.limits import Count
from brupop.policy.pools import Pool
from tests.factories import shadow
from tests.unit.controller.pokes import Pokes
from tests.unit.controller.sources import Kube

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
WEB = WorkloadRef(kind="Deployment", namespace="app", name="web")
READY = NodeHealth(name="n1", ready=True, unschedulable=False)


def deployment(ready: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "app", "name": "web", "resourceVersion": "7"},
        "spec": {"replicas": 3},
        "status": {"readyReplicas": ready},
    }


POD = {
    "metadata": {
        "namespace": "app",
        "name": "web-0",
        "resourceVersion": "5",
        "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
    },
    "spec": {"nodeName": "n1"},
    "status": {"phase": "Running"},
}


def pool(name: str, verification: dict[str, Any] | None) -> Pool:
    return Pool(
        name=name,
        limit=Count(1),
        schedule=None,
        verification=None if verification is None else Verification.from_wire(verification),
    )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, *, ready: int = 3) -> None:
        self.pokes = Pokes()
        self.clock = Clock()
        self.kube = Kube(
            {PODS: [POD], REPLICASETS: [], DEPLOYMENTS: [deployment(ready)], STATEFULSETS: [], DAEMONSETS: []}
        )
        self.queries = PrometheusQueries(interval=timedelta(hours=1), on_change=self.pokes, clock=self.clock)
        self.workloads = ClusterWorkloads(self.kube, on_change=self.pokes)
        self.verifier = Verifier(queries=self.queries, workloads=self.workloads)

    async def aclose(self) -> None:
        await self.queries.aclose()
        await self.workloads.aclose()


def back(*, at: datetime = NOW) -> Any:
    found = shadow(
        "n1", spec=ShadowState.MONITORING_UPDATE, state=ShadowState.MONITORING_UPDATE, current="1.1.0"
    )
    spec = ShadowSpec(
        state=ShadowState.MONITORING_UPDATE,
        version="1.1.0",
        state_transition_timestamp=Timestamp.from_datetime(at),
    )
    return replace(found, spec=spec)


RECORD = VerificationRecord(
    version="1.1.0",
    snapshot=WorkloadSnapshot.of({WEB: Readiness(ready=3, desired=3)}, taken_at=NOW - timedelta(minutes=3)),
)


async def test_without_verification_nothing_is_watched_or_asked() -> None:
    world = World()
    world.verifier.need({"plain": pool("plain", None)}, {"plain": ["n1"]})
    assert world.workloads.pods() is None
    assert world.queries.asking == frozenset()
    assert world.verifier.snapshot("n1") is None
    await world.aclose()


async def test_the_snapshot_before_the_cordon_is_the_readiness_of_the_nodes_workloads() -> None:
    world = World()
    world.verifier.need({"verified": pool("verified", {})}, {})
    assert world.queries.asking == frozenset()  # no health query, and no node being verified
    await world.pokes.until(lambda: world.verifier.snapshot("n1") is not None)
    assert world.verifier.snapshot("n1") == {WEB: Readiness(ready=3, desired=3)}
    world.verifier.need({"verified": pool("verified", {"workloads": False})}, {})
    assert world.workloads.pods() is None
    await world.aclose()


async def test_a_workload_not_back_holds_the_node_and_the_verdict_follows_the_cache() -> None:
    world = World(ready=1)
    pools = {"verified": pool("verified", {})}
    world.verifier.need(pools, {"verified": ["n1"]})
    await world.pokes.until(lambda: world.workloads.readiness() is not None)
    held = world.verifier.after_update(pools["verified"], back(), RECORD, node=READY, gates=(), now=NOW)
    assert isinstance(held, Hold)
    assert held.message == "verifying: deployment app/web 1/3 ready, 3 before the update"
    world.verifier.need(pools, {"verified": ["n1"]})
    gone = world.verifier.after_update(pools["verified"], back(), RECORD, node=None, gates=(), now=NOW)
    assert isinstance(gone, Hold)
    assert gone.message.startswith("verifying: the Node is gone")
    await world.aclose()


@respx.mock
async def test_the_health_query_is_asked_while_a_node_is_verified_and_only_answers_since_it_came_back() -> (
    None
):
    respx.get(QUERY_URL).mock(
        return_value=httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
        )
    )
    world = World()
    pools = {
        "verified": pool("verified", {"workloads": False, "prometheus": {"url": URL, "query": "errors"}})
    }
    world.verifier.need(pools, {})
    assert world.queries.asking == frozenset()
    world.verifier.need(pools, {"verified": ["n1"]})
    assert len(world.queries.asking) == 1
    await world.pokes.until(lambda: world.pokes.count)
    too_old = world.verifier.after_update(
        pools["verified"], back(at=NOW + timedelta(seconds=1)), RECORD, node=READY, gates=(), now=NOW
    )
    assert isinstance(too_old, Hold)
    assert too_old.message == "verifying: the health query has not been asked yet"
    done = world.verifier.after_update(pools["verified"], back(), RECORD, node=READY, gates=(), now=NOW)
    assert isinstance(done, Finish)
    world.verifier.need(pools, {})
    assert world.queries.asking == frozenset()
    await world.aclose()
