"""Who is calling: turns a TokenReview answer, the agent pod it names and the request's headers into an
authorised node identity, or a refusal with a reason.

Checks, in order (the Rust brupop's, plus the node UID): the token is authenticated for an audience that
includes `brupop-apiserver`; it is bound to exactly one pod; that pod is an agent pod (from the apiserver's
label-filtered cache) on the node named in `BrupopNodeName`; the token's bound pod UID is that pod's; and
`BrupopNodeUid` is the UID of that node. Refusals are 401 (not a valid credential for us) or 403 (valid, but
not allowed to speak for this node) and never a 500.
"""

from __future__ import annotations

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


class AuthError(Exception):
    """A refused request: `status` is 401 or 403, `reason` is safe to send to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The node an authorised agent speaks for."""

    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class AgentPod:
    """What the check needs of an agent pod from the cache."""

    name: str
    uid: str
    node_name: str | None


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
    """The node name, node UID and token headers, or a 401 naming the missing ones."""
    values = {
        name: headers.get(name, "").strip() for name in (NODE_NAME_HEADER, NODE_UID_HEADER, TOKEN_HEADER)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AuthError(401, f"missing request header(s): {', '.join(missing)}")
    return values[NODE_NAME_HEADER], values[NODE_UID_HEADER], values[TOKEN_HEADER]


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


def authorize(
    review: ReviewedToken,
    *,
    pod: AgentPod | None,
    node_name: str,
    node_uid: str,
    actual_node_uid: str | None,
) -> NodeIdentity:
    """Decide whether the reviewed token may act for `node_name`.

    `pod` is the agent pod named by the token as found in the agent-pod cache (None when absent: not an
    agent pod, or gone). `actual_node_uid` is the named Node's UID (None when the Node does not exist).
    """
    pod_name = pod_name_of(review)
    if pod is None:
        raise AuthError(403, f"pod {pod_name!r} is not a brupop agent pod")
    bound_uid = review.single(POD_UID_EXTRA)
    if bound_uid is not None and bound_uid != pod.uid:
        raise AuthError(403, f"token was issued to an earlier pod named {pod_name!r}")
    if pod.node_name != node_name:
        raise AuthError(403, f"agent pod {pod_name!r} runs on node {pod.node_name!r}, not {node_name!r}")
    if actual_node_uid is None:
        raise AuthError(403, f"node {node_name!r} does not exist")
    if node_uid != actual_node_uid:
        raise AuthError(403, f"{NODE_UID_HEADER} {node_uid!r} is not the UID of node {node_name!r}")
    return NodeIdentity(name=node_name, uid=node_uid)
