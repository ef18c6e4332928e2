"""`ClusterGate` on a faked Kubernetes API (respx): who is refused, and which calls a refusal costs. A
header that is not a Kubernetes name or UID costs none; a caller that is not the agent of the named node
costs a TokenReview and nothing that uses the header."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from brupop.apiserver.app import create_app
from brupop.apiserver.auth import AuthError, NodeIdentity
from brupop.apiserver.cluster import ClusterGate, ClusterNodeOperations, trim_pod
from brupop.apiserver.metrics import DrainMetrics
from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.events import EventRecorder
from brupop.kube.informer import Informer
from brupop.models.constants import UPDATER_INTERFACE_LABEL, UPDATER_INTERFACE_VERSION
from brupop.policy.drain import CORDON_ANNOTATION
from tests.unit.apiserver.test_app import ROUTES, STATUS

SERVER = "https://kube.test:6443"
NAMESPACE = "brupop-bottlerocket-aws"
NODE_UID = "0b7c3c5e-8d4e-4a53-9b5e-3f1c2d4e5f60"
TOKEN_REVIEWS = f"{SERVER}/apis/authentication.k8s.io/v1/tokenreviews"


def agent(name: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"nodeName": node},
    }


class NoSource:
    async def list(self) -> tuple[list[dict[str, Any]], str]:
        raise AssertionError("the test fills the cache itself")

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        raise AssertionError("the test fills the cache itself")


@pytest.fixture
async def gate() -> AsyncIterator[ClusterGate]:
    agents = Informer(NoSource(), name="agent-pods", transform=trim_pod)
    agents.assume(agent("brupop-agent-a", "node-a"))
    agents.ready.set()
    async with KubeClient(KubeConfig(server=SERVER, token="t"), transport=httpx.AsyncHTTPTransport()) as kube:
        yield ClusterGate(kube=kube, agents=agents, namespace=NAMESPACE)


def reviewed(pod: str) -> httpx.Response:
    return httpx.Response(
        201,
        json={
            "status": {
                "authenticated": True,
                "audiences": ["brupop-apiserver"],
                "user": {"extra": {"authentication.kubernetes.io/pod-name": [pod]}},
            }
        },
    )


def headers(node: str, uid: str = NODE_UID) -> dict[str, str]:
    return {"BrupopNodeName": node, "BrupopNodeUid": uid, "BrupopK8sAuthToken": "token"}


@pytest.mark.parametrize(
    ("node", "uid", "reason"),
    [
        ("../pods", NODE_UID, "BrupopNodeName '../pods' is not a Kubernetes node name"),
        ("../namespaces/kube-system/secrets", NODE_UID, "is not a Kubernetes node name"),
        ("node-a?watch=1", NODE_UID, "is not a Kubernetes node name"),
        ("Node-A", NODE_UID, "is not a Kubernetes node name"),
        ("a" * 254, NODE_UID, "is not a Kubernetes node name"),
        ("node-a", "../../pods", "BrupopNodeUid '../../pods' is not a Kubernetes UID"),
        ("node-a", "x" * 37, "is not a Kubernetes UID"),
    ],
)
@respx.mock  # assert_all_mocked: an unexpected call fails the test
async def test_a_header_that_is_not_a_kubernetes_name_is_refused_without_a_call(
    gate: ClusterGate, node: str, uid: str, reason: str
) -> None:
    with pytest.raises(AuthError) as info:
        await gate.identify(headers(node, uid))
    assert info.value.status == 400
    assert reason in info.value.reason
    assert len(info.value.reason) < 200  # a long header is not echoed whole


@respx.mock  # assert_all_mocked: an unexpected call fails the test
async def test_a_pod_that_is_not_an_agent_costs_only_the_token_review(gate: ClusterGate) -> None:
    review = respx.post(TOKEN_REVIEWS).mock(return_value=reviewed("impostor"))
    with pytest.raises(AuthError) as info:
        await gate.identify(headers("node-a"))
    assert info.value.status == 403
    assert review.call_count == 1  # and no GET of the node: respx refuses any unmocked call


@respx.mock  # assert_all_mocked: an unexpected call fails the test
async def test_an_agent_asking_for_another_node_never_looks_that_node_up(gate: ClusterGate) -> None:
    respx.post(TOKEN_REVIEWS).mock(return_value=reviewed("brupop-agent-a"))
    with pytest.raises(AuthError) as info:
        await gate.identify(headers("node-b"))
    assert (info.value.status, info.value.reason) == (
        403,
        "agent pod 'brupop-agent-a' runs on node 'node-a', not 'node-b'",
    )


@respx.mock  # assert_all_mocked: an unexpected call fails the test
async def test_the_agent_of_the_node_is_let_in_after_the_node_uid_check(gate: ClusterGate) -> None:
    respx.post(TOKEN_REVIEWS).mock(return_value=reviewed("brupop-agent-a"))
    node = respx.get(f"{SERVER}/api/v1/nodes/node-a").mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "node-a", "uid": NODE_UID}})
    )
    identity = await gate.identify(headers("node-a"))
    assert (identity.name, identity.uid, node.call_count) == ("node-a", NODE_UID, 1)


@pytest.fixture
async def app_client(gate: ClusterGate) -> AsyncIterator[httpx.AsyncClient]:
    registry = CollectorRegistry()
    ops = ClusterNodeOperations(
        kube=gate._kube,
        namespace=NAMESPACE,
        drain_seconds=5,
        events=EventRecorder(gate._kube, controller="test", instance="test"),
        metrics=DrainMetrics(registry),
    )
    app = create_app(gate=gate, ops=ops, registry=registry)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (httpx.ConnectError("[Errno 111] refused"), "no answer: "),
        (httpx.ReadTimeout("timed out"), "timed out"),
        (
            httpx.Response(500, json={"kind": "Status", "reason": "Internal", "message": "etcd timed out"}),
            "etcd timed out",
        ),
        (httpx.Response(503, text="the server is shutting down"), "shutting down"),
    ],
)
@pytest.mark.parametrize("failing", ["the token review", "everything after it"])
@respx.mock
async def test_a_kube_apiserver_that_cannot_answer_makes_every_route_a_503(
    app_client: httpx.AsyncClient, answer: Any, shown: str, failing: str
) -> None:
    kwargs = {"side_effect": answer} if isinstance(answer, Exception) else {"return_value": answer}
    if failing == "the token review":
        respx.post(TOKEN_REVIEWS).mock(**kwargs)
    else:
        respx.post(TOKEN_REVIEWS).mock(return_value=reviewed("brupop-agent-a"))
        cordoned = {
            "metadata": {
                "name": "node-a",
                "uid": NODE_UID,
                "labels": {UPDATER_INTERFACE_LABEL: UPDATER_INTERFACE_VERSION},
                "annotations": {CORDON_ANNOTATION: "brupop"},
            },
            "spec": {"unschedulable": True},
        }
        respx.get(f"{SERVER}/api/v1/nodes/node-a").mock(return_value=httpx.Response(200, json=cordoned))
        # The shadow, the node's patches, the drain's pod list.
        respx.route(path__regex=r"/apis/brupop.*").mock(**kwargs)
        respx.patch(f"{SERVER}/api/v1/nodes/node-a").mock(**kwargs)
        respx.get(f"{SERVER}/api/v1/pods").mock(**kwargs)
    for method, path in ROUTES:
        response = await app_client.request(method, path, headers=headers("node-a"), json=STATUS)
        assert response.status_code == 503, (method, path, response.text)
        error = response.json()["error"]
        assert shown in error, (method, path, error)
        assert "try again" in error, (method, path, error)
    assert (await app_client.get("/ping")).text == "pong"


@respx.mock
async def test_what_brupop_does_to_a_node_is_recorded_as_events_on_it_and_on_its_shadow(
    gate: ClusterGate,
) -> None:
    """Item 23 of issue 14: cordon, drain, uncordon and the load-balancer label each leave an Event on
    the Node (reported by the apiserver), in the background; issue 18: and on its shadow (found by its UID),
    so `kubectl describe brs` tells the same story."""
    events: list[dict[str, Any]] = []
    recorded = asyncio.Event()

    def event(request: httpx.Request) -> httpx.Response:
        events.append(json.loads(request.content))
        recorded.set()
        return httpx.Response(201, json={})

    respx.post(f"{SERVER}/api/v1/namespaces/default/events").mock(side_effect=event)
    respx.post(f"{SERVER}/api/v1/namespaces/{NAMESPACE}/events").mock(side_effect=event)
    respx.get(
        f"{SERVER}/apis/brupop.bottlerocket.aws/v2/namespaces/{NAMESPACE}/bottlerocketshadows/brs-node-a"
    ).mock(return_value=httpx.Response(200, json={"metadata": {"name": "brs-node-a", "uid": "shadow-uid"}}))
    node = {"metadata": {"name": "node-a", "uid": NODE_UID, "resourceVersion": "7"}, "spec": {}}
    cordoned = {
        "metadata": {**node["metadata"], "annotations": {CORDON_ANNOTATION: "brupop"}},
        "spec": {"unschedulable": True},
    }
    respx.get(f"{SERVER}/api/v1/nodes/node-a").mock(
        side_effect=[httpx.Response(200, json=n) for n in (node, node, cordoned, node)]
    )
    respx.patch(f"{SERVER}/api/v1/nodes/node-a").mock(return_value=httpx.Response(200, json=cordoned))
    respx.get(f"{SERVER}/api/v1/pods").mock(
        return_value=httpx.Response(200, json={"items": [], "metadata": {"resourceVersion": "9"}})
    )
    recorder = EventRecorder(gate._kube, controller="brupop.bottlerocket.aws/apiserver", instance="pod-1")
    ops = ClusterNodeOperations(
        kube=gate._kube,
        namespace=NAMESPACE,
        drain_seconds=5,
        events=recorder,
        metrics=DrainMetrics(CollectorRegistry()),
    )
    sender = asyncio.create_task(recorder.run())
    identity = NodeIdentity(name="node-a", uid=NODE_UID)
    await ops.exclude_from_lb(identity)
    await ops.cordon_and_drain(identity)
    await ops.uncordon(identity)
    await ops.remove_exclusion_from_lb(identity)
    async with asyncio.timeout(5):
        while len(events) < 10:
            recorded.clear()
            await recorded.wait()
    sender.cancel()
    steps = [
        ("ExcludedFromLoadBalancers", "Normal"),
        ("Cordoned", "Normal"),
        ("Drained", "Normal"),
        ("Uncordoned", "Normal"),
        ("LoadBalancerExclusionRemoved", "Normal"),
    ]
    for kind, uid in (("Node", NODE_UID), ("BottlerocketShadow", "shadow-uid")):
        about = [e for e in events if e["involvedObject"]["kind"] == kind]
        assert [(e["reason"], e["type"]) for e in about] == steps
        assert about[2]["message"] == "brupop evicted 0 pod(s) from the node"
        assert {e["involvedObject"]["uid"] for e in about} == {uid}
    assert {e["reportingComponent"] for e in events} == {"brupop.bottlerocket.aws/apiserver"}


@respx.mock
async def test_an_eviction_the_kube_apiserver_did_not_answer_is_tried_again(gate: ClusterGate) -> None:
    """A connection lost during one eviction (a kube-apiserver restarting) is no answer, not a refusal: the
    drain tries that pod again and succeeds. (After the kube client made "no answer" an ApiError of status
    0, the eviction read it as a permanent refusal `HTTP0` and failed the node's update.)"""
    pod = {
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "5"},
        "spec": {"nodeName": "node-a"},
        "status": {"phase": "Running"},
    }
    node = {"metadata": {"name": "node-a", "uid": NODE_UID, "resourceVersion": "1"}, "spec": {}}
    respx.get(f"{SERVER}/api/v1/nodes/node-a").mock(return_value=httpx.Response(200, json=node))
    respx.patch(f"{SERVER}/api/v1/nodes/node-a").mock(return_value=httpx.Response(200, json=node))
    evicted = asyncio.Event()

    async def deletion() -> AsyncIterator[bytes]:
        await evicted.wait()
        yield json.dumps({"type": "DELETED", "object": pod}).encode() + b"\n"
        await asyncio.Event().wait()  # the watch stays open

    def pods(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch"):
            return httpx.Response(200, content=deletion())
        return httpx.Response(200, json={"metadata": {"resourceVersion": "9"}, "items": [pod]})

    tries = 0

    def evict(request: httpx.Request) -> httpx.Response:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise httpx.ConnectError("connection refused")  # the kube-apiserver restarting
        evicted.set()
        return httpx.Response(201, json={"kind": "Status", "status": "Success"})

    respx.get(f"{SERVER}/api/v1/pods").mock(side_effect=pods)
    respx.post(f"{SERVER}/api/v1/namespaces/default/pods/web-1/eviction").mock(side_effect=evict)
    respx.post(url__regex=r".*/events$").mock(return_value=httpx.Response(201, json={}))
    ops = ClusterNodeOperations(
        kube=gate._kube,
        namespace=NAMESPACE,
        drain_seconds=5,
        events=EventRecorder(gate._kube, controller="test", instance="test"),
        metrics=DrainMetrics(CollectorRegistry()),
    )
    await ops.cordon_and_drain(NodeIdentity(name="node-a", uid=NODE_UID))
    assert tries == 2


@pytest.mark.parametrize(
    "answer",
    [httpx.ConnectError("[Errno 111] refused"), httpx.Response(503, text="the server is shutting down")],
)
@respx.mock
async def test_a_shadow_create_the_kube_apiserver_cannot_answer_is_a_503(
    app_client: httpx.AsyncClient, answer: Any
) -> None:
    """The create reads the Node (is it managed?) first: when that read gets no answer it is a 503 "try
    again" as on every other route, not a 502."""
    respx.post(TOKEN_REVIEWS).mock(return_value=reviewed("brupop-agent-a"))
    node = {"metadata": {"name": "node-a", "uid": NODE_UID}}
    # The first read checks the caller's node UID; the create's own read then gets no answer.
    respx.get(f"{SERVER}/api/v1/nodes/node-a").mock(side_effect=[httpx.Response(200, json=node), answer])
    response = await app_client.post("/bottlerocket-node-resource", headers=headers("node-a"), json=STATUS)
    assert response.status_code == 503, response.text
    assert "try again" in response.json()["error"]
