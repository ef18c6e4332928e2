"""The controller's health parts on real sources: the Pod and workload caches listing and watching the real
kube-apiserver (kwok runs the pods), the gatekeeper over them and over the real Prometheus (an alert fires
and clears, a blocking pod comes and goes, a stopped Prometheus blocks with the reason), and the verifier's
snapshot and verdict following a real Deployment's readiness. The reconcile pass is played by the test:
it evaluates after each poke, as the reconciler does."""

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brupop.controller.gatekeeper import Gatekeeper
from brupop.controller.queries import PrometheusQueries
from brupop.controller.verifier import Verifier
from brupop.controller.workloads import ClusterWorkloads
from brupop.kube.client import DEPLOYMENTS, NODES, PODS, ApiError, KubeClient
from brupop.models.health import NodeHealth, Readiness, WorkloadRef, WorkloadSnapshot
from brupop.models.policy import Gates, Verification
from brupop.models.shadow import ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import VerificationRecord
from brupop.policy.checkpoints import Finish, Hold
from brupop.policy.limits import Count
from brupop.policy.pools import Pool
from integ.kubetools import create_nodes, ensure_namespace, eventually
from integ.prometheus import PrometheusServer, TestExporter, stop
from tests.factories import shadow

NAMESPACE = "health-sources"
NODE = "health-n1"
CRITICAL = 'ALERTS{alertstate="firing",severity="critical"}'
WEB = WorkloadRef(kind="Deployment", namespace=NAMESPACE, name="web")
Obj = dict[str, Any]


def now() -> datetime:
    return datetime.now(UTC)


class Pass:
    """What the reconciler does for the gates: evaluate again whenever a cache pokes."""

    def __init__(self, kube: KubeClient) -> None:
        self.pokes = 0
        self.queries = PrometheusQueries(interval=timedelta(seconds=1), on_change=self.poke, clock=now)
        self.workloads = ClusterWorkloads(kube, on_change=self.poke)
        self.gatekeeper = Gatekeeper(queries=self.queries, workloads=self.workloads)
        self.verifier = Verifier(queries=self.queries, workloads=self.workloads)

    def poke(self) -> None:
        self.pokes += 1

    def blocks(self, pool: Pool, nodes: list[NodeHealth]) -> list[str]:
        report = self.gatekeeper.evaluate(
            {pool.name: pool}, {pool.name: [NODE]}, nodes=nodes, in_cycle=frozenset(), now=now()
        )
        return [b.reason for b in report.blocked.get(NODE, ())]

    async def aclose(self) -> None:
        await self.queries.aclose()
        await self.workloads.aclose()


@pytest.fixture
async def world(kube: KubeClient) -> AsyncIterator[Pass]:
    await ensure_namespace(kube, NAMESPACE)
    with contextlib.suppress(ApiError):
        await create_nodes(kube, [NODE])
    found = Pass(kube)
    try:
        yield found
    finally:
        await found.aclose()
        with contextlib.suppress(ApiError):
            await kube.request("DELETE", DEPLOYMENTS.path(namespace=NAMESPACE))
        with contextlib.suppress(ApiError):
            await kube.request("DELETE", PODS.path(namespace=NAMESPACE), params={"gracePeriodSeconds": "0"})
        with contextlib.suppress(ApiError):
            await kube.delete(NODES, NODE)


def gated(gates: dict[str, Any]) -> Pool:
    return Pool(name="gated", limit=Count(1), schedule=None, gates=Gates.from_wire(gates))


HEALTHY = [NodeHealth(name=NODE, ready=True, unschedulable=False)]


async def settles(
    check: Callable[[], list[str]], wanted: Callable[[list[str]], bool], what: str
) -> list[str]:
    async def found() -> list[str] | None:
        blocks = check()
        return blocks if wanted(blocks) else None

    return await eventually(found, within=60, what=what)


@pytest.mark.integration
async def test_a_firing_alert_blocks_until_it_clears_and_a_stopped_prometheus_blocks_with_its_reason(
    world: Pass, exporter: TestExporter, prometheus: PrometheusServer
) -> None:
    pool = gated({"prometheus": {"url": prometheus.url, "query": CRITICAL}})
    assert world.blocks(pool, HEALTHY) == ["Prometheus has not been asked yet"]
    await settles(lambda: world.blocks(pool, HEALTHY), lambda b: b == [], "the first answer")
    exporter.fire("BrupopTestCritical")
    firing = await settles(lambda: world.blocks(pool, HEALTHY), bool, "the alert to block")
    assert firing == [f"alert BrupopTestCritical firing (query {CRITICAL})"]
    exporter.clear("BrupopTestCritical")
    await settles(lambda: world.blocks(pool, HEALTHY), lambda b: b == [], "the alert to clear")
    stop(prometheus)
    down = await settles(lambda: world.blocks(pool, HEALTHY), bool, "a stopped Prometheus to block")
    assert down == ["Prometheus unreachable: connection refused (fail closed)"]
    open_pool = gated({"prometheus": {"url": prometheus.url, "query": CRITICAL, "failOpen": True}})
    assert world.blocks(open_pool, HEALTHY) == []


def pod(name: str, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
    }


@pytest.mark.integration
async def test_a_blocking_pod_holds_while_it_exists(world: Pass, kube: KubeClient) -> None:
    pool = gated({"pods": [{"selector": {"matchLabels": {"app": "backup"}}, "scope": "Node"}]})
    assert world.blocks(pool, HEALTHY) == ["the controller has not listed the cluster's pods yet"]
    await settles(lambda: world.blocks(pool, HEALTHY), lambda b: b == [], "the pods listed")
    await kube.create(PODS, pod("backup-0", app="backup"), namespace=NAMESPACE)
    blocked = await settles(lambda: world.blocks(pool, HEALTHY), bool, "the pod to block")
    assert blocked == [f"pod {NAMESPACE}/backup-0 on this node matches the blocking selector app=backup"]
    await kube.delete(PODS, "backup-0", namespace=NAMESPACE, options={"gracePeriodSeconds": 0})
    await settles(lambda: world.blocks(pool, HEALTHY), lambda b: b == [], "the pod to go")
    unhealthy = [NodeHealth(name="other", ready=False, unschedulable=False), *HEALTHY]
    cluster = gated({"cluster": {"maxUnhealthyNodes": 0}})
    assert world.blocks(cluster, unhealthy) == [
        "1 of 2 nodes unhealthy, at most 0 allowed (maxUnhealthyNodes 0): other (NotReady)"
    ]


def web(replicas: int) -> Obj:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "containers": [{"name": "c", "image": "nginx"}],
                },
            },
        },
    }


@pytest.mark.integration
async def test_the_snapshot_and_the_verdict_follow_a_real_deployment(world: Pass, kube: KubeClient) -> None:
    pool = Pool(name="verified", limit=Count(1), schedule=None, verification=Verification.from_wire({}))
    await kube.create(DEPLOYMENTS, web(2), namespace=NAMESPACE)
    world.verifier.need({"verified": pool}, {})

    async def snapshot() -> dict[WorkloadRef, Readiness] | None:
        found = world.verifier.snapshot(NODE)
        return found if found and found.get(WEB) == Readiness(ready=2, desired=2) else None

    before = await eventually(snapshot, within=60, what="the deployment ready in the snapshot")
    assert set(before) == {WEB}  # the ReplicaSet followed to its Deployment
    record = VerificationRecord(version="1.1.0", snapshot=WorkloadSnapshot.of(before, taken_at=now()))
    back = replace(
        shadow(NODE, spec=ShadowState.MONITORING_UPDATE, state=ShadowState.MONITORING_UPDATE),
        spec=ShadowSpec(
            state=ShadowState.MONITORING_UPDATE,
            version="1.1.0",
            state_transition_timestamp=Timestamp.from_datetime(now()),
        ),
    )
    world.verifier.need({"verified": pool}, {"verified": [NODE]})
    node = HEALTHY[0]
    assert isinstance(world.verifier.after_update(pool, back, record, node=node, gates=(), now=now()), Finish)
    # As a drain would: the node cordoned, a pod evicted; its replacement cannot run until the uncordon.
    await kube.merge_patch(NODES, NODE, {"spec": {"unschedulable": True}})
    pods, _ = await kube.list(PODS, namespace=NAMESPACE, label_selector="app=web")
    await kube.delete(
        PODS, pods[0]["metadata"]["name"], namespace=NAMESPACE, options={"gracePeriodSeconds": 0}
    )

    async def held() -> Hold | None:
        verdict = world.verifier.after_update(pool, back, record, node=node, gates=(), now=now())
        return verdict if isinstance(verdict, Hold) else None

    waiting = await eventually(held, within=60, what="the deleted pod to show as a regression")
    assert waiting.message == f"verifying: deployment {NAMESPACE}/web 1/2 ready, 2 before the update"

    await kube.merge_patch(NODES, NODE, {"spec": {"unschedulable": False}})

    async def back_again() -> bool:
        return isinstance(
            world.verifier.after_update(pool, back, record, node=node, gates=(), now=now()), Finish
        )

    await eventually(back_again, within=60, what="the replacement pod ready")
