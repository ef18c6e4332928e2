"""Who is calling: turns a TokenReview answer, the agent pod it names and the request's headers into an
authorised node identity, or a refusal with a reason.

Checks, in order (the Rust brupop's, plus the header syntax and the node UID): `BrupopNodeName` is a
Kubernetes node name and `BrupopNodeUid` a Kubernetes UID (no call is made for anything else); the token is
authenticated for an audience that includes `brupop-apiserver`; it is bound to exactly one pod; that pod is
an agent pod (from the apiserver's label-filtered cache) on the node named in `BrupopNodeName`; the token's
bound pod UID is that pod's; and, only then, `BrupopNodeUid` is the UID of that node (the one lookup that
uses a header, made for the agent of that very node). Refusals are 400 (a malformed header), 401 (not a
valid credential for us) or 403 (valid, but not allowed to speak for this node) and never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from brupop.models.constants import TOKEN_AUDIENCE

POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
NODE_NAME_EXTRA: Final = "authentication.kubernetes.io/node-name"
NODE_UID_EXTRA: Final = "authentication.kubernetes.io/node-uid"

NODE_NAME_HEADER: Final = "BrupopNodeName"
NODE_UID_HEADER: Final = "BrupopNodeUid"
TOKEN_HEADER: Final = "BrupopK8sAuthToken"

# A node name is an RFC 1123 subdomain of at most 253 characters (Kubernetes' ValidateNodeName); a UID is
# the RFC 4122 UUID the API server generates.
_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
NODE_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
NODE_NAME_MAX: Final = 253
UID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class AuthError(Exception):
    """A refused request: `status` is 400, 401 or 403, `reason` is safe to send to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The node an authorised agent speaks for."""

    name: str
    uid: str
    pod_terminating: bool = False
    """The calling agent pod is being deleted (it may still report and undo, not create a shadow)."""


@dataclass(frozen=True, slots=True)
class AgentPod:
    """What the check needs of an agent pod from the cache."""

    name: str
    uid: str
    node_name: str | None
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class ReviewedToken:
    """The parts of a TokenReview status the decision uses."""

    authenticated: bool
    audiences: Sequence[str]
    extra: Mapping[str, Sequence[str]]
    error: str

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> ReviewedToken:
        user = status.get("user") or {}
        extra = user.get("extra") or {}
        return cls(
            authenticated=status.get("authenticated") is True,
            audiences=tuple(status.get("audiences") or ()),
            extra={key: tuple(values or ()) for key, values in extra.items()},
            error=str(status.get("error") or ""),
        )

    def single(self, key: str) -> str | None:
        values = self.extra.get(key, ())
        return values[0] if len(values) == 1 else None


def require_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """The node name, node UID and token headers: a 401 naming the missing ones, a 400 when the name or
    the UID is not one Kubernetes could have made."""
    values = {
        name: headers.get(name, "").strip() for name in (NODE_NAME_HEADER, NODE_UID_HEADER, TOKEN_HEADER)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AuthError(401, f"missing request header(s): {', '.join(missing)}")
    node_name, node_uid = values[NODE_NAME_HEADER], values[NODE_UID_HEADER]
    if len(node_name) > NODE_NAME_MAX or NODE_NAME.fullmatch(node_name) is None:
        raise AuthError(
            400,
            f"{NODE_NAME_HEADER} {_shown(node_name)} is not a Kubernetes node name (lower-case RFC 1123 "
            f"subdomain, at most {NODE_NAME_MAX} characters)",
        )
    if UID.fullmatch(node_uid) is None:
        raise AuthError(400, f"{NODE_UID_HEADER} {_shown(node_uid)} is not a Kubernetes UID (a UUID)")
    return node_name, node_uid, values[TOKEN_HEADER]


def _shown(value: str) -> str:
    """A header value as a refusal quotes it: repr, cut to a readable length."""
    return repr(value) if len(value) <= 60 else f"{value[:60]!r}..."


def pod_name_of(review: ReviewedToken) -> str:
    """The single pod the token is bound to; checks that the token is valid for us first."""
    if not review.authenticated:
        detail = f": {review.error}" if review.error else ""
        raise AuthError(401, f"token not authenticated{detail}")
    if TOKEN_AUDIENCE not in review.audiences:
        raise AuthError(401, f"token audiences {list(review.audiences)} do not include {TOKEN_AUDIENCE!r}")
    pods = review.extra.get(POD_NAME_EXTRA, ())
    if len(pods) != 1:
        raise AuthError(403, f"token must be bound to exactly one pod, found {len(pods)}")
    return pods[0]


def authorize(review: ReviewedToken, *, pod: AgentPod | None, node_name: str) -> AgentPod:
    """Decide whether the reviewed token belongs to the agent pod of `node_name` and return that pod;
    raises AuthError if not.

    `pod` is the agent pod named by the token as found in the agent-pod cache (None when absent: not an
    agent pod, or gone). Nothing here needs a call that uses the caller's headers.
    """
    pod_name = pod_name_of(review)
    if pod is None:
        raise AuthError(403, f"pod {pod_name!r} is not a brupop agent pod")
    bound_uid = review.single(POD_UID_EXTRA)
    if bound_uid is not None and bound_uid != pod.uid:
        raise AuthError(403, f"token was issued to an earlier pod named {pod_name!r}")
    if pod.node_name != node_name:
        raise AuthError(403, f"agent pod {pod_name!r} runs on node {pod.node_name!r}, not {node_name!r}")
    return pod


def check_node_uid(
    *, pod: AgentPod, node_name: str, node_uid: str, actual_node_uid: str | None
) -> NodeIdentity:
    """The identity of the node of an authorized agent (`pod`), once `BrupopNodeUid` matches the Node's
    UID (`actual_node_uid`, None when the Node does not exist)."""
    if actual_node_uid is None:
        raise AuthError(403, f"node {node_name!r} does not exist")
    if node_uid != actual_node_uid:
        raise AuthError(403, f"{NODE_UID_HEADER} {node_uid!r} is not the UID of node {node_name!r}")
    return NodeIdentity(name=node_name, uid=node_uid, pod_terminating=pod.terminating)
