from typing import Any

import pytest

from brupop.apiserver.auth import (
    AgentPod,
    AuthError,
    NodeIdentity,
    ReviewedToken,
    authorize,
    check_node_uid,
    require_headers,
)

POD = AgentPod(name="brupop-agent-x", uid="pod-uid", node_name="node-a")


def review(**changes: Any) -> ReviewedToken:
    status: dict[str, Any] = {
        "authenticated": True,
        "audiences": ["brupop-apiserver"],
        "user": {
            "username": "system:serviceaccount:brupop-bottlerocket-aws:brupop-agent-service-account",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["brupop-agent-x"],
                "authentication.kubernetes.io/pod-uid": ["pod-uid"],
            },
        },
    }
    status.update(changes)
    return ReviewedToken.from_status(status)


def decide(
    token: ReviewedToken,
    *,
    pod: AgentPod | None = POD,
    node: str = "node-a",
    uid: str = "node-uid",
    actual: str | None = "node-uid",
) -> NodeIdentity:
    return check_node_uid(
        pod=authorize(token, pod=pod, node_name=node), node_name=node, node_uid=uid, actual_node_uid=actual
    )


def test_the_agent_on_its_own_node_is_let_in() -> None:
    assert decide(review()) == NodeIdentity(name="node-a", uid="node-uid")


def test_the_identity_says_when_the_agent_pod_is_terminating() -> None:
    """The shadow create refuses a terminating agent (issue 14 item 26): the flag must reach the identity."""
    leaving = AgentPod(name="brupop-agent-x", uid="pod-uid", node_name="node-a", terminating=True)
    assert decide(review(), pod=leaving).pod_terminating


@pytest.mark.parametrize(
    ("token", "kwargs", "status", "reason"),
    [
        (
            review(authenticated=False, error="token has expired"),
            {},
            401,
            "not authenticated: token has expired",
        ),
        (review(authenticated=None), {}, 401, "not authenticated"),
        (review(audiences=["https://kubernetes.default.svc"]), {}, 401, "do not include 'brupop-apiserver'"),
        (review(audiences=None), {}, 401, "do not include"),
        (review(user={"extra": {}}), {}, 403, "exactly one pod, found 0"),
        (
            review(user={"extra": {"authentication.kubernetes.io/pod-name": ["a", "b"]}}),
            {},
            403,
            "exactly one pod, found 2",
        ),
        (review(), {"pod": None}, 403, "is not a brupop agent pod"),
        (
            review(),
            {"pod": AgentPod(name="brupop-agent-x", uid="new", node_name="node-a")},
            403,
            "earlier pod",
        ),
        (review(), {"node": "node-b"}, 403, "runs on node 'node-a', not 'node-b'"),
        (review(), {"actual": None}, 403, "does not exist"),
        (review(), {"uid": "stale"}, 403, "BrupopNodeUid 'stale' is not the UID"),
    ],
)
def test_refusals_carry_a_status_and_a_reason(
    token: ReviewedToken, kwargs: dict[str, Any], status: int, reason: str
) -> None:
    with pytest.raises(AuthError) as info:
        decide(token, **kwargs)
    assert info.value.status == status
    assert reason in info.value.reason


def test_tokens_without_a_pod_uid_extra_are_checked_by_name() -> None:
    token = review(user={"extra": {"authentication.kubernetes.io/pod-name": ["brupop-agent-x"]}})
    assert decide(token).name == "node-a"


def test_required_headers() -> None:
    uid = "0b7c3c5e-8d4e-4a53-9b5e-3f1c2d4e5f60"
    assert require_headers({"BrupopNodeName": "a.b-c", "BrupopNodeUid": uid, "BrupopK8sAuthToken": "t"}) == (
        "a.b-c",
        uid,
        "t",
    )
    with pytest.raises(AuthError) as info:
        require_headers({"BrupopNodeName": "a", "BrupopK8sAuthToken": " "})
    assert info.value.status == 401
    assert info.value.reason == "missing request header(s): BrupopNodeUid, BrupopK8sAuthToken"
