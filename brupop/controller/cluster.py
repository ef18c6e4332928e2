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
from brupop.kube.informer import Informer, resource_version
from brupop.kube.leader import LeaseConflictError, micro_time
from brupop.models.constants import API_VERSION_V2, KIND, UPDATER_INTERFACE_LABEL
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.models.wire import WireError
from brupop.policy.rollout import NodeInfo

log = structlog.get_logger("brupop.controller")
Obj = dict[str, Any]
REPORTER = "brupop.bottlerocket.aws/controller"


def trim_node(node: Obj) -> Obj:
    """A Node as decisions read it: identity, the opt-in label (a kubelet sets a dozen others), and
    schedulability."""
    meta = node.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta}
    labels = meta.get("labels") or {}
    kept["labels"] = (
        {UPDATER_INTERFACE_LABEL: labels[UPDATER_INTERFACE_LABEL]}
        if UPDATER_INTERFACE_LABEL in labels
        else {}
    )
    return {
        "metadata": kept,
        "spec": {"unschedulable": bool((node.get("spec") or {}).get("unschedulable"))},
    }


PARSED = "brupop.parsed"
"""Where a cached shadow keeps its validated model (None when the object is invalid)."""


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
        self._nodes: dict[str, tuple[str, NodeInfo]] = {}

    def shadows(self) -> list[BottlerocketShadow]:
        return [obj[PARSED] for obj in self.shadow_informer.items() if obj[PARSED] is not None]

    def nodes(self) -> Mapping[str, NodeInfo]:
        """Every Node's NodeInfo, rebuilt only for Nodes that changed since the last pass."""
        fresh: dict[str, tuple[str, NodeInfo]] = {}
        for n in self.node_informer.items():
            meta = n["metadata"]
            name, version = str(meta["name"]), resource_version(n)
            cached = self._nodes.get(name)
            if cached is None or cached[0] != version:
                info = NodeInfo(name=name, uid=str(meta.get("uid", "")), labels=meta.get("labels") or {})
                cached = (version, info)
            fresh[name] = cached
        self._nodes = fresh
        return {name: info for name, (_, info) in fresh.items()}

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
