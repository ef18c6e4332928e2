"""The workload snapshot: which workloads a node's pods belong to (a ReplicaSet's Deployment, not the
ReplicaSet), what is recorded, and what counts as a regression (against min(before, desired now), minus
the tolerance); properties: a regression beyond the tolerance is always found, none is found otherwise."""

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.health import OwnerRef, PodFact, Readiness, WorkloadFact, WorkloadRef
from brupop.policy.workloads import Regression, regressions, take_snapshot, workload_of


def ref(kind: str, name: str, namespace: str = "app") -> WorkloadRef:
    return WorkloadRef(kind=kind, namespace=namespace, name=name)


def ready(ready: int, desired: int) -> Readiness:
    return Readiness(ready=ready, desired=desired)


def pod(name: str, owner: OwnerRef | None, *, node: str = "n1", phase: str = "Running") -> PodFact:
    return PodFact(namespace="app", name=name, node=node, labels={}, phase=phase, owner=owner)


WORKLOADS = {
    ref("Deployment", "web"): WorkloadFact(ref=ref("Deployment", "web"), readiness=ready(3, 3), owner=None),
    ref("ReplicaSet", "web-abc"): WorkloadFact(
        ref=ref("ReplicaSet", "web-abc"), readiness=ready(3, 3), owner=OwnerRef("Deployment", "web")
    ),
    ref("ReplicaSet", "bare"): WorkloadFact(ref=ref("ReplicaSet", "bare"), readiness=ready(1, 2), owner=None),
    ref("StatefulSet", "db"): WorkloadFact(ref=ref("StatefulSet", "db"), readiness=ready(2, 3), owner=None),
    ref("DaemonSet", "agent"): WorkloadFact(ref=ref("DaemonSet", "agent"), readiness=ready(5, 5), owner=None),
}


def test_a_replica_set_pod_belongs_to_its_deployment() -> None:
    assert workload_of(pod("web-abc-1", OwnerRef("ReplicaSet", "web-abc")), WORKLOADS) == ref(
        "Deployment", "web"
    )
    assert workload_of(pod("bare-1", OwnerRef("ReplicaSet", "bare")), WORKLOADS) == ref("ReplicaSet", "bare")
    assert workload_of(pod("db-0", OwnerRef("StatefulSet", "db")), WORKLOADS) == ref("StatefulSet", "db")
    assert workload_of(pod("job-1", OwnerRef("Job", "nightly")), WORKLOADS) is None
    assert workload_of(pod("alone", None), WORKLOADS) is None
    unknown_rs = pod("x-1", OwnerRef("ReplicaSet", "gone"))
    assert workload_of(unknown_rs, WORKLOADS) == ref("ReplicaSet", "gone")


def test_the_snapshot_records_the_workloads_with_running_pods_on_the_node() -> None:
    pods = [
        pod("web-abc-1", OwnerRef("ReplicaSet", "web-abc")),
        pod("web-abc-2", OwnerRef("ReplicaSet", "web-abc")),
        pod("db-0", OwnerRef("StatefulSet", "db")),
        pod("agent-x", OwnerRef("DaemonSet", "agent")),
        pod("bare-1", OwnerRef("ReplicaSet", "bare"), phase="Succeeded"),
        pod("elsewhere", OwnerRef("ReplicaSet", "bare"), node="n2"),
        pod("gone-1", OwnerRef("StatefulSet", "unknown")),
        pod("job-1", OwnerRef("Job", "nightly")),
    ]
    assert take_snapshot("n1", pods, WORKLOADS) == {
        ref("Deployment", "web"): ready(3, 3),
        ref("StatefulSet", "db"): ready(2, 3),
        ref("DaemonSet", "agent"): ready(5, 5),
    }


def test_regressions_name_what_regressed() -> None:
    before = {ref("Deployment", "web"): ready(3, 3), ref("StatefulSet", "db"): ready(2, 3)}
    now = {ref("Deployment", "web"): ready(1, 3), ref("StatefulSet", "db"): ready(2, 3)}
    found = regressions(before, now, 0)
    assert found == [
        Regression(workload=ref("Deployment", "web"), before=ready(3, 3), now=ready(1, 3), tolerated=0)
    ]
    assert found[0].message() == "deployment app/web 1/3 ready, 3 before the update"
    assert regressions(before, now, 1)[0].message() == (
        "deployment app/web 1/3 ready, 3 before the update, 1 fewer tolerated"
    )
    assert regressions(before, now, 2) == []


def test_no_workload_is_asked_for_more_than_it_had_or_wants_now_and_deleted_ones_are_not_compared() -> None:
    before = {
        ref("StatefulSet", "db"): ready(2, 3),
        ref("Deployment", "web"): ready(3, 3),
        ref("Deployment", "old"): ready(2, 2),
    }
    now = {ref("StatefulSet", "db"): ready(2, 3), ref("Deployment", "web"): ready(1, 1)}
    assert regressions(before, now, 0) == []


def test_a_percentage_tolerance_is_of_the_desired_replicas_rounded_down() -> None:
    before = {ref("Deployment", "web"): ready(10, 10)}
    assert regressions(before, {ref("Deployment", "web"): ready(9, 10)}, "10%") == []
    assert regressions(before, {ref("Deployment", "web"): ready(8, 10)}, "10%") != []
    small = {ref("Deployment", "api"): ready(5, 5)}
    assert regressions(small, {ref("Deployment", "api"): ready(4, 5)}, "10%") != [], "10% of 5 tolerates none"


@given(
    before_ready=st.integers(0, 50),
    desired=st.integers(0, 50),
    now_ready=st.integers(0, 50),
    tolerance=st.integers(0, 10) | st.integers(0, 100).map(lambda p: f"{p}%"),
)
def test_a_regression_beyond_the_tolerance_is_always_found_and_nothing_else(
    before_ready: int, desired: int, now_ready: int, tolerance: int | str
) -> None:
    web = ref("Deployment", "web")
    allowed = tolerance if isinstance(tolerance, int) else int(tolerance[:-1]) * desired // 100
    found = regressions({web: ready(before_ready, desired)}, {web: ready(now_ready, desired)}, tolerance)
    assert bool(found) == (now_ready < min(before_ready, desired) - allowed)
