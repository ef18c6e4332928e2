"""The Pods and workloads the gates and verification read: informers only while a need is declared (per
owner: the pod gate's and verification's needs add up), objects trimmed to their facts as they arrive (a
list item carries no kind: the resource gives it), and nothing known until listed."""

from typing import Any

from brupop.controller.workloads import ClusterWorkloads, Throttle
from brupop.kube.client import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS
from brupop.models.health import OwnerRef, PodFact, Readiness, WorkloadRef
from tests.unit.controller.pokes import Pokes
from tests.unit.controller.sources import Kube

Obj = dict[str, Any]


def owned(kind: str, name: str) -> list[Obj]:
    return [{"kind": kind, "name": name, "controller": True, "apiVersion": "apps/v1", "uid": "u"}]


POD = {
    "metadata": {
        "namespace": "app",
        "name": "web-1",
        "resourceVersion": "5",
        "labels": {"app": "web"},
        "ownerReferences": owned("ReplicaSet", "web-abc"),
        "managedFields": [{"big": "x" * 1000}],
    },
    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
    "status": {"phase": "Running"},
}
REPLICASET = {
    "metadata": {
        "namespace": "app",
        "name": "web-abc",
        "resourceVersion": "6",
        "ownerReferences": owned("Deployment", "web"),
    },
    "spec": {"replicas": 3},
    "status": {"readyReplicas": 3},
}
DEPLOYMENT = {
    "metadata": {"namespace": "app", "name": "web", "resourceVersion": "7"},
    "spec": {"replicas": 3},
    "status": {"readyReplicas": 2},
}
WEB = WorkloadRef(kind="Deployment", namespace="app", name="web")


def kube() -> Kube:
    return Kube(
        {
            PODS: [POD],
            REPLICASETS: [REPLICASET],
            DEPLOYMENTS: [DEPLOYMENT],
            STATEFULSETS: [],
            DAEMONSETS: [],
        }
    )


async def test_nothing_is_watched_or_known_without_a_need() -> None:
    cluster = ClusterWorkloads(kube(), on_change=lambda: None)
    cluster.need("gates", pods=False, workloads=False)
    assert cluster.pods() is None
    assert cluster.workloads() is None
    assert cluster.snapshot("n1") is None
    await cluster.aclose()


async def test_pods_only_for_a_pod_gate_trimmed_to_their_facts() -> None:
    source = kube()
    changes = Pokes()
    cluster = ClusterWorkloads(source, on_change=changes)
    cluster.need("gates", pods=True, workloads=False)
    await changes.until(lambda: cluster.pods() is not None)
    assert cluster.pods() == [
        PodFact(
            namespace="app",
            name="web-1",
            node="n1",
            labels={"app": "web"},
            phase="Running",
            owner=OwnerRef(kind="ReplicaSet", name="web-abc"),
        )
    ]
    assert cluster.workloads() is None
    assert cluster.snapshot("n1") is None  # the workloads are not known
    assert source.sources[REPLICASETS].watching == 0
    assert changes.count == 1
    await cluster.aclose()


async def test_needs_of_several_owners_add_up_and_a_snapshot_follows_replica_sets_to_deployments() -> None:
    source = kube()
    changes = Pokes()
    cluster = ClusterWorkloads(source, on_change=changes)
    cluster.need("gates", pods=True, workloads=False)
    cluster.need("verification", pods=True, workloads=True)
    await changes.until(lambda: cluster.snapshot("n1") is not None)
    assert cluster.snapshot("n1") == {WEB: Readiness(ready=2, desired=3)}
    assert cluster.snapshot("n2") == {}
    workloads = cluster.workloads()
    assert workloads is not None
    assert workloads[WEB].readiness == Readiness(ready=2, desired=3)
    assert cluster.readiness() == {
        WEB: Readiness(ready=2, desired=3),
        WorkloadRef(kind="ReplicaSet", namespace="app", name="web-abc"): Readiness(ready=3, desired=3),
    }
    cluster.need("verification", pods=False, workloads=False)
    assert cluster.pods() is not None  # the pod gate still needs them
    assert cluster.workloads() is None
    await source.sources[DEPLOYMENTS].seen.until(lambda: source.sources[DEPLOYMENTS].watching == 0)
    cluster.need("gates", pods=False, workloads=False)
    assert cluster.pods() is None
    await cluster.aclose()


async def test_changes_poke_at_once_then_at_most_once_per_interval() -> None:
    pokes = Pokes()
    throttle = Throttle(pokes, interval=0.05)
    for _ in range(5):
        throttle()
    assert pokes.count == 1  # the first change at once
    await pokes.until(lambda: pokes.count == 2)  # the others together, once the interval has passed
    throttle()
    assert pokes.count == 2  # within the interval of the last poke: later
    assert throttle.pending
    await pokes.until(lambda: pokes.count == 3)
    assert not throttle.pending
    throttle()
    assert throttle.pending
    throttle.cancel()  # the pending poke is dropped
    assert not throttle.pending
    assert pokes.count == 3
