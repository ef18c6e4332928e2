"""The controller's view of the fleet and its writes, on the Kubernetes API.

Three informers: the shadows of the controller's namespace; every Node (trimmed on arrival to name, UID,
labels, annotations, taints, brupop's cordon bookkeeping, Ready and unschedulable, since Nodes carry image
lists of tens of kilobytes); and the UpdatePolicies (cluster-scoped; a cluster whose CRD chart predates
them serves none, which counts as no policy). Shadows are validated once per resourceVersion; one that
does not validate is kept as unreadable (it holds a slot) and logged, not acted upon. Each write puts its
result straight into the cache (`Informer.assume`), so the next pass already sees it.

Writes are fenced, so a deposed leader cannot change what its successor decides: each one is checked
against the Lease (`fence()`: seconds this replica may still write; none when 0) right before it is sent,
is abandoned when that time runs out, and carries the resourceVersion its decision was based on as a
precondition, so a late write to an object that changed since (a successor wrote it, an agent reported) is
refused with 409 instead of landing. Retryable failures (no answer, 429, 5xx) are retried by the client
within that time; whatever still fails is retried by a later pass. A Node's write (its in-cycle label and
its policy's duringUpdate marks, one merge patch) carries the precondition whenever it removes anything or
sets marks, so it never undoes what someone changed since; a policy's status goes through its status
subresource, preconditioned the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import structlog

from brupop.controller.reconciler import UnreadableShadow
from brupop.kube.client import LEASES, NODES, POLICIES, SHADOWS, ApiError, KubeClient
from brupop.kube.events import EventRecorder, Regarding
from brupop.kube.informer import Informer, OptionalResource
from brupop.kube.leader import LeaderElector, LeaseConflictError, NotLeadingError
from brupop.models.constants import (
    API_GROUP,
    API_VERSION_POLICY,
    API_VERSION_V2,
    CYCLE_ANNOTATION,
    HISTORY_ANNOTATION,
    IN_CYCLE_LABEL,
    KIND,
    POLICY_KIND,
    POLICY_PLURAL,
    RETRY_ANNOTATION,
    VERIFICATION_ANNOTATION,
    WAITING_ANNOTATION,
)
from brupop.models.health import node_health
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.models.timestamp import Timestamp
from brupop.policy.drain import CORDONED_BY_BRUPOP, cordoned_by
from brupop.policy.marks import MarksChange
from brupop.policy.pools import ENV_POOL
from brupop.policy.rollout import NodeInfo, node_name_of

log = structlog.get_logger("brupop.controller")
Obj = dict[str, Any]
REPORTER = "brupop.bottlerocket.aws/controller"
DRAINED_AT_ANNOTATION = "brupop.bottlerocket.aws/schedule-drained-at"
"""On the leader Lease: when the environment's one-shot schedule last drained (RFC 3339), for every later
leader."""
POLICY_DRAINED_AT_ANNOTATION = "brupop.bottlerocket.aws/policy-schedules-drained-at"
"""On the leader Lease: when each policy's one-shot schedule last drained, a JSON object of policy name to
RFC 3339 time (only the policies whose schedule is a trigger)."""


PARSED = "brupop.parsed"
"""Where a cached object keeps what decisions read of it: a Node's NodeInfo, a shadow's validated model (or
an UnreadableShadow)."""

_KEPT_ANNOTATIONS = (
    WAITING_ANNOTATION,
    HISTORY_ANNOTATION,
    CYCLE_ANNOTATION,
    RETRY_ANNOTATION,
    VERIFICATION_ANNOTATION,
)
"""What decisions read of a shadow's annotations."""


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def trim_node(node: Obj) -> Obj:
    """What the controller caches of a Node: its identity (cache key, write preconditions) and its NodeInfo.
    A heartbeat changes neither, so it wakes nobody. Idempotent."""
    if PARSED in node:
        return node
    meta = node.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "resourceVersion") if k in meta}
    taints = (node.get("spec") or {}).get("taints") or ()
    health = node_health(node)
    info = NodeInfo(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        labels=_strings(meta.get("labels")),
        brupop_cordon=cordoned_by(node) == CORDONED_BY_BRUPOP,
        annotations=_strings(meta.get("annotations")),
        taints=tuple(t for t in taints if isinstance(t, Mapping)),
        ready=health is not None and health.ready,
        unschedulable=health is not None and health.unschedulable,
    )
    return {"metadata": kept, PARSED: info}


def trim_shadow(shadow: Obj) -> Obj:
    """What the controller caches of a shadow: its identity (cache key, Events, write preconditions), the
    annotations it reads (its cycle, history, waiting verdict and retry request) and the validated model,
    through which alone spec and status are read. Validating once per change and keeping only the model
    halves what each shadow costs; the rest (managedFields above all) is dropped. Idempotent."""
    if PARSED in shadow:
        return shadow
    meta = shadow.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    owners = [{"name": o.get("name")} for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    if owners:
        kept["ownerReferences"] = owners
    annotations = _strings(meta.get("annotations"))
    if any(k in annotations for k in _KEPT_ANNOTATIONS):
        kept["annotations"] = {k: annotations[k] for k in _KEPT_ANNOTATIONS if k in annotations}
    wire: Obj = {"metadata": kept, **{k: shadow[k] for k in ("spec", "status") if k in shadow}}
    parsed: BottlerocketShadow | UnreadableShadow
    try:
        parsed = BottlerocketShadow.from_wire(wire)
    except Exception as err:  # one object, whatever is wrong with it, must not stop the informer
        log.error("an invalid BottlerocketShadow", shadow=kept.get("name"), error=str(err))
        parsed = UnreadableShadow(
            name=str(kept.get("name", "")),
            resource_version=str(kept.get("resourceVersion", "")),
            error=str(err) or type(err).__name__,
            node=node_name_of(BottlerocketShadow(metadata=kept)),
        )
    return {"metadata": kept, PARSED: parsed}


def trim_policy(policy: Obj) -> Obj:
    """What the controller caches of an UpdatePolicy: all of it but managedFields (policies are small)."""
    meta = {k: v for k, v in (policy.get("metadata") or {}).items() if k != "managedFields"}
    return {**policy, "metadata": meta}


def _precondition(obj: BottlerocketShadow | Mapping[str, Any]) -> Obj:
    """`{"resourceVersion": ...}` of the object as the decision saw it: a write carrying it is refused (409)
    once the object has changed."""
    meta = obj.metadata if isinstance(obj, BottlerocketShadow) else obj.get("metadata") or {}
    version = meta.get("resourceVersion")
    return {"resourceVersion": version} if version else {}


class ClusterFleet:
    def __init__(
        self,
        *,
        kube: KubeClient,
        namespace: str,
        on_change: Callable[[], None],
        instance: str,
        fence: Callable[[], float],
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._fence = fence
        self.events = EventRecorder(kube, controller=REPORTER, instance=instance)
        """Events are queued and sent by `events.run()`: a pass never waits for one."""
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
        self.policy_informer = Informer(
            OptionalResource(
                kube.list_watch(POLICIES, transform=trim_policy),
                name="updatepolicies",
                rule=f"get, list and watch {POLICY_PLURAL}.{API_GROUP} (the controller's ClusterRole)",
            ),
            name="updatepolicies",
            transform=trim_policy,
            on_change=on_change,
        )

    @property
    def informers(self) -> list[Informer]:
        return [self.shadow_informer, self.node_informer, self.policy_informer]

    def shadows(self) -> list[BottlerocketShadow]:
        parsed = (obj[PARSED] for obj in self.shadow_informer.items())
        return [p for p in parsed if isinstance(p, BottlerocketShadow)]

    def unreadable(self) -> list[UnreadableShadow]:
        parsed = (obj[PARSED] for obj in self.shadow_informer.items())
        return [p for p in parsed if isinstance(p, UnreadableShadow)]

    def nodes(self) -> Mapping[str, NodeInfo]:
        return {n[PARSED].name: n[PARSED] for n in self.node_informer.items()}

    def policies(self) -> list[Obj]:
        return self.policy_informer.items()

    async def _fenced(
        self, what: str, call: Callable[[], Awaitable[Obj]], *, if_missing: Obj | None = None
    ) -> Obj | None:
        """Run one write if this replica may still write, abandoned when that time runs out. Returns what the
        API answered, `if_missing` when the object does not exist, or None when the write did not land
        (logged)."""
        left = self._fence()
        if left <= 0:
            log.warning("not written: this replica does not hold the leader Lease", write=what)
            return None
        try:
            async with asyncio.timeout(left):
                return await call()
        except TimeoutError:
            log.warning("write abandoned at the leader Lease's renew deadline", write=what)
        except ApiError as err:
            if err.not_found:
                return if_missing
            if err.conflict:
                log.info("not written: the object changed since it was read", write=what, error=str(err))
            else:
                log.warning("write failed; a later pass retries", write=what, error=str(err))
        return None

    async def write_shadow(
        self, shadow: BottlerocketShadow, *, spec: ShadowSpec | None, annotations: Mapping[str, str | None]
    ) -> bool:
        """One merge patch of the shadow's spec (None: unchanged) and annotations (None removes)."""
        meta = _precondition(shadow)
        if annotations:
            meta["annotations"] = dict(annotations)
        patch: Obj = {"apiVersion": API_VERSION_V2, "kind": KIND, "metadata": meta}
        if spec is not None:
            patch["spec"] = spec.to_wire()
        written = await self._fenced(
            f"{'spec' if spec is not None else 'annotations'} of {shadow.name}",
            lambda: self._kube.merge_patch(SHADOWS, shadow.name, patch, namespace=self._namespace),
        )
        if written is not None:
            self.shadow_informer.assume(written)
        return written is not None

    async def delete_shadow(self, shadow: BottlerocketShadow) -> bool:
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": _precondition(shadow),
        }
        deleted = await self._fenced(
            f"delete {shadow.name}",
            lambda: self._kube.delete(SHADOWS, shadow.name, namespace=self._namespace, options=options),
            if_missing={},
        )
        if deleted is not None:
            self.shadow_informer.forget(f"{self._namespace}/{shadow.name}")
        return deleted is not None

    async def write_node(self, node: str, *, in_cycle: bool | None, marks: MarksChange) -> bool:
        """One merge patch of the Node: the in-cycle label (None: unchanged) and the duringUpdate marks."""
        cached = self.node_informer.get(node) or {"metadata": {}}
        labels: dict[str, str | None] = dict(marks.labels)
        if in_cycle is not None:
            labels[IN_CYCLE_LABEL] = "true" if in_cycle else None
        meta: Obj = {"labels": labels} if labels else {}
        if marks.annotations:
            meta["annotations"] = dict(marks.annotations)
        if in_cycle is False or not marks.empty:  # never undo a successor's start, or anyone's change since
            meta |= _precondition(cached)
        patch: Obj = {"metadata": meta}
        if marks.taints is not None:
            patch["spec"] = {"taints": marks.taints}
        label = "" if in_cycle is None else f"{IN_CYCLE_LABEL}={'true' if in_cycle else '-'} "
        written = await self._fenced(
            f"{label}{'marks ' if not marks.empty else ''}on {node}",
            lambda: self._kube.merge_patch(NODES, node, patch),
        )
        if written is not None:
            self.node_informer.assume(written)
        return written is not None

    async def write_policy_status(self, policy: Mapping[str, Any], status: UpdatePolicyStatus) -> bool:
        """The policy's status, through its status subresource (a policy deleted meanwhile is no failure)."""
        name = str(policy["metadata"]["name"])
        patch = {"metadata": _precondition(policy), "status": status.to_wire()}
        written = await self._fenced(
            f"status of policy {name}",
            lambda: self._kube.merge_patch(POLICIES, name, patch, subresource="status"),
            if_missing={},
        )
        if written:
            self.policy_informer.assume(written)
        return written is not None

    def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        uid = (self.shadow_informer.get(f"{self._namespace}/{name}") or {}).get("metadata", {}).get("uid")
        regarding = Regarding(API_VERSION_V2, KIND, name, uid, self._namespace)
        self.events.record(regarding, reason=reason, note=message, warning=warning)

    def record_node_event(self, node: str, *, reason: str, message: str, warning: bool = True) -> None:
        info = (self.node_informer.get(node) or {}).get(PARSED)
        regarding = Regarding.node(node, info.uid if info else None)
        self.events.record(regarding, reason=reason, note=message, warning=warning)

    def record_policy_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        uid = ((self.policy_informer.get(name) or {}).get("metadata") or {}).get("uid")
        regarding = Regarding(API_VERSION_POLICY, POLICY_KIND, name, uid)
        self.events.record(regarding, reason=reason, note=message, warning=warning)


class ClusterLeaseStore:
    """`brupop.kube.leader.LeaseStore` and `LeaseWatch` on the Kubernetes API (watching needs list and
    watch on the Lease, which the chart's Role grants for its name)."""

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

    async def changes(self, resource_version: str) -> AsyncGenerator[Obj | None, None]:
        events = self._kube.watch(
            LEASES,
            namespace=self._namespace,
            field_selector=f"metadata.name={self._name}",
            resource_version=resource_version,
        )
        async for kind, obj in events:
            if kind == "ERROR":
                status = int(obj.get("code") or 0)
                raise ApiError(status, str(obj.get("reason", "")), str(obj.get("message", "")))
            if kind != "BOOKMARK":
                yield None if kind == "DELETED" else obj


class LeaseLeadership:
    """`brupop.controller.reconciler.Leadership` from the leader elector and its Lease."""

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector

    def steady(self) -> bool:
        return self._elector.steady()

    def drained_at(self) -> dict[str, datetime]:
        found = {}
        env = self._elector.annotation(DRAINED_AT_ANNOTATION)
        if env is not None:
            found[ENV_POOL] = env
        text = self._elector.annotation(POLICY_DRAINED_AT_ANNOTATION)
        try:
            recorded = json.loads(text) if text is not None else {}
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict):
            log.warning(
                "ignoring an unreadable schedule record on the Lease", record=POLICY_DRAINED_AT_ANNOTATION
            )
            recorded = {}
        found |= {str(k): v for k, v in recorded.items() if k != ENV_POOL}
        return {pool: at for pool, value in found.items() if (at := _instant(pool, value)) is not None}

    async def record_drained(self, pool: str, at: datetime, *, live: Collection[str]) -> bool:
        stamp = Timestamp.from_datetime(at).text
        if pool == ENV_POOL:
            key, value = DRAINED_AT_ANNOTATION, stamp
        else:
            kept = {
                name: Timestamp.from_datetime(moment).text
                for name, moment in self.drained_at().items()
                if name != ENV_POOL and name in live
            }
            key, value = POLICY_DRAINED_AT_ANNOTATION, json.dumps({**kept, pool: stamp}, sort_keys=True)
        try:
            await self._elector.annotate(key, value)
        except (NotLeadingError, ApiError) as err:
            log.warning("schedule state not recorded; a later pass retries", pool=pool, error=str(err))
            return False
        return True


def _instant(pool: str, value: object) -> datetime | None:
    try:
        return Timestamp.parse(str(value)).instant
    except ValueError as err:
        log.warning("ignoring an unreadable schedule record on the Lease", pool=pool, error=str(err))
        return None
