"""End to end: a whole simulated fleet updated by brupop on the local control plane.

Real: kube-apiserver, etcd, controller-manager, scheduler, the CRD with its conversion webhook, the
manifest's RBAC and agent DaemonSet, PDB-guarded workloads, two brupop apiserver replicas, the controller
(as its own service account, leader-elected) and one agent per node (each with its own pod-bound tokens).
Simulated: the Bottlerocket hosts (integ.hostsim) and the kubelets (kwok).

Monitors check the invariants on every watch event and fail the run at once: never more nodes cordoned
by brupop than MAX_CONCURRENT_UPDATE, no PDB below its minimum. At the end every node must be Idle on the
new version, uncordoned, and every workload back to its replica count. A timeline closes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from brupop.controller.main import run as run_controller
from brupop.controller.settings import ControllerSettings
from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import DEPLOYMENTS, NODES, PDBS, SHADOWS, ApiError, KubeClient, Resource
from brupop.models.constants import NAMESPACE
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_BRUPOP
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    ensure_namespace,
    eventually,
    install_crd,
)
from integ.operator import (
    brupop_apiserver,
    config_as,
    install_agents,
    install_rbac,
    node_agent,
    service_account_token,
)

OLD, NEW = "1.20.3", "1.21.0"
WORKLOADS = "workloads"
STATEFULSETS = Resource("apps", "v1", "statefulsets", namespaced=True)
DAEMONSETS = Resource("apps", "v1", "daemonsets", namespaced=True)
Obj = dict[str, Any]


class InvariantBrokenError(AssertionError):
    pass


@dataclass
class Options:
    nodes: int = 6
    concurrency: int = 2
    time_scale: float = 0.05
    timings: Timings = field(default_factory=lambda: Timings(refresh=1, prepare=20, activate=1, reboot=30))
    live: TextIO | None = None


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    states: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))

    def record(self, node: str, state: str) -> None:
        history = self.states[node]
        if not history or history[-1][1] != state:
            history.append((time.monotonic() - self.started, state))

    def report(self, *, total: float, ideal: float) -> str:
        lines = [
            f"{'node':<14} "
            + "  ".join(
                f"{s:<24}"
                for s in ("StagedAndPerformedUpdate", "RebootedIntoUpdate", "MonitoringUpdate", "Idle (done)")
            )
        ]
        for node in sorted(self.states):
            at = {state: t for t, state in self.states[node]}
            cells = [
                f"{at[s]:6.1f}s" if s in at else "-"
                for s in ("StagedAndPerformedUpdate", "RebootedIntoUpdate", "MonitoringUpdate")
            ]
            done = self.states[node][-1][0] if self.states[node][-1][1] == "Idle" else None
            cells.append(f"{done:6.1f}s" if done is not None else "-")
            lines.append(f"{node:<14} " + "  ".join(f"{c:<24}" for c in cells))
        lines.append(
            f"total {total:.1f}s, ideal {ideal:.1f}s for these host timings and concurrency, "
            f"overhead ratio {total / ideal:.2f}"
        )
        return "\n".join(lines)


def ideal_seconds(options: Options) -> float:
    """Waves of `concurrency` nodes, each needing refresh + prepare + activate + reboot on its host."""
    t = options.timings
    per_node = (t.refresh + t.prepare + t.activate + t.reboot) * options.time_scale
    return math.ceil(options.nodes / max(options.concurrency, 1)) * per_node


async def workloads(kube: KubeClient) -> None:
    """As the Rust brupop's integ: nginx Deployment x5, StatefulSet x3, PDBs minAvailable 2; a DaemonSet."""
    await ensure_namespace(kube, WORKLOADS)
    pod = {"containers": [{"name": "nginx", "image": "nginx"}]}
    labels = {"app": "nginx"}
    await kube.create(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "nginx"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        namespace=WORKLOADS,
    )
    web = {"app": "web"}
    await kube.create(
        STATEFULSETS,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "serviceName": "web",
                "selector": {"matchLabels": web},
                "template": {"metadata": {"labels": web}, "spec": pod},
            },
        },
        namespace=WORKLOADS,
    )
    logs = {"app": "logs"}
    await kube.create(
        DAEMONSETS,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "logs"},
            "spec": {
                "selector": {"matchLabels": logs},
                "template": {"metadata": {"labels": logs}, "spec": pod},
            },
        },
        namespace=WORKLOADS,
    )
    for name, selector in (("nginx", labels), ("web", web)):
        await kube.create(
            PDBS,
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": selector}},
            },
            namespace=WORKLOADS,
        )

    await eventually(lambda: workloads_ready(kube), within=120, what="the workloads to run")


async def workloads_ready(kube: KubeClient) -> bool:
    """Every workload at its replica count, all ready."""
    deployment = await kube.get(DEPLOYMENTS, "nginx", namespace=WORKLOADS)
    sts = await kube.get(STATEFULSETS, "web", namespace=WORKLOADS)
    return (deployment.get("status") or {}).get("readyReplicas") == 5 and (sts.get("status") or {}).get(
        "readyReplicas"
    ) == 3


async def _watch(
    kube: KubeClient, resource: Resource, namespace: str | None = None
) -> AsyncIterator[tuple[str, Obj]]:
    items, version = await kube.list(resource, namespace=namespace)
    for obj in items:
        yield "ADDED", obj
    while True:
        async for kind, obj in kube.watch(resource, namespace=namespace, resource_version=version):
            version = obj.get("metadata", {}).get("resourceVersion", version)
            yield kind, obj


async def monitor_nodes(kube: KubeClient, limit: int, prefix: str) -> None:
    cordoned: set[str] = set()
    async for kind, node in _watch(kube, NODES):
        name = node["metadata"]["name"]
        if not name.startswith(prefix):
            continue
        mine = (node["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION) == CORDONED_BY_BRUPOP
        (cordoned.add if mine and kind != "DELETED" else cordoned.discard)(name)
        if len(cordoned) > limit:
            raise InvariantBrokenError(
                f"{len(cordoned)} nodes cordoned by brupop at once ({sorted(cordoned)}), limit {limit}"
            )


async def monitor_pdbs(kube: KubeClient) -> None:
    async for _, pdb in _watch(kube, PDBS, WORKLOADS):
        status = pdb.get("status") or {}
        if (
            "currentHealthy" in status
            and status["currentHealthy"] < pdb["spec"]["minAvailable"]
            and status.get("observedGeneration")
        ):
            # A budget can dip only when a pod dies on its own; brupop's evictions never take it below.
            raise InvariantBrokenError(
                f"PDB {pdb['metadata']['name']}: {status['currentHealthy']} healthy, "
                f"minAvailable {pdb['spec']['minAvailable']}"
            )


async def follow_shadows(kube: KubeClient, timeline: Timeline, live: TextIO | None) -> None:
    latest: dict[str, BottlerocketShadow] = {}
    last_draw = 0.0
    async for kind, obj in _watch(kube, SHADOWS, NAMESPACE):
        shadow = BottlerocketShadow.model_validate(obj)
        node = shadow.name.removeprefix("brs-")
        if kind == "DELETED":
            latest.pop(node, None)
            continue
        latest[node] = shadow
        if shadow.status is not None:
            timeline.record(node, shadow.status.current_state.value)
        if live is not None and time.monotonic() - last_draw > 0.5:
            last_draw = time.monotonic()
            draw(latest, live, elapsed=time.monotonic() - timeline.started)


def draw(shadows: dict[str, BottlerocketShadow], out: TextIO, *, elapsed: float) -> None:
    rows = [f"{'NAME':<16}{'STATE':<26}{'VERSION':<10}{'TARGET STATE':<26}{'TARGET VERSION':<16}CRASH COUNT"]
    for node in sorted(shadows):
        s = shadows[node]
        st = s.status
        rows.append(
            f"{'brs-' + node:<16}{st.current_state.value if st else '':<26}"
            f"{st.current_version if st else '':<10}"
            f"{s.spec.state.value:<26}{s.spec.version or '':<16}{st.crash_count if st else ''}"
        )
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    out.write(f"{clear}t={elapsed:5.1f}s\n" + "\n".join(rows) + "\n\n")
    out.flush()


async def fleet_done(kube: KubeClient, count: int) -> bool:
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    shadows = [BottlerocketShadow.model_validate(o) for o in items]
    return len(shadows) == count and all(
        s.status is not None
        and s.status.current_state is ShadowState.IDLE
        and s.status.current_version == NEW
        and s.spec.state is ShadowState.IDLE
        for s in shadows
    )


async def run_happy_path(cluster: ClusterState, kube: KubeClient, work: Path, options: Options) -> str:
    """Update every node from OLD to NEW; returns the timeline report. Raises on any broken invariant."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    names = [f"e2e-{i}" for i in range(options.nodes)]
    await create_nodes(kube, names, labels=BRUPOP_LABELS)
    await workloads(kube)
    hosts = Fleet(work / "hosts", time_scale=options.time_scale, timings=options.timings)
    hosts.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    hosts.repository.offer(OLD, variant="aws-k8s-1.29", arch="x86_64")
    for name in names:
        await hosts.add(name, version=OLD)
    timeline = Timeline()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(brupop_apiserver(cluster, kube))
        second = await stack.enter_async_context(brupop_apiserver(cluster, kube))
        await install_crd(kube, crd_for_local_use(webhook_url=f"{first.url}/crdconvert", ca_pem=first.ca_pem))
        monitors = [
            asyncio.create_task(monitor_nodes(kube, options.concurrency, "e2e-")),
            asyncio.create_task(monitor_pdbs(kube)),
            asyncio.create_task(follow_shadows(kube, timeline, options.live)),
        ]
        for index, name in enumerate(names):
            server = (first, second)[index % 2]
            await stack.enter_async_context(
                node_agent(cluster, kube, server, node=name, socket=hosts.socket(name))
            )
        settings = ControllerSettings.from_env(
            {"MAX_CONCURRENT_UPDATE": str(options.concurrency)}, now=datetime.now(UTC)
        )
        token = await service_account_token(kube, CONTROLLER_SA)
        controller = asyncio.create_task(
            run_controller(
                settings,
                config_as(cluster, token),
                namespace=NAMESPACE,
                identity="controller-0",
                stop=stop,
                metrics_port=0,
            )
        )
        started = time.monotonic()
        try:
            done = asyncio.create_task(
                eventually(lambda: fleet_done(kube, options.nodes), within=600, what="the rollout")
            )
            finished, _ = await asyncio.wait(
                [done, controller, *monitors], return_when=asyncio.FIRST_COMPLETED
            )
            for task in finished:
                task.result()  # a monitor or the controller ending early raises here
            total = time.monotonic() - started
        finally:
            stop.set()
            for task in monitors:
                task.cancel()
            await asyncio.gather(controller, *monitors, return_exceptions=True)
    await hosts.stop()
    await check_end_state(kube, names)
    return timeline.report(total=total, ideal=ideal_seconds(options))


async def check_end_state(kube: KubeClient, names: list[str]) -> None:
    for name in names:
        node = await kube.get(NODES, name)
        if node["spec"].get("unschedulable"):
            raise InvariantBrokenError(f"node {name} was left cordoned")

    try:
        await eventually(
            lambda: workloads_ready(kube), within=60, what="every workload back to its replica count"
        )
    except TimeoutError as err:
        raise InvariantBrokenError(str(err)) from None


async def clean(kube: KubeClient) -> None:
    """Remove what an earlier run left, so runs can share one cluster."""
    for resource in (DEPLOYMENTS, STATEFULSETS, DAEMONSETS, PDBS):
        with contextlib.suppress(ApiError):
            await kube.request("DELETE", resource.path(namespace=WORKLOADS))
    items, _ = await kube.list(NODES, label_selector="bottlerocket.aws/updater-interface-version=2.0.0")
    for node in items:
        if node["metadata"]["name"].startswith("e2e-"):
            await kube.delete(NODES, node["metadata"]["name"])


def main_happy(cluster: ClusterState, work: Path, options: Options, out: TextIO = sys.stdout) -> str:
    from integ.kubetools import admin

    async def go() -> str:
        async with admin(cluster) as kube:
            await clean(kube)
            return await run_happy_path(cluster, kube, work, options)

    return asyncio.run(go())
