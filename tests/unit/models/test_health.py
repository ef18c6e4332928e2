"""Health facts read from the objects informers cache: what each fact takes from a Node, Pod or workload,
defaults Kubernetes leaves out, one odd object giving None instead of an error, and the workload snapshot
stored as JSON and read back unchanged."""

from datetime import UTC, datetime
from typing import Any

import pytest

from brupop.models.health import (
    SNAPSHOT_LIMIT,
    NodeHealth,
    OwnerRef,
    PodFact,
    Readiness,
    WorkloadRef,
    WorkloadSnapshot,
    node_health,
    pod_fact,
    workload_fact,
)
from brupop.models.wire import WireError


def test_a_node_is_ready_only_when_its_ready_condition_is_true() -> None:
    node = {
        "metadata": {"name": "n1", "annotations": {"a": "b"}},
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "True"}, {"type": "Ready", "status": "True"}]
        },
    }
    assert node_health(node) == NodeHealth(name="n1", ready=True, unschedulable=True, annotations={"a": "b"})
    for conditions in ([{"type": "Ready", "status": "Unknown"}], [], "odd", [7]):
        found = node_health({"metadata": {"name": "n1"}, "status": {"conditions": conditions}})
        assert found == NodeHealth(name="n1", ready=False, unschedulable=False)


@pytest.mark.parametrize(
    "obj", [{}, {"metadata": "x"}, {"metadata": {"name": ""}}, {"metadata": {"name": 3}}]
)
def test_a_node_without_a_name_is_left_out(obj: dict[str, Any]) -> None:
    assert node_health(obj) is None


def test_a_pod_keeps_its_place_labels_phase_and_controller() -> None:
    pod = {
        "metadata": {
            "namespace": "app",
            "name": "web-1",
            "labels": {"app": "web"},
            "ownerReferences": [
                {"kind": "Node", "name": "n1"},
                {"kind": "ReplicaSet", "name": "web-abc", "controller": True},
            ],
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    assert pod_fact(pod) == PodFact(
        namespace="app",
        name="web-1",
        node="n1",
        labels={"app": "web"},
        phase="Running",
        owner=OwnerRef("ReplicaSet", "web-abc"),
    )
    pending = pod_fact({"metadata": {"namespace": "app", "name": "p", "ownerReferences": "odd"}})
    assert pending == PodFact(namespace="app", name="p", node=None, labels={}, phase="Unknown", owner=None)
    assert pending.finished is False
    assert pod_fact({"metadata": {"name": "p"}}) is None
    done = pod_fact({"metadata": {"namespace": "a", "name": "j"}, "status": {"phase": "Succeeded"}})
    assert done is not None
    assert done.finished


def test_workloads_count_desired_and_ready_replicas_by_kind() -> None:
    deployment = workload_fact(
        {
            "kind": "Deployment",
            "metadata": {"namespace": "app", "name": "web"},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": 2},
        }
    )
    assert deployment is not None
    assert deployment.ref == WorkloadRef(kind="Deployment", namespace="app", name="web")
    assert deployment.readiness == Readiness(ready=2, desired=3)
    assert str(deployment.ref) == "deployment app/web"
    assert str(deployment.readiness) == "2/3 ready"
    defaulted = workload_fact({"kind": "StatefulSet", "metadata": {"namespace": "a", "name": "db"}})
    assert defaulted is not None
    assert defaulted.readiness == Readiness(ready=0, desired=1), (
        "spec.replicas defaults to 1, absent counts are 0"
    )
    daemons = workload_fact(
        {
            "kind": "DaemonSet",
            "metadata": {"namespace": "kube-system", "name": "agent"},
            "status": {"desiredNumberScheduled": 5, "numberReady": 4},
        }
    )
    assert daemons is not None
    assert daemons.readiness == Readiness(ready=4, desired=5)
    owned = workload_fact(
        {
            "kind": "ReplicaSet",
            "metadata": {
                "namespace": "a",
                "name": "web-abc",
                "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
            },
            "spec": {"replicas": -1},
            "status": {"readyReplicas": True},
        }
    )
    assert owned is not None
    assert owned.owner == OwnerRef("Deployment", "web")
    assert owned.readiness == Readiness(ready=0, desired=0), "odd counts are 0"


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "Job", "metadata": {"namespace": "a", "name": "j"}},
        {"kind": "Deployment", "metadata": {"name": "x"}},
    ],
)
def test_other_kinds_and_unplaced_workloads_are_left_out(obj: dict[str, Any]) -> None:
    assert workload_fact(obj) is None


def test_a_snapshot_is_stored_as_json_and_read_back() -> None:
    readiness = {
        WorkloadRef(kind="StatefulSet", namespace="a", name="db"): Readiness(ready=2, desired=3),
        WorkloadRef(kind="Deployment", namespace="a", name="web"): Readiness(ready=3, desired=3),
    }
    taken = datetime(2025, 6, 1, 12, tzinfo=UTC)
    snapshot = WorkloadSnapshot.of(readiness, taken_at=taken)
    wire = snapshot.to_wire()
    assert wire["takenAt"] == "2025-06-01T12:00:00.000000000+00:00"
    assert [e["workload"]["kind"] for e in wire["entries"]] == ["Deployment", "StatefulSet"]
    again = WorkloadSnapshot.from_wire(wire)
    assert again.readiness() == readiness
    assert again.taken_at.instant == taken
    with pytest.raises(WireError, match=r"entries.0.readiness.ready"):
        WorkloadSnapshot.from_wire(
            {**wire, "entries": [{**wire["entries"][0], "readiness": {"ready": -1, "desired": 1}}]}
        )


def test_a_snapshot_keeps_at_most_its_limit_of_workloads_and_counts_the_rest() -> None:
    readiness = {
        WorkloadRef(kind="Deployment", namespace="a", name=f"w{i:03d}"): Readiness(ready=1, desired=1)
        for i in range(SNAPSHOT_LIMIT + 3)
    }
    snapshot = WorkloadSnapshot.of(readiness, taken_at=datetime(2025, 6, 1, 12, tzinfo=UTC))
    assert len(snapshot.entries) == SNAPSHOT_LIMIT
    assert snapshot.left_out == 3
    assert snapshot.entries[-1].workload.name == f"w{SNAPSHOT_LIMIT - 1:03d}"  # the first ones by identity
    again = WorkloadSnapshot.from_wire(snapshot.to_wire())
    assert again == snapshot
    too_many = {**snapshot.to_wire(), "entries": snapshot.to_wire()["entries"] * 2}
    with pytest.raises(WireError, match=r"^entries: "):
        WorkloadSnapshot.from_wire(too_many)
    long_name = {"kind": "Deployment", "namespace": "a", "name": "x" * 254}
    with pytest.raises(WireError, match=r"^name: "):
        WorkloadRef.from_wire(long_name)
