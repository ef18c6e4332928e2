"""The controller's writes on a faked Kubernetes API (respx): fenced, preconditioned, and never raising."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from brupop.controller.cluster import (
    REPORTER,
    ClusterFleet,
    LeaseLeadership,
    trim_node,
    trim_policy,
    trim_shadow,
)
from brupop.controller.reconciler import UnreadableShadow
from brupop.kube.client import KubeClient, Retries
from brupop.kube.config import KubeConfig
from brupop.kube.leader import NotLeadingError
from brupop.kube.retry import Backoff
from brupop.models.policy import PolicyState, UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.policy.marks import MarksChange
from brupop.policy.pools import ENV_POOL
from tests.factories import shadow

SERVER = "https://kube.test:6443"
SHADOW_URL = f"{SERVER}/apis/brupop.bottlerocket.aws/v2/namespaces/ns/bottlerocketshadows/brs-n"
NODE_URL = f"{SERVER}/api/v1/nodes/n"
STAGE = ShadowSpec(state=ShadowState.STAGED_AND_PERFORMED_UPDATE, version="1.1.0")


def seen(version: str = "41") -> BottlerocketShadow:
    found = shadow("n")
    return BottlerocketShadow(metadata={**found.metadata, "resourceVersion": version}, status=found.status)


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeClient]:
    (tmp_path / "token").write_text("t")
    config = KubeConfig(server=SERVER, token_file=tmp_path / "token")
    retries = Retries(attempts=3, backoff=Backoff(base=0.0, cap=0.0))
    async with KubeClient(config, transport=httpx.AsyncHTTPTransport(), retries=retries) as client:
        yield client


def fleet(kube: KubeClient, left: float = 10.0) -> ClusterFleet:
    return ClusterFleet(kube=kube, namespace="ns", on_change=lambda: None, instance="me", fence=lambda: left)


@respx.mock
async def test_a_spec_write_carries_the_resource_version_it_was_decided_on(kube: KubeClient) -> None:
    route = respx.patch(SHADOW_URL).mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "brs-n", "namespace": "ns"}})
    )
    assert await fleet(kube).write_shadow(seen("41"), spec=STAGE, annotations={})
    body = json.loads(route.calls[0].request.content)
    assert body["metadata"] == {"resourceVersion": "41"}
    assert body["spec"]["state"] == "StagedAndPerformedUpdate"


@respx.mock
async def test_annotations_go_with_the_spec_or_alone_preconditioned_the_same(kube: KubeClient) -> None:
    route = respx.patch(SHADOW_URL).mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "brs-n", "namespace": "ns"}})
    )
    writer = fleet(kube)
    record = {"brupop.bottlerocket.aws/cycle": '{"from":"1.0.0"}'}
    assert await writer.write_shadow(seen("41"), spec=STAGE, annotations=record)
    assert await writer.write_shadow(
        seen("42"), spec=None, annotations={"brupop.bottlerocket.aws/waiting": None}
    )
    both, alone = (json.loads(call.request.content) for call in route.calls)
    assert both["metadata"] == {"resourceVersion": "41", "annotations": record}
    assert "spec" in both
    assert alone["metadata"] == {
        "resourceVersion": "42",
        "annotations": {"brupop.bottlerocket.aws/waiting": None},
    }
    assert "spec" not in alone


@respx.mock
@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectError("connection refused"),  # a kube-apiserver restarting: retried, then given up
        httpx.Response(409, json={"kind": "Status", "reason": "Conflict"}),  # changed since: refused
        httpx.Response(500, json={"kind": "Status", "message": "etcd"}),
    ],
    ids=["no-answer", "conflict", "server-error"],
)
async def test_a_failed_write_is_reported_not_raised(kube: KubeClient, answer: object) -> None:
    respx.patch(SHADOW_URL).mock(side_effect=[answer] * 3)
    assert not await fleet(kube).write_shadow(seen(), spec=STAGE, annotations={})


@respx.mock
async def test_nothing_is_sent_once_the_lease_has_no_time_left(kube: KubeClient) -> None:
    spec = respx.patch(SHADOW_URL).mock(return_value=httpx.Response(200, json={}))
    delete = respx.delete(SHADOW_URL).mock(return_value=httpx.Response(200, json={}))
    label = respx.patch(NODE_URL).mock(return_value=httpx.Response(200, json={}))
    late = fleet(kube, left=0.0)
    assert not await late.write_shadow(seen(), spec=STAGE, annotations={})
    assert not await late.delete_shadow(seen())
    assert not await late.write_node("n", in_cycle=False, marks=MarksChange())
    assert (spec.call_count, delete.call_count, label.call_count) == (0, 0, 0)


@respx.mock
async def test_deletes_are_preconditioned_and_a_shadow_already_gone_counts_as_deleted(
    kube: KubeClient,
) -> None:
    route = respx.delete(SHADOW_URL).mock(return_value=httpx.Response(404, json={"kind": "Status"}))
    assert await fleet(kube).delete_shadow(seen("7"))
    assert json.loads(route.calls[0].request.content)["preconditions"] == {"resourceVersion": "7"}


@respx.mock
async def test_the_in_cycle_label_is_added_freely_and_removed_only_from_the_node_as_seen(
    kube: KubeClient,
) -> None:
    route = respx.patch(NODE_URL).mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "n", "resourceVersion": "9"}})
    )
    writer = fleet(kube)
    writer.node_informer.assume({"metadata": {"name": "n", "resourceVersion": "8"}})
    assert await writer.write_node("n", in_cycle=True, marks=MarksChange())
    assert await writer.write_node("n", in_cycle=False, marks=MarksChange())
    added, removed = (json.loads(call.request.content)["metadata"] for call in route.calls)
    assert added == {"labels": {"brupop.bottlerocket.aws/in-update-cycle": "true"}}
    assert removed == {"labels": {"brupop.bottlerocket.aws/in-update-cycle": None}, "resourceVersion": "9"}


@respx.mock
async def test_marks_go_in_the_same_node_write_as_the_label_preconditioned(kube: KubeClient) -> None:
    route = respx.patch(NODE_URL).mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "n", "resourceVersion": "9"}})
    )
    writer = fleet(kube)
    writer.node_informer.assume({"metadata": {"name": "n", "resourceVersion": "8"}})
    taints = [{"key": "example.com/updating", "effect": "PreferNoSchedule"}]
    marks = MarksChange(
        labels={"example.com/updating": "true"},
        annotations={"karpenter.sh/do-not-disrupt": "true", "brupop.bottlerocket.aws/during-update": "{}"},
        taints=taints,
    )
    assert await writer.write_node("n", in_cycle=True, marks=marks)
    assert await writer.write_node(
        "n", in_cycle=None, marks=MarksChange(labels={"example.com/updating": None})
    )
    started, removed = (json.loads(call.request.content) for call in route.calls)
    assert started == {
        "metadata": {
            "labels": {"example.com/updating": "true", "brupop.bottlerocket.aws/in-update-cycle": "true"},
            "annotations": {
                "karpenter.sh/do-not-disrupt": "true",
                "brupop.bottlerocket.aws/during-update": "{}",
            },
            "resourceVersion": "8",
        },
        "spec": {"taints": taints},
    }
    assert removed == {"metadata": {"labels": {"example.com/updating": None}, "resourceVersion": "9"}}


POLICY_URL = f"{SERVER}/apis/brupop.bottlerocket.aws/v1alpha1/updatepolicies/web"


@respx.mock
async def test_a_policy_status_goes_through_its_subresource_preconditioned(kube: KubeClient) -> None:
    route = respx.patch(f"{POLICY_URL}/status").mock(
        side_effect=[
            httpx.Response(200, json={"metadata": {"name": "web", "resourceVersion": "12"}}),
            httpx.Response(404, json={"kind": "Status", "reason": "NotFound"}),
        ]
    )
    writer = fleet(kube)
    policy = {"metadata": {"name": "web", "resourceVersion": "11"}, "spec": {"nodeSelector": {}}}
    status = UpdatePolicyStatus(state=PolicyState.PAUSED, selected=3)
    assert await writer.write_policy_status(policy, status)
    body = json.loads(route.calls[0].request.content)
    assert body["metadata"] == {"resourceVersion": "11"}
    assert (body["status"]["state"], body["status"]["selected"], body["status"]["halted"]) == (
        "Paused",
        3,
        None,
    )
    assert writer.policies() == [{"metadata": {"name": "web", "resourceVersion": "12"}}]
    assert await writer.write_policy_status(policy, status)  # deleted meanwhile: nothing left to write


CREATED = httpx.Response(201, json={})


async def _sent(
    writer: ClusterFleet, route: respx.Route, answers: list[httpx.Response | Exception]
) -> list[dict[str, Any]]:
    """Run the writer's Event sender while `route` gives `answers`, one per request; the bodies sent."""
    bodies: list[dict[str, Any]] = []
    answered = asyncio.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        reply = answers[len(bodies) - 1]
        if len(bodies) == len(answers):
            answered.set()
        if isinstance(reply, Exception):
            raise reply
        return reply

    route.side_effect = answer
    sender = asyncio.create_task(writer.events.run())
    try:
        await asyncio.wait_for(answered.wait(), timeout=10)
    finally:
        sender.cancel()
    return bodies


@respx.mock
async def test_events_about_a_policy_name_it_in_the_default_namespace(kube: KubeClient) -> None:
    route = respx.post(f"{SERVER}/api/v1/namespaces/default/events")
    writer = fleet(kube)
    writer.policy_informer.assume({"metadata": {"name": "web", "uid": "p-1", "resourceVersion": "1"}})
    writer.record_policy_event("web", reason="PolicyHalted", message="spent", warning=True)
    assert route.call_count == 0  # queued: the pass that told it goes on at once
    (event,) = await _sent(writer, route, [CREATED])
    assert event["involvedObject"] == {
        "apiVersion": "brupop.bottlerocket.aws/v1alpha1",
        "kind": "UpdatePolicy",
        "name": "web",
        "uid": "p-1",
    }
    assert (event["reason"], event["type"], event["message"]) == ("PolicyHalted", "Warning", "spent")
    assert (event["reportingComponent"], event["reportingInstance"]) == (REPORTER, "me")


@respx.mock
async def test_an_event_about_a_shadow_names_it_in_its_namespace(kube: KubeClient) -> None:
    route = respx.post(f"{SERVER}/api/v1/namespaces/ns/events").mock(
        return_value=httpx.Response(201, json={})
    )
    writer = fleet(kube)
    writer.shadow_informer.assume(
        {"metadata": {"name": "brs-n", "namespace": "ns", "uid": "s-1", "resourceVersion": "1"}}
    )
    writer.record_event("brs-n", reason="UpdateStarted", message="updating from 1.0.0 to 1.1.0")
    (event,) = await _sent(writer, route, [CREATED])
    assert event["involvedObject"]["uid"] == "s-1"
    assert (event["involvedObject"]["kind"], event["involvedObject"]["namespace"]) == (
        "BottlerocketShadow",
        "ns",
    )


def test_an_unreadable_shadow_is_kept_as_such_whatever_is_wrong_with_it() -> None:
    bad = {
        "metadata": {"name": "brs-n", "namespace": "ns", "resourceVersion": "3"},
        "spec": {"state": "RebootedIntoUpdate", "state_transition_timestamp": "9999-12-31T23:59:59-23:59"},
    }
    parsed = trim_shadow(bad)["brupop.parsed"]
    assert isinstance(parsed, UnreadableShadow)
    assert (parsed.name, parsed.resource_version, parsed.node) == ("brs-n", "3", "n")
    assert "outside the years 1-9999" in parsed.error


def test_nodes_keep_the_labels_and_the_cordon_bookkeeping_decisions_read() -> None:
    node = {
        "metadata": {
            "name": "n",
            "uid": "u",
            "resourceVersion": "5",
            "labels": {
                "bottlerocket.aws/updater-interface-version": "2.0.0",
                "brupop.bottlerocket.aws/in-update-cycle": "true",
                "kubernetes.io/hostname": "n",
            },
            "annotations": {"brupop.bottlerocket.aws/cordoned-by": "brupop"},
        },
        "spec": {"taints": [{"key": "example.com/t", "effect": "NoSchedule"}, "junk"], "unschedulable": True},
        "status": {"images": ["big"] * 100, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    info = trim_node(node)["brupop.parsed"]
    assert (info.ready, info.unschedulable) == (True, True)  # the cluster gate and verification read them
    assert info.opted_in
    assert info.in_cycle
    assert info.brupop_cordon
    assert info.labels == node["metadata"]["labels"]  # policies select on any label
    assert info.annotations == {"brupop.bottlerocket.aws/cordoned-by": "brupop"}
    assert info.taints == ({"key": "example.com/t", "effect": "NoSchedule"},)
    assert set(trim_node(node)) == {"metadata", "brupop.parsed"}  # the images are gone
    not_ready = {**node, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}, "spec": {}}
    assert (
        trim_node(not_ready)["brupop.parsed"].ready,
        trim_node(not_ready)["brupop.parsed"].unschedulable,
    ) == (
        False,
        False,
    )


@respx.mock
async def test_an_event_that_cannot_be_recorded_is_dropped(kube: KubeClient) -> None:
    route = respx.post(f"{SERVER}/api/v1/namespaces/default/events")
    writer = fleet(kube)
    writer.record_node_event("n", reason="UpdateStuck", message="stuck")
    writer.record_node_event("m", reason="UpdateStuck", message="stuck")
    refused: list[httpx.Response | Exception] = [httpx.ConnectError("connection refused")] * 3
    bodies = await _sent(writer, route, [*refused, CREATED])  # three tries of the first, then the next
    assert [b["involvedObject"]["name"] for b in bodies] == ["n", "n", "n", "m"]


def test_a_shadow_keeps_the_annotations_decisions_read_and_nothing_else() -> None:
    obj = {
        "metadata": {
            "name": "brs-n",
            "namespace": "ns",
            "annotations": {
                "brupop.bottlerocket.aws/retry": "2025-01-01T00:00:00Z",
                "brupop.bottlerocket.aws/history": '{"cycles":[]}',
                "brupop.bottlerocket.aws/verification": '{"version":"1.1.0"}',
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            },
        },
        "spec": {"state": "Idle"},
    }
    parsed = trim_shadow(obj)["brupop.parsed"]
    assert isinstance(parsed, BottlerocketShadow)
    assert parsed.annotations == {
        "brupop.bottlerocket.aws/retry": "2025-01-01T00:00:00Z",
        "brupop.bottlerocket.aws/history": '{"cycles":[]}',
        "brupop.bottlerocket.aws/verification": '{"version":"1.1.0"}',
    }


def test_a_policy_is_cached_whole_but_its_managed_fields() -> None:
    obj = {"metadata": {"name": "web", "managedFields": [{"manager": "kubectl"}]}, "spec": {"paused": True}}
    assert trim_policy(obj) == {"metadata": {"name": "web"}, "spec": {"paused": True}}


class Elector:
    """The leader elector's annotations, as LeaseLeadership uses them."""

    def __init__(self, **annotations: str) -> None:
        self.annotations = dict(annotations)
        self.fail = False

    def annotation(self, key: str) -> str | None:
        return self.annotations.get(key)

    async def annotate(self, key: str, value: str) -> None:
        if self.fail:
            raise NotLeadingError("lost it")
        self.annotations[key] = value


ENV_RECORD = "brupop.bottlerocket.aws/schedule-drained-at"
POLICY_RECORD = "brupop.bottlerocket.aws/policy-schedules-drained-at"
T = datetime(2025, 6, 1, 12, tzinfo=UTC)


async def test_schedule_records_per_pool_live_on_the_lease() -> None:
    elector = Elector(**{ENV_RECORD: "2025-06-01T10:00:00Z"})
    leadership = LeaseLeadership(elector)  # type: ignore[arg-type]
    assert leadership.drained_at() == {ENV_POOL: T.replace(hour=10)}
    assert await leadership.record_drained("nightly", T, live=["nightly", "weekly"])
    assert await leadership.record_drained("weekly", T.replace(hour=13), live=["weekly"])  # nightly went
    assert list(json.loads(elector.annotations[POLICY_RECORD])) == ["weekly"]
    assert await leadership.record_drained(ENV_POOL, T, live=[ENV_POOL])
    assert leadership.drained_at() == {ENV_POOL: T, "weekly": T.replace(hour=13)}
    elector.fail = True
    assert not await leadership.record_drained("weekly", T, live=["weekly"])


@pytest.mark.parametrize(
    "record",
    ['{"weekly": "yesterday", "nightly": "2025-06-01T12:00:00Z"}', "[not a map]", "{broken"],
)
def test_an_unreadable_schedule_record_is_ignored_entry_by_entry(record: str) -> None:
    leadership = LeaseLeadership(Elector(**{POLICY_RECORD: record, ENV_RECORD: "junk"}))  # type: ignore[arg-type]
    found = leadership.drained_at()
    assert found in ({"nightly": T}, {})
