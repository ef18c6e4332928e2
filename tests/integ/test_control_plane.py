"""The local control plane is a real one: scheduling, PDB-guarded eviction, ReplicaSets, pod-bound tokens
and TokenReview extras, and RBAC, as the later brupop tests rely on."""

from typing import Any

import pytest

from brupop.kube.client import DEPLOYMENTS, NODES, PDBS, PODS, TOKEN_REVIEWS, ApiError, KubeClient
from integ.cluster import ClusterState, caught_up, restart_component
from integ.kubetools import (
    client_with_token,
    create_nodes,
    create_service_account,
    ensure_namespace,
    eventually,
    pod_bound_token,
    pods_on,
    running,
)

NS = "cp-test"
APP = "app=web"


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"test-group": "control-plane"},  # other tests' nodes share the cluster
                    "containers": [{"name": "web", "image": "nginx"}],
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                },
            },
        },
    }


async def evict(kube: KubeClient, pod: dict[str, Any]) -> int:
    name = pod["metadata"]["name"]
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NS}}
    try:
        await kube.create(PODS, body, namespace=NS, name=name, subresource="eviction")
        return 201
    except ApiError as err:
        return err.status


async def disruptions_allowed(kube: KubeClient) -> int:
    pdb = await kube.get(PDBS, "web", namespace=NS)
    return int((pdb.get("status") or {}).get("disruptionsAllowed", 0))


async def all_running(kube: KubeClient, count: int) -> list[dict[str, Any]] | None:
    pods = running(await pods_on(kube, NS, APP))
    return pods if len(pods) == count else None


@pytest.mark.integration
async def test_eviction_respects_the_pdb_and_replicas_move(kube: KubeClient) -> None:
    created = await create_nodes(
        kube, [f"cp-node-{i}" for i in range(5)], labels={"test-group": "control-plane"}
    )
    nodes = [n["metadata"]["name"] for n in created]
    await ensure_namespace(kube, NS)
    await kube.create(DEPLOYMENTS, deployment(10), namespace=NS)
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"minAvailable": 8, "selector": {"matchLabels": {"app": "web"}}},
    }
    await kube.create(PDBS, pdb, namespace=NS)
    pods = await eventually(lambda: all_running(kube, 10), within=60, what="10 running replicas")
    assert {p["spec"]["nodeName"] for p in pods} <= set(nodes)

    # Cordon the busiest node and evict its pods one at a time, each when the PDB allows it.
    victim = max(nodes, key=lambda n: sum(p["spec"]["nodeName"] == n for p in pods))
    await kube.merge_patch(NODES, victim, {"spec": {"unschedulable": True}})
    for pod in [p for p in pods if p["spec"]["nodeName"] == victim]:
        await eventually(lambda: _positive(disruptions_allowed(kube)), what="the PDB to allow a disruption")
        assert await evict(kube, pod) == 201
        await eventually(lambda: all_running(kube, 10), within=60, what="the replacement to run")

    # The ReplicaSet recreated every evicted pod, none on the cordoned node.
    pods = await eventually(lambda: all_running(kube, 10), within=60)
    assert victim not in {p["spec"]["nodeName"] for p in pods}

    # With two disruptions allowed, two evictions pass and the third is refused with 429 (every node is
    # cordoned first, so replacements stay Pending and cannot give the budget back in between).
    await eventually(lambda: _equals(disruptions_allowed(kube), 2), what="the PDB to settle at 2")
    for node in nodes:
        await kube.merge_patch(NODES, node, {"spec": {"unschedulable": True}})
    outcomes = [await evict(kube, pod) for pod in pods[:3]]
    assert outcomes == [201, 201, 429]
    for node in nodes:
        await kube.merge_patch(NODES, node, {"spec": {"unschedulable": False}})


async def _positive(value: Any) -> bool:
    return await value > 0


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


@pytest.mark.integration
async def test_pod_bound_tokens_carry_pod_and_node_and_die_with_the_pod(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await ensure_namespace(kube, NS)
    await create_nodes(kube, ["cp-token-node"])
    await create_service_account(kube, NS, "agent")
    pod = await kube.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "agent-pod", "namespace": NS},
            "spec": {
                "serviceAccountName": "agent",
                "nodeName": "cp-token-node",
                "containers": [{"name": "agent", "image": "brupop"}],
            },
        },
        namespace=NS,
    )
    token = await pod_bound_token(kube, pod, audiences=["brupop-apiserver"])
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["brupop-apiserver"]},
    }
    status = (await kube.create(TOKEN_REVIEWS, review))["status"]
    assert status["authenticated"] is True
    assert status["audiences"] == ["brupop-apiserver"]
    extra = status["user"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["agent-pod"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    assert extra["authentication.kubernetes.io/node-name"] == ["cp-token-node"]
    assert status["user"]["username"] == f"system:serviceaccount:{NS}:agent"

    await kube.delete(PODS, "agent-pod", namespace=NS)

    async def gone() -> bool:
        try:
            await kube.get(PODS, "agent-pod", namespace=NS)
            return False
        except ApiError as err:
            return err.not_found

    await eventually(gone, what="the pod to be deleted")

    # kube-apiserver caches a successful token authentication for about 10 s, so "at once" is "soon".
    async def refused() -> bool:
        return (await kube.create(TOKEN_REVIEWS, review))["status"].get("authenticated") is not True

    await eventually(refused, within=30, what="the token of the deleted pod to be refused")


@pytest.mark.integration
async def test_a_service_account_client_is_held_to_its_role(cluster: ClusterState, kube: KubeClient) -> None:
    await ensure_namespace(kube, NS)
    await create_service_account(kube, NS, "reader")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "pod-reader", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}],
    }
    await kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", body=role)
    await kube.request(
        "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", body=binding
    )
    token_answer = await kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/reader/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    async with client_with_token(cluster, token_answer["status"]["token"]) as reader:
        await reader.list(PODS, namespace=NS)
        with pytest.raises(ApiError) as refused:
            await reader.delete(PODS, "anything", namespace=NS)
        assert refused.value.status == 403
        with pytest.raises(ApiError) as cluster_wide:
            await reader.list(NODES)
        assert cluster_wide.value.status == 403


@pytest.mark.integration
def test_after_the_api_server_went_away_the_suite_waits_until_new_nodes_get_their_daemonset_pods(
    cluster: ClusterState,
) -> None:
    """The controller manager and the scheduler back off their watches after kube-apiserver went away (a
    DaemonSet pod was bound 25 s after its node here): `caught_up`, which the suite runs after such a test,
    returns only once they act on a new node again, so a second probe right after it is prompt."""
    stops = cluster.stops
    restart_component(cluster, "kube-apiserver", down_for=15)
    assert cluster.stops == stops + 1
    caught_up(cluster, timeout=120)
    caught_up(cluster, timeout=10)  # raises ClusterError unless every step of it is prompt
