from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.policy.drain import (
    CORDON_ANNOTATION,
    Outcome,
    blocking_pdbs,
    cordon_patch,
    cordoned_by,
    exclude_from_lb_patch,
    is_terminating,
    must_leave,
    owner_key,
    pod_key,
    read_eviction,
    tolerates_cordon,
    uncordon_patch,
)


def pod(
    *,
    phase: str = "Running",
    owner: str | None = None,
    controller: bool = True,
    mirror: bool = False,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "controller": controller}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("candidate", "leave"),
    [
        (pod(), False),
        (pod(owner="ReplicaSet"), False),
        (pod(owner="StatefulSet"), False),
        (pod(owner="DaemonSet"), True),
        (pod(owner="DaemonSet", controller=False), False),
        (pod(mirror=True), True),
        (pod(owner="DaemonSet", phase="Succeeded"), False),
        (pod(mirror=True, phase="Failed"), False),
        ({"metadata": {}}, False),
    ],
)
def test_which_pods_a_drain_leaves(candidate: dict[str, Any], leave: bool) -> None:
    assert must_leave(candidate) is leave


def test_pod_helpers() -> None:
    assert pod_key(pod()) == "ns/p"
    assert is_terminating(pod(deleting=True))
    assert not is_terminating(pod())


def node(
    *, unschedulable: bool = False, who: str | None = None, version: str | None = "42"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n"}
    if version:
        meta["resourceVersion"] = version
    if who:
        meta["annotations"] = {CORDON_ANNOTATION: who}
    return {"metadata": meta, "spec": {"unschedulable": unschedulable}}


def test_cordon_a_schedulable_node_records_brupop() -> None:
    assert cordon_patch(node()) == {
        "metadata": {"resourceVersion": "42", "annotations": {CORDON_ANNOTATION: "brupop"}},
        "spec": {"unschedulable": True},
    }


def test_cordon_an_admin_cordoned_node_only_records_admin() -> None:
    assert cordon_patch(node(unschedulable=True, version=None)) == {
        "metadata": {"annotations": {CORDON_ANNOTATION: "admin"}}
    }


def test_cordon_is_idempotent() -> None:
    assert cordon_patch(node(unschedulable=True, who="brupop")) is None
    assert cordon_patch(node(unschedulable=True, who="admin")) is None


def test_uncordon_undoes_only_brupops_cordon() -> None:
    assert uncordon_patch(node(unschedulable=True, who="brupop")) == {
        "metadata": {"resourceVersion": "42", "annotations": {CORDON_ANNOTATION: None}},
        "spec": {"unschedulable": False},
    }
    assert uncordon_patch(node(unschedulable=True, who="admin")) == {
        "metadata": {"resourceVersion": "42", "annotations": {CORDON_ANNOTATION: None}}
    }
    assert uncordon_patch(node(unschedulable=True)) is None
    assert uncordon_patch(node()) is None


def test_cordon_then_uncordon_round_trips() -> None:
    for start in (node(), node(unschedulable=True)):
        cordoned = apply(start, cordon_patch(start))
        assert cordoned["spec"]["unschedulable"] is True
        restored = apply(cordoned, uncordon_patch(cordoned))
        assert restored["spec"]["unschedulable"] is start["spec"]["unschedulable"]
        assert cordoned_by(restored) is None


def apply(target: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """RFC 7386 merge patch, enough for these tests."""
    if patch is None:
        return target
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = apply(dict(out.get(key) or {}), value)
        else:
            out[key] = value
    return out


def test_load_balancer_label_patches() -> None:
    label = "node.kubernetes.io/exclude-from-external-load-balancers"
    assert exclude_from_lb_patch(exclude=True) == {"metadata": {"labels": {label: "True"}}}
    assert exclude_from_lb_patch(exclude=False) == {"metadata": {"labels": {label: None}}}


@pytest.mark.parametrize("who", ["brupop", "admin", "someone-else"])
def test_a_schedulable_node_is_cordoned_whatever_a_stale_annotation_says(who: str) -> None:
    """Item 16 of issue 14: the agent died after its cordon, an admin ran `kubectl uncordon` (which keeps
    annotations), the agent restarted and asks again: the node is schedulable, so brupop cordons it now."""
    stale = node(who=who)
    assert cordon_patch(stale) == {
        "metadata": {"resourceVersion": "42", "annotations": {CORDON_ANNOTATION: "brupop"}},
        "spec": {"unschedulable": True},
    }
    cordoned = apply(stale, cordon_patch(stale))
    assert apply(cordoned, uncordon_patch(cordoned))["spec"]["unschedulable"] is False


@given(
    unschedulable=st.booleans(),
    who=st.sampled_from([None, "brupop", "admin", "other"]),
)
def test_after_a_cordon_the_node_is_unschedulable_and_an_admins_cordon_is_kept(
    unschedulable: bool, who: str | None
) -> None:
    start = node(unschedulable=unschedulable, who=who)
    cordoned = apply(start, cordon_patch(start))
    assert cordoned["spec"]["unschedulable"] is True
    restored = apply(cordoned, uncordon_patch(cordoned))
    # Uncordon makes the node schedulable only when brupop made it unschedulable.
    made_by_brupop = not unschedulable or who == "brupop"
    assert restored["spec"]["unschedulable"] is not made_by_brupop


@pytest.mark.parametrize(
    ("tolerations", "tolerates"),
    [
        ([{"operator": "Exists"}], True),
        ([{"operator": "Exists", "effect": "NoSchedule"}], True),
        ([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}], True),
        ([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}], True),  # Equal, no value
        ([{"operator": "Exists", "effect": "NoExecute"}], False),
        ([{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}], False),
        ([{"key": "node.kubernetes.io/unschedulable", "operator": "Equal", "value": "x"}], False),
        ([], False),
        (None, False),
        (["junk"], False),
    ],
)
def test_which_pods_tolerate_the_cordon(tolerations: Any, tolerates: bool) -> None:
    assert tolerates_cordon({"spec": {"tolerations": tolerations}}) is tolerates


def test_the_owner_of_a_pod_is_its_controller_or_itself() -> None:
    owned = {
        "metadata": {"name": "a", "namespace": "n", "ownerReferences": [{"controller": True, "uid": "rs"}]}
    }
    assert owner_key(owned) == "rs"
    assert owner_key({"metadata": {"name": "a", "namespace": "n"}}) == "n/a"


def status(code: int, message: str = "", reason: str = "", **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "message": message,
        "reason": reason,
        "details": details,
    }


@pytest.mark.parametrize(
    ("code", "body", "name", "outcome"),
    [
        (201, {"kind": "Status", "status": "Success"}, "Evicted", Outcome.EVICTED),
        (200, {}, "Evicted", Outcome.EVICTED),
        (404, status(404, 'pods "a" not found', "NotFound"), "NotFound", Outcome.GONE),
        (
            409,
            status(
                409,
                'Operation cannot be fulfilled on Pod "a": the UID in the precondition (1) does not '
                "match the UID in record (2). The object might have been deleted and then recreated",
                "Conflict",
            ),
            "Replaced",
            Outcome.GONE,
        ),
        (409, status(409, "the object has been modified", "Conflict"), "Conflict", Outcome.RETRY),
        (
            429,
            status(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.",
                "TooManyRequests",
                causes=[
                    {
                        "reason": "DisruptionBudget",
                        "message": "The disruption budget web is still being processed by the server.",
                    }
                ],
                retryAfterSeconds=10,
            ),
            "DisruptionBudget",
            Outcome.RETRY,
        ),
        (
            429,
            status(429, "Too many requests, please try again later.", "TooManyRequests"),
            "TooManyRequests",
            Outcome.RETRY,
        ),
        (
            403,
            status(
                403,
                "unable to create new content in namespace x because it is being terminated",
                "Forbidden",
                causes=[{"reason": "NamespaceTerminating", "message": "namespace x is being terminated"}],
            ),
            "NamespaceTerminating",
            Outcome.WAIT,
        ),
        (
            403,
            status(
                403,
                'poddisruptionbudgets.policy "web" is forbidden: pdb disruptions allowed is negative',
                "Forbidden",
                kind="poddisruptionbudget",
                name="web",
            ),
            "DisruptionBudget",
            Outcome.RETRY,
        ),
        (403, status(403, "cannot create resource pods/eviction", "Forbidden"), "Forbidden", Outcome.DENIED),
        (
            500,
            {
                "kind": "Status",
                "status": "Failure",
                "code": 500,
                "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                "does not support.",
            },
            "MultiplePodDisruptionBudgets",
            Outcome.REFUSED,
        ),
        (500, status(500, "etcdserver: request timed out", "InternalError"), "InternalError", Outcome.RETRY),
        (
            504,
            status(504, 'couldn\'t update PodDisruptionBudget "web" due to conflicts', "Timeout"),
            "Timeout",
            Outcome.RETRY,
        ),
        (503, {}, "ServerError", Outcome.RETRY),
        (
            400,
            status(400, "name in URL does not match name in Eviction object", "BadRequest"),
            "BadRequest",
            Outcome.REFUSED,
        ),
        (
            422,
            status(422, "deleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential", "Invalid"),
            "Invalid",
            Outcome.REFUSED,
        ),
        (418, {}, "HTTP418", Outcome.REFUSED),
        (0, {"message": "no answer: POST .../eviction: connection refused"}, "Unavailable", Outcome.RETRY),
    ],
)
def test_each_eviction_answer_by_its_meaning(
    code: int, body: dict[str, Any], name: str, outcome: Outcome
) -> None:
    answer = read_eviction(code, body)
    assert (answer.name, answer.outcome) == (name, outcome)


def test_a_pdb_refusal_names_the_pdb_and_the_wait_it_asks_for() -> None:
    body = status(
        429,
        "Cannot evict pod as it would violate the pod's disruption budget.",
        "TooManyRequests",
        causes=[
            {
                "reason": "DisruptionBudget",
                "message": "The disruption budget web needs 8 healthy pods and has 8 currently",
            }
        ],
        retryAfterSeconds=10,
    )
    answer = read_eviction(429, body)
    assert answer.pdbs == frozenset({"web"})
    assert answer.retry_after == 10
    assert "needs 8 healthy pods" in answer.message
    assert blocking_pdbs("something else") == set()
