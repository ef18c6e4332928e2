"""Pure drain decisions: which pods an update must evict, and the Node patches that cordon and uncordon
while remembering an administrator's own cordon.

Pods: DaemonSet-controlled and mirror (static) pods stay, unless they have completed (Succeeded/Failed),
which the Rust brupop evicts too; every other pod is evicted, including unmanaged and emptyDir pods. Pods
already terminating are only waited for.

Cordon bookkeeping: the cordon patch records in `CORDON_ANNOTATION` who made the node unschedulable:
`brupop` when we cordoned it, `admin` when it was already cordoned. Uncordon clears the annotation and
makes the node schedulable only when the annotation says `brupop`, so an admin's cordon survives an update
and a defensive uncordon never undoes a cordon brupop did not make. Patches carry the Node's
resourceVersion, so a concurrent change makes the write fail (409) instead of racing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from brupop.models.constants import API_GROUP, EXCLUDE_FROM_LB_LABEL

CORDON_ANNOTATION: Final = f"{API_GROUP}/cordoned-by"
CORDONED_BY_BRUPOP: Final = "brupop"
CORDONED_BY_ADMIN: Final = "admin"
MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"
_FINISHED: Final = frozenset({"Succeeded", "Failed"})


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def must_leave(pod: Mapping[str, Any]) -> bool:
    """True for pods a drain neither evicts nor waits for."""
    if (pod.get("status") or {}).get("phase") in _FINISHED:
        return False
    meta = pod.get("metadata") or {}
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return True
    return any(
        owner.get("controller") is True and owner.get("kind") == "DaemonSet"
        for owner in meta.get("ownerReferences") or ()
    )


def _precondition(node: Mapping[str, Any]) -> dict[str, Any]:
    version = (node.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": version} if version else {}


def cordoned_by(node: Mapping[str, Any]) -> str | None:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(CORDON_ANNOTATION)
    return value if isinstance(value, str) else None


def cordon_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that cordons `node` and records who cordoned it; None if already recorded."""
    if cordoned_by(node) is not None:
        return None
    if (node.get("spec") or {}).get("unschedulable") is True:
        return {"metadata": {**_precondition(node), "annotations": {CORDON_ANNOTATION: CORDONED_BY_ADMIN}}}
    return {
        "metadata": {**_precondition(node), "annotations": {CORDON_ANNOTATION: CORDONED_BY_BRUPOP}},
        "spec": {"unschedulable": True},
    }


def uncordon_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that undoes brupop's cordon (and only that); None when there is nothing to undo."""
    who = cordoned_by(node)
    if who is None:
        return None
    patch: dict[str, Any] = {"metadata": {**_precondition(node), "annotations": {CORDON_ANNOTATION: None}}}
    if who == CORDONED_BY_BRUPOP:
        patch["spec"] = {"unschedulable": False}
    return patch


def exclude_from_lb_patch(*, exclude: bool) -> dict[str, Any]:
    """Add (or remove) the label that takes the node out of external load balancers."""
    return {"metadata": {"labels": {EXCLUDE_FROM_LB_LABEL: "True" if exclude else None}}}
