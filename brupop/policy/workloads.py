"""The workload-health snapshot: before a node is cordoned, the readiness of every workload that has pods
on it; after its update, whether any of them came back less ready than it was.

A workload is the pod's controller, followed up one step from a ReplicaSet to its Deployment (a rollout
replaces the ReplicaSet, not the Deployment): Deployments, StatefulSets, DaemonSets and bare ReplicaSets.
Pods with no such controller (bare pods, Jobs, custom controllers) are not followed.

A workload regresses when it has fewer ready replicas than `min(ready before, desired now)` minus the
tolerance: a workload already degraded before the drain is not asked to do better than it did, one scaled
down since is not asked for more than it wants, and one deleted since is not compared at all. The
tolerance is a count, or a percentage of the desired replicas rounded down (10% of 5 tolerates none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from brupop.models.health import WORKLOAD_KINDS, PodFact, Readiness, WorkloadFact, WorkloadRef
from brupop.policy.limits import tolerance


def workload_of(pod: PodFact, workloads: Mapping[WorkloadRef, WorkloadFact]) -> WorkloadRef | None:
    """The workload a pod belongs to (None: not one brupop follows)."""
    if pod.owner is None or pod.owner.kind not in WORKLOAD_KINDS:
        return None
    ref = WorkloadRef(kind=pod.owner.kind, namespace=pod.namespace, name=pod.owner.name)
    owner = workloads[ref].owner if ref in workloads else None
    if ref.kind == "ReplicaSet" and owner is not None and owner.kind == "Deployment":
        return WorkloadRef(kind="Deployment", namespace=pod.namespace, name=owner.name)
    return ref


def take_snapshot(
    node: str, pods: Iterable[PodFact], workloads: Mapping[WorkloadRef, WorkloadFact]
) -> dict[WorkloadRef, Readiness]:
    """The readiness of the workloads with unfinished pods on `node` (those whose readiness is known)."""
    refs = {workload_of(pod, workloads) for pod in pods if pod.node == node and not pod.finished}
    return {ref: workloads[ref].readiness for ref in refs if ref is not None and ref in workloads}


@dataclass(frozen=True, slots=True)
class Regression:
    workload: WorkloadRef
    before: Readiness
    now: Readiness
    tolerated: int
    """Ready replicas fewer than expected that the tolerance allows."""

    def message(self) -> str:
        allowed = f", {self.tolerated} fewer tolerated" if self.tolerated else ""
        return f"{self.workload} {self.now}, {self.before.ready} before the update{allowed}"


def regressions(
    before: Mapping[WorkloadRef, Readiness], now: Mapping[WorkloadRef, Readiness], tolerance_of: int | str
) -> list[Regression]:
    """The snapshot's workloads that are now less ready than the tolerance allows, by identity."""
    found = []
    for ref in sorted(before):
        current = now.get(ref)
        if current is None:
            continue
        allowed = tolerance(tolerance_of, current.desired)
        if current.ready < min(before[ref].ready, current.desired) - allowed:
            found.append(Regression(workload=ref, before=before[ref], now=current, tolerated=allowed))
    return found
