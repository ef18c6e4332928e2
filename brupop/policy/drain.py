"""Pure drain decisions: which pods an update must evict, and the Node patches that cordon and uncordon
while remembering an administrator's own cordon.

Pods: DaemonSet-controlled and mirror (static) pods stay, unless they have completed (Succeeded/Failed),
which the Rust brupop evicts too; every other pod is evicted, including unmanaged and emptyDir pods. Pods
already terminating are only waited for. Whether a pod tolerates the cordon (`tolerates_cordon`) and what
makes its replacements (`owner_key`) decide about pods bound after a drain began (`brupop.kube.drain`).

Eviction answers: `read_eviction` names each answer of the Eviction API and says what it means for a drain
(evicted, gone, retry, wait for someone else's delete, refused for good).

Cordon bookkeeping: the cordon patch records in `CORDON_ANNOTATION` who made the node unschedulable:
`brupop` when we cordoned it, `admin` when it was already cordoned. Whether to cordon is decided by
`spec.unschedulable` alone: a schedulable node is cordoned whatever a leftover annotation says. Uncordon
clears the annotation and makes the node schedulable only when the annotation says `brupop`, so an admin's
cordon survives an update and a defensive uncordon never undoes a cordon brupop did not make. Patches carry
the Node's resourceVersion, so a concurrent change makes the write fail (409) instead of racing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
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
    return controller_kind(pod) == "DaemonSet"


def controller_kind(pod: Mapping[str, Any]) -> str | None:
    """The kind of the pod's controller (its owner reference with `controller: true`), if any."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or ():
        if owner.get("controller") is True:
            return str(owner.get("kind"))
    return None


UNSCHEDULABLE_TAINT: Final = "node.kubernetes.io/unschedulable"
"""The taint a cordon puts on a Node (the node lifecycle controller adds it for `spec.unschedulable`)."""


def tolerates_cordon(pod: Mapping[str, Any]) -> bool:
    """Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`, as the scheduler matches
    tolerations: the key (or none, with `Exists`), the effect (or none)."""
    for toleration in (pod.get("spec") or {}).get("tolerations") or ():
        if not isinstance(toleration, Mapping):
            continue
        key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
        if toleration.get("effect") not in (None, "", "NoSchedule"):
            continue
        if operator == "Exists" and key in ("", UNSCHEDULABLE_TAINT):
            return True
        if operator == "Equal" and key == UNSCHEDULABLE_TAINT and not toleration.get("value"):
            return True
    return False


def owner_key(pod: Mapping[str, Any]) -> str:
    """What makes replacements of the pod: its controller's UID, or the pod itself when it has none."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or ():
        if owner.get("controller") is True and owner.get("uid"):
            return str(owner["uid"])
    return pod_key(pod)


class Outcome(Enum):
    EVICTED = "evicted"
    """The API server accepted: the pod is being deleted."""
    GONE = "gone"
    """The pod no longer exists, or another pod has its name."""
    RETRY = "retry"
    """Not now: a PDB refuses, the server throttles, fails or did not answer."""
    WAIT = "wait"
    """Never by eviction, but the pod is being deleted by someone else: wait for it."""
    DENIED = "denied"
    """No permission: refused for good once it lasts (a kube-apiserver that has just started denies until
    its authorizer has caught up with the RBAC objects)."""
    REFUSED = "refused"
    """Never: every retry would be refused the same way."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """One answer of the Eviction API, by name (`name`), with what to do about it."""

    name: str
    outcome: Outcome
    message: str = ""
    pdbs: frozenset[str] = frozenset()
    retry_after: float = 0.0

    @classmethod
    def unreachable(cls, error: str) -> Eviction:
        return cls("Unreachable", Outcome.RETRY, f"no answer from the Kubernetes API server: {error}")


_PDB_NAME: Final = re.compile(r"disruption budget (\S+)")


def blocking_pdbs(message: str) -> set[str]:
    """PDB names from a refusal ("... The disruption budget web needs 2 healthy pods ...")."""
    return set(_PDB_NAME.findall(message))


def read_eviction(status: int, body: Mapping[str, Any]) -> Eviction:
    """What an answer of `POST .../pods/NAME/eviction` means (the kube-apiserver's eviction handler and
    admission, as kubectl drain reads them): `status` is the HTTP status, `body` the Status object."""
    message = str(body.get("message") or "")
    raw_details = body.get("details")
    details: Mapping[str, Any] = raw_details if isinstance(raw_details, Mapping) else {}
    causes = [c for c in details.get("causes") or () if isinstance(c, Mapping)]
    cause_types = {str(c.get("reason", "")) for c in causes}  # a StatusCause's type goes by "reason" in JSON
    detail = " ".join([message, *(str(c.get("message", "")) for c in causes)]).strip()
    pdbs = frozenset(blocking_pdbs(detail))
    retry_after = float(details.get("retryAfterSeconds") or 0)
    if 200 <= status < 300:
        return Eviction("Evicted", Outcome.EVICTED)
    if (
        status == 0
    ):  # no answer at all (`brupop.kube.client.ApiUnavailableError`): a restart, a lost connection
        return Eviction("Unavailable", Outcome.RETRY, detail)
    if status == 404:
        return Eviction("NotFound", Outcome.GONE, detail)
    if status == 409 and "precondition" in message.lower():
        return Eviction("Replaced", Outcome.GONE, detail)  # the UID precondition: another pod has the name
    if status == 429:
        if "DisruptionBudget" in cause_types or pdbs:
            return Eviction("DisruptionBudget", Outcome.RETRY, detail, pdbs, retry_after)
        return Eviction("TooManyRequests", Outcome.RETRY, detail, retry_after=retry_after)
    if status == 403:
        if "NamespaceTerminating" in cause_types:
            return Eviction("NamespaceTerminating", Outcome.WAIT, detail)
        if details.get("kind") == "poddisruptionbudget":  # negative disruptionsAllowed, an overfull map
            return Eviction("DisruptionBudget", Outcome.RETRY, detail, frozenset({str(details.get("name"))}))
        return Eviction("Forbidden", Outcome.DENIED, detail)
    if status == 500 and "more than one PodDisruptionBudget" in message:
        return Eviction("MultiplePodDisruptionBudgets", Outcome.REFUSED, detail)
    if status >= 500 or status == 409:
        return Eviction(
            str(body.get("reason") or "ServerError"), Outcome.RETRY, detail, retry_after=retry_after
        )
    return Eviction(str(body.get("reason") or f"HTTP{status}"), Outcome.REFUSED, detail)


def _precondition(node: Mapping[str, Any]) -> dict[str, Any]:
    version = (node.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": version} if version else {}


def cordoned_by(node: Mapping[str, Any]) -> str | None:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(CORDON_ANNOTATION)
    return value if isinstance(value, str) else None


def cordon_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that cordons `node` and records who cordoned it; None if it is cordoned and recorded.

    The decision follows `spec.unschedulable`, never the annotation alone: a schedulable node is cordoned
    now and marked `brupop`, whatever an annotation says (left behind when an admin ran `kubectl uncordon`
    after brupop's cordon, say); an unschedulable node without the annotation was cordoned by someone else.
    """
    if (node.get("spec") or {}).get("unschedulable") is True:
        if cordoned_by(node) is not None:
            return None
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
