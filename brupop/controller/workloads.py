"""The Pods and workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets) that the health gates and
post-update verification read, cached by informers that run only while a policy needs them
(`brupop.controller.ondemand`): Pods while some policy has a pod gate or verifies workloads, the workloads
while some policy verifies workloads. Each user declares its own need (`need(owner, ...)`); the caches run
while any need asks for them.

Objects are trimmed on arrival to the facts decisions read (`brupop.models.health`): a Pod to its name,
node, labels, phase and controller; a workload to its readiness and controller. A list's items carry no
`kind`, so each informer names its own. Until an informer's first list completes, what it caches is not
known (None), which the gates and verification treat as unknown, never as "no pods". Their changes poke
the reconciler at most once a second (`Throttle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from brupop.controller.ondemand import OnDemandInformer
from brupop.kube.client import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS, Resource
from brupop.kube.informer import Informer, ListWatch
from brupop.models.health import PodFact, Readiness, WorkloadFact, WorkloadRef, pod_fact, workload_fact
from brupop.policy.workloads import take_snapshot

Obj = dict[str, Any]
FACT = "brupop.fact"
"""Where a cached object keeps its fact (None: the object does not give one)."""
POKE_INTERVAL: Final = 1.0
"""Seconds between two pokes of the reconciler for changes of Pods or workloads, at most."""
WORKLOADS: Mapping[str, Resource] = {
    "Deployment": DEPLOYMENTS,
    "ReplicaSet": REPLICASETS,
    "StatefulSet": STATEFULSETS,
    "DaemonSet": DAEMONSETS,
}


class Lister(Protocol):
    """What the caches need of a Kubernetes client (`brupop.kube.client.KubeClient` is one)."""

    def list_watch(self, resource: Resource, *, transform: Callable[[Obj], Obj]) -> ListWatch: ...


def _kept(obj: Obj, fact: object) -> Obj:
    meta = obj.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("namespace", "name", "resourceVersion") if k in meta},
        FACT: fact,
    }


def trim_pod(obj: Obj) -> Obj:
    """What the cache keeps of a Pod. Idempotent."""
    return obj if FACT in obj else _kept(obj, pod_fact(obj))


def workload_trim(kind: str) -> Callable[[Obj], Obj]:
    """What the cache keeps of a workload of `kind`. Idempotent."""

    def trim(obj: Obj) -> Obj:
        return obj if FACT in obj else _kept(obj, workload_fact({**obj, "kind": kind}))

    return trim


class Throttle:
    """Calls `call` at most once per `interval` seconds: a change at once when the last call is that old,
    else once the interval has passed, one call for every change in between. Pods change all the time in
    a busy cluster; a reconcile pass per change would keep the controller busy for nothing."""

    def __init__(self, call: Callable[[], None], *, interval: float) -> None:
        self._call = call
        self._interval = interval
        self._last: float | None = None
        self._pending: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def __call__(self) -> None:
        if self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._last is None else self._last + self._interval - loop.time()
        if wait <= 0:
            self._fire()
        else:
            self._pending = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = asyncio.get_running_loop().time()
        self._call()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class ClusterWorkloads:
    def __init__(
        self, kube: Lister, *, on_change: Callable[[], None], poke_interval: float = POKE_INTERVAL
    ) -> None:
        self._poke = Throttle(on_change, interval=poke_interval)

        def cache(resource: Resource, name: str, trim: Callable[[Obj], Obj]) -> OnDemandInformer:
            return OnDemandInformer(
                lambda: Informer(
                    kube.list_watch(resource, transform=trim), name=name, transform=trim, on_change=self._poke
                )
            )

        self._pods = cache(PODS, "pods", trim_pod)
        self._workloads = [cache(r, r.plural, workload_trim(kind)) for kind, r in WORKLOADS.items()]
        self._needs: dict[str, tuple[bool, bool]] = {}

    def need(self, owner: str, *, pods: bool, workloads: bool) -> None:
        """`owner`'s need now; the caches run while any owner's need asks for them."""
        self._needs[owner] = (pods, workloads)
        self._pods.want(any(p for p, _ in self._needs.values()))
        wanted = any(w for _, w in self._needs.values())
        for informer in self._workloads:
            informer.want(wanted)

    def pods(self) -> list[PodFact] | None:
        """Every Pod of the cluster (None: not known)."""
        items = self._pods.items()
        return None if items is None else [obj[FACT] for obj in items if obj[FACT] is not None]

    def workloads(self) -> dict[WorkloadRef, WorkloadFact] | None:
        """Every workload by identity (None: not known, until every kind is listed)."""
        found: dict[WorkloadRef, WorkloadFact] = {}
        for informer in self._workloads:
            items = informer.items()
            if items is None:
                return None
            found.update((obj[FACT].ref, obj[FACT]) for obj in items if obj[FACT] is not None)
        return found

    def readiness(self) -> dict[WorkloadRef, Readiness] | None:
        """Every workload's readiness now (None: not known)."""
        workloads = self.workloads()
        return None if workloads is None else {ref: fact.readiness for ref, fact in workloads.items()}

    def snapshot(self, node: str) -> dict[WorkloadRef, Readiness] | None:
        """The readiness of the workloads with pods on `node` (None: not known)."""
        pods, workloads = self.pods(), self.workloads()
        if pods is None or workloads is None:
            return None
        return take_snapshot(node, pods, workloads)

    async def aclose(self) -> None:
        for informer in [self._pods, *self._workloads]:
            await informer.aclose()
        self._poke.cancel()
