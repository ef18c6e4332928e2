"""The controller's view of the fleet and its writes, on the Kubernetes API.

Two informers: the shadows of the controller's namespace, and every Node (trimmed on arrival to name, UID,
labels and schedulability, since Nodes carry image lists of tens of kilobytes). Shadows are validated once
per resourceVersion; one that does not validate is left alone and logged, not acted upon. Each write puts
its result straight into the cache (`Informer.assume`), so the next pass already sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from brupop.kube.client import EVENTS, LEASES, NODES, SHADOWS, ApiError, KubeClient
from brupop.kube.informer import Informer
from brupop.kube.leader import LeaseConflictError, micro_time
from brupop.models.constants import API_VERSION_V2, KIND, UPDATER_INTERFACE_LABEL
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.models.wire import WireError
from brupop.policy.rollout import NodeInfo

log = structlog.get_logger("brupop.controller")
Obj = dict[str, Any]
REPORTER = "brupop.bottlerocket.aws/controller"


PARSED = "brupop.parsed"
"""Where a cached object keeps what decisions read of it: a Node's NodeInfo, a shadow's validated model
(None when the shadow is invalid)."""


def trim_node(node: Obj) -> Obj:
    """What the controller caches of a Node: its identity (cache key) and its NodeInfo, which keeps only the
    opt-in label of the dozen a kubelet sets. A heartbeat changes neither, so it wakes nobody. Idempotent."""
    if PARSED in node:
        return node
    meta = node.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "resourceVersion") if k in meta}
    labels = meta.get("labels") or {}
    opt_in = {k: labels[k] for k in (UPDATER_INTERFACE_LABEL,) if k in labels}
    info = NodeInfo(name=str(meta.get("name", "")), uid=str(meta.get("uid", "")), labels=opt_in)
    return {"metadata": kept, PARSED: info}


def trim_shadow(shadow: Obj) -> Obj:
    """What the controller caches of a shadow: its identity (cache key, Events) and the validated model,
    through which alone spec and status are read. Validating once per change and keeping only the model
    halves what each shadow costs; the rest (managedFields above all) is dropped. Idempotent."""
    if PARSED in shadow:
        return shadow
    meta = shadow.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    owners = [{"name": o.get("name")} for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    if owners:
        kept["ownerReferences"] = owners
    model: BottlerocketShadow | None
    wire: Obj = {"metadata": kept, **{k: shadow[k] for k in ("spec", "status") if k in shadow}}
    try:
        model = BottlerocketShadow.from_wire(wire)
    except WireError as err:
        log.error("ignoring an invalid BottlerocketShadow", shadow=kept.get("name"), error=str(err))
        model = None
    return {"metadata": kept, PARSED: model}


class ClusterFleet:
    def __init__(
        self, *, kube: KubeClient, namespace: str, on_change: Callable[[], None], instance: str
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._instance = instance
        self.shadow_informer = Informer(
            kube.list_watch(SHADOWS, namespace=namespace, transform=trim_shadow),
            name="shadows",
            transform=trim_shadow,
            on_change=on_change,
        )
        self.node_informer = Informer(
            kube.list_watch(NODES, transform=trim_node),
            name="nodes",
            transform=trim_node,
            on_change=on_change,
        )

    def shadows(self) -> list[BottlerocketShadow]:
        return [obj[PARSED] for obj in self.shadow_informer.items() if obj[PARSED] is not None]

    def nodes(self) -> Mapping[str, NodeInfo]:
        return {n[PARSED].name: n[PARSED] for n in self.node_informer.items()}

    async def write_spec(self, name: str, spec: ShadowSpec) -> None:
        patch = {"apiVersion": API_VERSION_V2, "kind": KIND, "spec": spec.to_wire()}
        try:
            written = await self._kube.merge_patch(SHADOWS, name, patch, namespace=self._namespace)
        except ApiError as err:
            log.warning("spec write failed; the next pass retries", shadow=name, error=str(err))
            return
        self.shadow_informer.assume(written)

    async def delete_shadow(self, name: str) -> None:
        try:
            await self._kube.delete(SHADOWS, name, namespace=self._namespace)
        except ApiError as err:
            if not err.not_found:
                log.warning("shadow delete failed; the next pass retries", shadow=name, error=str(err))
                return
        self.shadow_informer.forget(f"{self._namespace}/{name}")

    async def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        obj = self.shadow_informer.get(f"{self._namespace}/{name}") or {"metadata": {"name": name}}
        now = datetime.now(UTC)
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}-", "namespace": self._namespace},
            "eventTime": micro_time(now),
            "reportingController": REPORTER,
            "reportingInstance": self._instance,
            "action": reason,
            "reason": reason,
            "note": message,
            "type": "Warning" if warning else "Normal",
            "regarding": {
                "apiVersion": API_VERSION_V2,
                "kind": KIND,
                "name": name,
                "namespace": self._namespace,
                "uid": obj["metadata"].get("uid"),
            },
        }
        try:
            await self._kube.create(EVENTS, event, namespace=self._namespace)
        except ApiError as err:
            log.warning("event not recorded", shadow=name, reason=reason, error=str(err))


class ClusterLeaseStore:
    """`brupop.kube.leader.LeaseStore` on the Kubernetes API."""

    def __init__(self, kube: KubeClient, *, name: str, namespace: str) -> None:
        self._kube = kube
        self._name = name
        self._namespace = namespace

    async def get(self) -> Obj | None:
        try:
            return await self._kube.get(LEASES, self._name, namespace=self._namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def create(self, body: Obj) -> Obj:
        try:
            return await self._kube.create(LEASES, body, namespace=self._namespace)
        except ApiError as err:
            if err.conflict:
                raise LeaseConflictError(str(err)) from None
            raise

    async def replace(self, body: Obj) -> Obj:
        try:
            return await self._kube.replace(LEASES, self._name, body, namespace=self._namespace)
        except ApiError as err:
            if err.conflict:
                raise LeaseConflictError(str(err)) from None
            raise
