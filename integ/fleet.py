"""A fleet of shadows on the local cluster for controller tests: kwok nodes with the brupop label, their
shadows as the apiserver would create them, test "agents" that do what each spec asks instantly, and a
monitor that checks the concurrency invariant on every watch event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from brupop.kube.client import SHADOWS, ApiError, KubeClient
from brupop.models.constants import API_VERSION_V2, KIND, NAMESPACE, shadow_name
from brupop.models.shadow import BottlerocketShadow, ShadowState, ShadowStatus
from brupop.policy.statemachine import is_active
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    ensure_namespace,
    eventually,
    install_crd,
    policy_crd,
    watch_events,
)

Obj = dict[str, Any]


async def prepare(kube: KubeClient) -> None:
    """The CRDs installed as the CRD chart has them (the shadow's, and the UpdatePolicy's: without it the
    controller lists policies again every 30 s), the namespace there, and no shadow left from an earlier
    test."""
    await install_crd(kube, crd_for_local_use())
    await install_crd(kube, policy_crd())
    await ensure_namespace(kube, NAMESPACE)
    await kube.request("DELETE", SHADOWS.path(namespace=NAMESPACE))

    async def empty() -> bool:
        items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
        return not items

    await eventually(empty, what="leftover shadows to be deleted")


async def create_fleet(
    kube: KubeClient, names: list[str], *, current: str = "1.0.0", target: str = "1.1.0"
) -> None:
    nodes = await create_nodes(kube, names, labels=BRUPOP_LABELS)
    for node in nodes:
        await create_shadow(kube, node)
        status = ShadowStatus(
            current_version=current, target_version=target, current_state=ShadowState.IDLE, crash_count=0
        )
        await set_status(kube, node["metadata"]["name"], status)


async def create_shadow(kube: KubeClient, node: Obj) -> Obj:
    """The shadow an agent creates for its Node: owned by it, spec Idle, no status yet."""
    meta = node["metadata"]
    body = BottlerocketShadow(
        metadata={
            "name": shadow_name(meta["name"]),
            "namespace": NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": meta["name"], "uid": meta["uid"]}
            ],
        }
    ).to_wire()
    del body["status"]
    return await kube.create(SHADOWS, body, namespace=NAMESPACE)


async def set_status(kube: KubeClient, node: str, status: ShadowStatus) -> Obj:
    patch = {"apiVersion": API_VERSION_V2, "kind": KIND, "status": status.to_wire()}
    return await kube.merge_patch(
        SHADOWS, shadow_name(node), patch, namespace=NAMESPACE, subresource="status"
    )


async def shadows(kube: KubeClient, prefix: str = "") -> list[BottlerocketShadow]:
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    return [
        BottlerocketShadow.from_wire(o) for o in items if o["metadata"]["name"].startswith(f"brs-{prefix}")
    ]


@dataclass
class Watcher:
    """Follows the shadows brs-<prefix>*: agents answer specs, the monitor keeps the peak active count."""

    kube: KubeClient
    prefix: str
    agents: bool = True
    peak: int = 0
    latest: dict[str, BottlerocketShadow] = field(default_factory=dict)

    async def run(self) -> None:
        async for kind, obj in watch_events(self.kube, SHADOWS, NAMESPACE):
            if kind == "DELETED":
                self.latest.pop(obj["metadata"]["name"], None)
                continue
            shadow = BottlerocketShadow.from_wire(obj)
            self._observe(shadow)
            if self.agents:
                await self._act(shadow)

    def _observe(self, shadow: BottlerocketShadow) -> None:
        if shadow.name.startswith(f"brs-{self.prefix}"):
            self.latest[shadow.name] = shadow
        self.peak = max(self.peak, sum(is_active(s) for s in self.latest.values()))

    async def _act(self, shadow: BottlerocketShadow) -> None:
        status = shadow.status
        if (
            not shadow.name.startswith(f"brs-{self.prefix}")
            or status is None
            or status.current_state is shadow.spec.state
        ):
            return
        if status.current_state is ShadowState.ERROR_RESET and shadow.spec.state is not ShadowState.IDLE:
            return
        update: dict[str, Any] = {"current_state": shadow.spec.state}
        if shadow.spec.state is ShadowState.REBOOTED_INTO_UPDATE and shadow.spec.version:
            update["current_version"] = shadow.spec.version
        if status.current_state is ShadowState.MONITORING_UPDATE:
            update.update(crash_count=0, state_transition_failure_timestamp=None)
        node = shadow.name.removeprefix("brs-")
        with contextlib.suppress(ApiError):
            await set_status(self.kube, node, replace(status, **update))


@contextlib.asynccontextmanager
async def watching(kube: KubeClient, prefix: str, *, agents: bool = True) -> AsyncIterator[Watcher]:
    watcher = Watcher(kube, prefix, agents=agents)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
