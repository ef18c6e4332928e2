from typing import Any

import pytest

from brupop.policy.drain import (
    CORDON_ANNOTATION,
    cordon_patch,
    cordoned_by,
    exclude_from_lb_patch,
    is_terminating,
    must_leave,
    pod_key,
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
