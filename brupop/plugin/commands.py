"""The writes: `pause`, `resume`, `hold`, `release`, `retry`. Each first asks the API server whether the user
may do all of it (nothing changes when a right is missing), then makes one small merge patch per object
(or creates/deletes the pause-all policy), and records an Event per changed object naming who did what.
A command with nothing to do says so and writes nothing.

- `pause` (all): pauses every policy that is not paused (marking it `paused-by`, so `resume` unpauses
  exactly those), and creates `brupop-pause-all`, a paused policy selecting every node at the lowest
  priority: it takes exactly the nodes no other policy selects, the environment's pool, whose rules
  it keeps (its fields are left out). No node changes from one policy's pool to another's, so no node in
  a cycle loses its policy's `duringUpdate` marks. A policy created afterwards is not paused (status says
  so). `pause NAME` pauses one policy (for good: `resume` all leaves it paused).
- `resume` (all): deletes `brupop-pause-all` and unpauses the policies `pause` paused; it lists the ones
  left paused or halted. `resume NAME` unpauses that policy and clears its failure-budget halt (the
  `resumed-at` annotation, at or after the halt's start).
- `hold NODE [--reason]` / `release NODE`: the Node annotation `brupop.bottlerocket.aws/hold`.
- `retry NODE`: waives the back-off of the node's last failure (the shadow annotation
  `brupop.bottlerocket.aws/retry` names that failure's time); a later failure backs off again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from brupop.kube.client import EVENTS, NODES, SHADOWS
from brupop.models import constants as c
from brupop.models.policy import UpdatePolicy
from brupop.models.shadow import BottlerocketShadow
from brupop.models.timestamp import Timestamp
from brupop.models.wire import WireError
from brupop.plugin.cluster import CLUSTER_EVENTS_NAMESPACE, POLICIES, Cluster, PluginError, Target
from brupop.plugin.words import moment, relative
from brupop.policy.backoff import retry_at
from brupop.policy.holds import hold_reason
from brupop.policy.statemachine import is_active

Obj = dict[str, Any]
LOWEST_PRIORITY: Final = -1000
UTC: Final = ZoneInfo("UTC")
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "kubectl-brupop"}
NEEDS_POLICIES: Final = (
    f"this needs the UpdatePolicy CRD ({c.POLICY_CRD_NAME}), which this cluster lacks: upgrade brupop's CRD "
    "chart (helm upgrade brupop-crd charts/bottlerocket-shadow)"
)


def pause_all_policy(*, by: str) -> Obj:
    return {
        "apiVersion": c.API_VERSION_POLICY,
        "kind": c.POLICY_KIND,
        "metadata": {
            "name": c.PAUSE_ALL_POLICY,
            "labels": MANAGED_BY,
            "annotations": {c.PAUSED_BY_ANNOTATION: by},
        },
        "spec": {"nodeSelector": {}, "priority": LOWEST_PRIORITY, "paused": True},
    }


def _stamp(user: str, now: datetime) -> str:
    return f"{user} at {Timestamp.from_datetime(now).text}"


class Commands:
    def __init__(self, cluster: Cluster, *, policies_served: bool, now: datetime) -> None:
        self._cluster = cluster
        self._served = policies_served
        self._now = now

    def _policies(self, *verbs: str, name: str | None = None) -> list[Target]:
        if not self._served:
            raise PluginError(NEEDS_POLICIES)
        return [Target(verb, POLICIES, name=name) for verb in verbs]

    async def _event(self, regarding: Obj, reason: str, note: str) -> None:
        await self._cluster.record(regarding, reason=reason, note=note, now=self._now)

    def _cluster_events(self) -> Target:
        return Target("create", EVENTS, CLUSTER_EVENTS_NAMESPACE)

    async def _patch_policy(self, name: str, patch: Obj) -> Obj:
        return await self._cluster.call(
            Target("patch", POLICIES, name=name), self._cluster.kube.merge_patch(POLICIES, name, patch)
        )

    async def pause(self, name: str | None) -> str:
        cluster = self._cluster
        if name is not None:
            return await self._pause_one(name)
        await cluster.require(*self._policies("list", "patch", "create"), self._cluster_events())
        user = await cluster.whoami()
        listed, _ = await cluster.call(Target("list", POLICIES), cluster.kube.list(POLICIES))
        paused = []
        for obj in listed:
            policy_name = obj["metadata"]["name"]
            if policy_name == c.PAUSE_ALL_POLICY or (obj.get("spec") or {}).get("paused") is True:
                continue
            marked = {c.PAUSED_BY_ANNOTATION: _stamp(user, self._now)}
            patch = {"metadata": {"annotations": marked}, "spec": {"paused": True}}
            written = await self._patch_policy(policy_name, patch)
            await self._event(written, "Paused", f"{user} paused all updates (kubectl brupop pause)")
            paused.append(policy_name)
        existing = next((o for o in listed if o["metadata"]["name"] == c.PAUSE_ALL_POLICY), None)
        if existing is None:
            body = pause_all_policy(by=_stamp(user, self._now))
            created = await cluster.call(Target("create", POLICIES), cluster.kube.create(POLICIES, body))
            note = f"{user} paused all updates (kubectl brupop pause): this policy takes the unselected nodes"
            await self._event(created, "Paused", note)
            paused.insert(0, f"{c.PAUSE_ALL_POLICY} (created, for the nodes no other policy selects)")
        elif (existing.get("spec") or {}).get("paused") is not True:
            written = await self._patch_policy(c.PAUSE_ALL_POLICY, {"spec": {"paused": True}})
            await self._event(written, "Paused", f"{user} paused all updates (kubectl brupop pause)")
            paused.insert(0, c.PAUSE_ALL_POLICY)
        if not paused:
            return "everything was already paused; nothing changed"
        return (
            f"paused: {', '.join(paused)}. Nodes already in an update cycle finish it; "
            "nothing new starts until `kubectl brupop resume`."
        )

    async def _pause_one(self, name: str) -> str:
        cluster = self._cluster
        await cluster.require(*self._policies("get", "patch", name=name), self._cluster_events())
        obj = await self._get_policy(name)
        spec = obj.get("spec") or {}
        marked = c.PAUSED_BY_ANNOTATION in ((obj["metadata"].get("annotations")) or {})
        if spec.get("paused") is True and not marked:
            return f"policy {name} is already paused; nothing changed"
        user = await cluster.whoami()
        written = await self._patch_policy(
            name, {"metadata": {"annotations": {c.PAUSED_BY_ANNOTATION: None}}, "spec": {"paused": True}}
        )
        await self._event(written, "Paused", f"{user} paused policy {name} (kubectl brupop pause {name})")
        return f"paused policy {name}: nodes in an update cycle finish it; nothing new starts in its pool."

    async def _get_policy(self, name: str) -> Obj:
        obj = await self._cluster.get_or_none(Target("get", POLICIES, name=name))
        if obj is None:
            raise PluginError(f"there is no UpdatePolicy {name} (kubectl get {c.POLICY_PLURAL} lists them)")
        return obj

    async def resume(self, name: str | None) -> str:
        if name is not None:
            return await self._resume_one(name)
        cluster = self._cluster
        await cluster.require(*self._policies("list", "patch", "delete"), self._cluster_events())
        user = await cluster.whoami()
        listed, _ = await cluster.call(Target("list", POLICIES), cluster.kube.list(POLICIES))
        resumed: list[str] = []
        left: list[str] = []
        for obj in listed:
            policy_name = obj["metadata"]["name"]
            annotations = obj["metadata"].get("annotations") or {}
            if policy_name == c.PAUSE_ALL_POLICY:
                await cluster.call(
                    Target("delete", POLICIES, name=policy_name), cluster.kube.delete(POLICIES, policy_name)
                )
                await self._event(obj, "Resumed", f"{user} resumed all updates (kubectl brupop resume)")
                resumed.append(f"{policy_name} (deleted)")
            elif c.PAUSED_BY_ANNOTATION in annotations:
                patch = {
                    "metadata": {"annotations": {c.PAUSED_BY_ANNOTATION: None}},
                    "spec": {"paused": False},
                }
                written = await self._patch_policy(policy_name, patch)
                await self._event(written, "Resumed", f"{user} resumed all updates (kubectl brupop resume)")
                resumed.append(policy_name)
            else:
                left += _still_stopped(obj)
        message = (
            f"resumed: {', '.join(resumed)}." if resumed else "nothing was paused by `kubectl brupop pause`."
        )
        if left:
            message += " Still stopped: " + "; ".join(left) + "."
        return message

    async def _resume_one(self, name: str) -> str:
        cluster = self._cluster
        if name == c.PAUSE_ALL_POLICY:
            await cluster.require(*self._policies("get", "delete", name=name), self._cluster_events())
            obj = await self._get_policy(name)
            await cluster.call(Target("delete", POLICIES, name=name), cluster.kube.delete(POLICIES, name))
            user = await cluster.whoami()
            await self._event(obj, "Resumed", f"{user} deleted {name} (kubectl brupop resume {name})")
            return (
                f"deleted {name}: the nodes no other policy selects follow the controller's settings again."
            )
        await cluster.require(*self._policies("get", "patch", name=name), self._cluster_events())
        obj = await self._get_policy(name)
        patch: Obj = {}
        done = []
        if (obj.get("spec") or {}).get("paused") is True:
            patch = {"metadata": {"annotations": {c.PAUSED_BY_ANNOTATION: None}}, "spec": {"paused": False}}
            done.append("unpaused")
        since = _halted_since(obj)
        if since is not None:
            resumed = Timestamp.from_datetime(max(self._now, since))
            annotations = patch.setdefault("metadata", {}).setdefault("annotations", {})
            annotations[c.RESUMED_AT_ANNOTATION] = resumed.text
            done.append(f"its halt of {relative(since, self._now)} cleared")
        if not patch:
            return f"policy {name} is neither paused nor halted; nothing changed"
        user = await cluster.whoami()
        written = await self._patch_policy(name, patch)
        note = f"{user} resumed policy {name} ({', '.join(done)}; kubectl brupop resume {name})"
        await self._event(written, "Resumed", note)
        return f"resumed policy {name}: {', '.join(done)}."

    async def hold(self, node: str, reason: str | None) -> str:
        cluster = self._cluster
        await cluster.require(*self._node_rights(node))
        obj = await self._get_node(node)
        user = await cluster.whoami()
        value = reason.strip() if reason and reason.strip() else f"held by {user} with kubectl brupop"
        current = hold_reason(obj["metadata"].get("annotations") or {})
        if current == value:
            return f"node {node} is already held ({current}); nothing changed"
        patch = {"metadata": {"annotations": {c.HOLD_ANNOTATION: value}}}
        written = await self._patch_node(node, patch)
        await self._event(written, "Held", f"{user} held node {node} (kubectl brupop hold): {value}")
        return (
            f"held node {node}: {value}. It finishes a cycle it is in, then starts no new one until "
            f"`kubectl brupop release {node}`."
        )

    async def release(self, node: str) -> str:
        cluster = self._cluster
        await cluster.require(*self._node_rights(node))
        obj = await self._get_node(node)
        annotations = obj["metadata"].get("annotations") or {}
        if c.HOLD_ANNOTATION not in annotations:
            return f"node {node} is not held; nothing changed"
        user = await cluster.whoami()
        patch = {"metadata": {"annotations": {c.HOLD_ANNOTATION: None}}}
        written = await self._patch_node(node, patch)
        await self._event(written, "Released", f"{user} released node {node} (kubectl brupop release)")
        return f"released node {node}: it may start an update again."

    def _node_rights(self, node: str) -> list[Target]:
        return [Target("get", NODES, name=node), Target("patch", NODES, name=node), self._cluster_events()]

    async def _patch_node(self, node: str, patch: Obj) -> Obj:
        cluster = self._cluster
        return await cluster.call(
            Target("patch", NODES, name=node), cluster.kube.merge_patch(NODES, node, patch)
        )

    async def _get_node(self, node: str) -> Obj:
        obj = await self._cluster.get_or_none(Target("get", NODES, name=node))
        if obj is None:
            raise PluginError(f"there is no node {node}")
        return obj

    async def retry(self, node: str) -> str:
        cluster = self._cluster
        ns, name = cluster.namespace, c.shadow_name(node)
        events = Target("create", EVENTS, ns)
        await cluster.require(Target("get", SHADOWS, ns, name), Target("patch", SHADOWS, ns, name), events)
        obj = await cluster.get_or_none(Target("get", SHADOWS, ns, name))
        if obj is None:
            raise PluginError(
                f"there is no shadow {name} in namespace {ns}: is node {node} opted in to brupop?"
            )
        try:
            shadow = BottlerocketShadow.from_wire(obj)
        except WireError as err:
            raise PluginError(f"shadow {name} does not read: {err}") from None
        status = shadow.status
        failed = status.state_transition_failure_timestamp if status is not None else None
        if status is None or failed is None:
            raise PluginError(f"node {node} has no failed update to retry")
        until = retry_at(status)
        if until is not None and until <= self._now and not is_active(shadow):
            return f"node {node}'s back-off already ended {relative(until, self._now)}; nothing changed"
        if (obj["metadata"].get("annotations") or {}).get(c.RETRY_ANNOTATION) == failed.text:
            return f"a retry of node {node} is already requested; nothing changed"
        user = await cluster.whoami()
        patch = {"metadata": {"annotations": {c.RETRY_ANNOTATION: failed.text}}}
        patched = cluster.kube.merge_patch(SHADOWS, name, patch, namespace=ns)
        written = await cluster.call(Target("patch", SHADOWS, ns, name), patched)
        skipped = f" until {moment(until, UTC, self._now)}" if until is not None else ""
        note = f"{user} waived node {node}'s back-off{skipped} (kubectl brupop retry)"
        await self._event(written, "RetryRequested", note)
        return (
            f"retry of node {node} requested: the back-off after its failure at {failed.text} is waived "
            "(a later failure backs off again)."
        )


def _halted_since(obj: Obj) -> datetime | None:
    try:
        policy = UpdatePolicy.from_wire(obj)
    except WireError:
        return None
    halt = policy.status.halted if policy.status is not None else None
    return halt.since.instant if halt is not None else None


def _still_stopped(obj: Obj) -> Sequence[str]:
    name = obj["metadata"]["name"]
    reasons = []
    if (obj.get("spec") or {}).get("paused") is True:
        reasons.append(f"{name} is paused by its spec (kubectl brupop resume {name})")
    if _halted_since(obj) is not None:
        reasons.append(f"{name} is halted by its failure budget (kubectl brupop resume {name})")
    return reasons
