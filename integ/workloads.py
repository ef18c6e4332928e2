"""The cluster side of an end-to-end run: PDB-guarded workloads pinned to the run's own nodes, and the
cleaning that lets runs share one cluster with each other and with other tests."""

from __future__ import annotations

import contextlib
from typing import Any

from brupop.kube.client import (
    DAEMONSETS,
    DEPLOYMENTS,
    NODES,
    PDBS,
    PODS,
    REPLICASETS,
    SHADOWS,
    STATEFULSETS,
    ApiError,
    KubeClient,
    Resource,
)
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE
from integ.kubetools import ensure_namespace, eventually, pod_ready

WORKLOADS = "workloads"
Obj = dict[str, Any]


E2E_NODES = {"integ.brupop.bottlerocket.aws/e2e": "true"}
"""The label of the nodes an end-to-end run creates. Its workloads run only there: nodes that other tests
left in a shared cluster would otherwise attract them, and the drains of the run would be empty."""


async def workloads(kube: KubeClient) -> None:
    """As the Rust brupop's integ: nginx Deployment x5, StatefulSet x3, PDBs minAvailable 2; a DaemonSet."""
    await ensure_namespace(kube, WORKLOADS)
    pod = {"nodeSelector": E2E_NODES, "containers": [{"name": "nginx", "image": "nginx"}]}
    await _app(kube, DEPLOYMENTS, "Deployment", "nginx", pod, replicas=5)
    await _app(kube, STATEFULSETS, "StatefulSet", "web", pod, replicas=3, serviceName="web")
    await _app(kube, DAEMONSETS, "DaemonSet", "logs", pod)
    for name in ("nginx", "web"):
        await _budget(kube, name, min_available=2)
    try:
        await eventually(lambda: workloads_ready(kube), within=120, what="the workloads to run")
    except TimeoutError as err:
        raise TimeoutError(f"{err}; their pods:\n{await describe_pods(kube)}") from None


async def describe_pods(kube: KubeClient) -> str:
    """The workloads' pods, one a line: node (or unscheduled), phase, ready, terminating."""
    pods, _ = await kube.list(PODS, namespace=WORKLOADS)
    lines = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        lines.append(
            f"  {meta['name']}: {(pod.get('spec') or {}).get('nodeName') or 'not scheduled'}, "
            f"{status.get('phase')}, {'ready' if pod_ready(pod) else 'not ready'}"
            + (", terminating" if meta.get("deletionTimestamp") else "")
        )
    return "\n".join(lines) or "  none"


async def workloads_ready(kube: KubeClient) -> bool:
    """Every workload at its replica count, all ready."""
    deployment = await kube.get(DEPLOYMENTS, "nginx", namespace=WORKLOADS)
    sts = await kube.get(STATEFULSETS, "web", namespace=WORKLOADS)
    return (deployment.get("status") or {}).get("readyReplicas") == 5 and (sts.get("status") or {}).get(
        "readyReplicas"
    ) == 3


async def blocking_workload(kube: KubeClient, node: str) -> None:
    """One pod pinned to `node` whose PDB (minAvailable 1 of 1) never allows its eviction; returns once it
    runs there."""
    pod = {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [{"name": "c", "image": "nginx"}]}
    await _app(kube, DEPLOYMENTS, "Deployment", "stubborn", pod, replicas=1)
    await _budget(kube, "stubborn", min_available=1)

    async def running() -> bool:
        deployment = await kube.get(DEPLOYMENTS, "stubborn", namespace=WORKLOADS)
        return (deployment.get("status") or {}).get("readyReplicas") == 1

    try:
        await eventually(running, within=60, what="the pod of the blocking PDB to run")
    except TimeoutError as err:
        raise TimeoutError(f"{err}; the pods:\n{await describe_pods(kube)}") from None


async def _app(kube: KubeClient, resource: Resource, kind: str, name: str, pod: Obj, **spec: Any) -> None:
    """A workload controller of `kind` whose pods (labelled app=`name`) run `pod`."""
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": pod}
    body = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {**spec, "selector": {"matchLabels": labels}, "template": template},
    }
    await kube.create(resource, body, namespace=WORKLOADS)


async def _budget(kube: KubeClient, app: str, *, min_available: int) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
    }
    await kube.create(PDBS, body, namespace=WORKLOADS)


async def _existing(
    kube: KubeClient, resource: Resource, namespace: str, label_selector: str | None = None
) -> list[Obj]:
    """The objects, or none when their kind is not installed yet (a first run)."""
    try:
        return (await kube.list(resource, namespace=namespace, label_selector=label_selector))[0]
    except ApiError as err:
        if err.status != 404:
            raise
        return []


def _ours(obj: Obj) -> bool:
    """Made by an end-to-end run: an e2e node, a pod on one, or the shadow of one."""
    name = str(obj["metadata"]["name"])
    return name.startswith(("e2e-", "brs-e2e-")) or str(
        (obj.get("spec") or {}).get("nodeName", "")
    ).startswith("e2e-")


async def clean(kube: KubeClient) -> None:
    """Remove what an earlier run left, and wait until it is gone, so runs can share one cluster (with each
    other and with other tests): a pod or shadow of a deleted node lingers until garbage collection, and a
    new node of the same name would inherit it (a StatefulSet pod name still taken, an agent pod whose
    token dies, a stale shadow)."""
    agents = f"{COMPONENT_LABEL}={AGENT_COMPONENT}"
    controllers = (DEPLOYMENTS, REPLICASETS, STATEFULSETS, DAEMONSETS)
    for resource in (*controllers, PDBS):
        with contextlib.suppress(ApiError):  # nothing to delete on a first run
            await kube.request("DELETE", resource.path(namespace=WORKLOADS))
    with contextlib.suppress(ApiError):
        await kube.request("DELETE", PODS.path(namespace=WORKLOADS), params={"gracePeriodSeconds": "0"})

    async def leftovers() -> list[tuple[Resource, str | None, str]]:
        # The workload controllers too: one the garbage collector has not removed yet (a ReplicaSet of a
        # deleted Deployment) makes pods again, into the next run (seed 254 started with two of each).
        found = [
            *[(r, WORKLOADS, o) for r in controllers for o in await _existing(kube, r, WORKLOADS)],
            *((PODS, WORKLOADS, o) for o in await _existing(kube, PODS, WORKLOADS)),
            *((PODS, NAMESPACE, o) for o in await _existing(kube, PODS, NAMESPACE, label_selector=agents)),
            *((SHADOWS, NAMESPACE, o) for o in await _existing(kube, SHADOWS, NAMESPACE)),
            *((NODES, None, o) for o in (await kube.list(NODES))[0]),
        ]
        return [(r, ns, o["metadata"]["name"]) for r, ns, o in found if ns == WORKLOADS or _ours(o)]

    left: list[tuple[Resource, str | None, str]] = []

    async def gone() -> bool:
        """Delete what is left (a DaemonSet re-creates a pod until its node is gone); True once nothing is."""
        left[:] = await leftovers()
        for resource, namespace, name in left:
            with contextlib.suppress(ApiError):  # already gone
                await kube.delete(resource, name, namespace=namespace, options={"gracePeriodSeconds": 0})
        return not left

    try:
        await eventually(gone, within=60, what="the previous run's objects to go")
    except TimeoutError as err:
        names = ", ".join(f"{r.plural} {ns + '/' if ns else ''}{name}" for r, ns, name in left)
        raise TimeoutError(f"{err}; still there: {names}") from None
