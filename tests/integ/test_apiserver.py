"""The brupop apiserver on the real control plane, running as its own service account under the
manifest's RBAC, called by agent pods' pod-bound tokens."""

import asyncio
from typing import Any

import httpx
import pytest

from brupop.kube.client import DEPLOYMENTS, NODES, PDBS, PODS, SHADOWS, ApiError, KubeClient
from brupop.models.constants import NAMESPACE, shadow_name
from brupop.policy.drain import CORDON_ANNOTATION
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    eventually,
    install_crd,
    pod_bound_token,
    pods_on,
    running,
)
from integ.operator import agent_pod, agent_token, bare_pod, brupop_apiserver, install_agents, install_rbac

STATUS = {
    "current_version": "1.0.0",
    "target_version": "1.1.0",
    "current_state": "Idle",
    "crash_count": 0,
    "state_transition_failure_timestamp": None,
}


def headers(node: dict[str, Any], token: str, *, uid: str | None = None) -> dict[str, str]:
    return {
        "BrupopNodeName": node["metadata"]["name"],
        "BrupopNodeUid": uid or node["metadata"]["uid"],
        "BrupopK8sAuthToken": token,
    }


@pytest.mark.integration
async def test_identity_checks_and_the_happy_path(cluster: ClusterState, kube: KubeClient) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    node_a, node_b = await create_nodes(kube, ["api-a", "api-b"], labels=BRUPOP_LABELS)
    pod_a = await agent_pod(kube, "api-a")
    token_a = await agent_token(kube, pod_a)
    async with brupop_apiserver(cluster, kube) as server, server.client() as http:
        create = "/bottlerocket-node-resource"
        # An agent token for node A asking for node B.
        assert (await http.post(create, headers=headers(node_b, token_a))).status_code == 403
        # A token for another audience.
        wrong_audience = await pod_bound_token(kube, pod_a, audiences=["somebody-else"])
        assert (await http.post(create, headers=headers(node_a, wrong_audience))).status_code == 401
        # A wrong node UID.
        assert (
            await http.post(create, headers=headers(node_a, token_a, uid="not-the-uid"))
        ).status_code == 403
        # A pod that is not an agent pod (no agent label).
        impostor = await bare_pod(kube, "api-b", labels={"app": "impostor"})
        impostor_token = await agent_token(kube, impostor)
        assert (await http.post(create, headers=headers(node_b, impostor_token))).status_code == 403
        # Missing headers.
        assert (await http.post(create)).status_code == 401

        # The happy path: the shadow is created with its owner reference (twice: idempotent), status patched.
        first = await http.post(create, headers=headers(node_a, token_a))
        assert first.status_code == 200, first.text
        again = await http.post(create, headers=headers(node_a, token_a))
        assert again.status_code == 200
        shadow = await kube.get(SHADOWS, shadow_name("api-a"), namespace=NAMESPACE)
        assert shadow["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": "api-a", "uid": node_a["metadata"]["uid"]}
        ]
        answer = await http.put(create, headers=headers(node_a, token_a), json=STATUS)
        assert answer.status_code == 200, answer.text
        shadow = await kube.get(SHADOWS, shadow_name("api-a"), namespace=NAMESPACE)
        assert shadow["status"] == {
            k: v for k, v in STATUS.items() if v is not None
        }  # null: merge-patch delete
        bad = await http.put(create, headers=headers(node_a, token_a), json={**STATUS, "crash_count": -1})
        assert bad.status_code == 422
        assert "crash_count" in bad.text

        # The token of a deleted agent pod is refused at once (the agent-pod cache follows the deletion).
        await kube.delete(PODS, pod_a["metadata"]["name"], namespace=NAMESPACE)

        async def refused() -> bool:
            return (await http.post(create, headers=headers(node_a, token_a))).status_code in (401, 403)

        await eventually(refused, within=10, what="the deleted pod's token to be refused")


def web(replicas: int, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "c", "image": "nginx"}],
                    # No blanket toleration: it would tolerate the cordon's unschedulable taint too.
                    "nodeSelector": {"test-group": "drain"},  # other tests' nodes share the cluster
                },
            },
        },
    }


def pdb(name: str, min_available: int) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": name}}},
    }


@pytest.mark.integration
async def test_drains_respect_pdbs_are_bounded_and_keep_an_admins_cordon(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    nodes = await create_nodes(
        kube, [f"dr-{i}" for i in range(3)], labels={**BRUPOP_LABELS, "test-group": "drain"}
    )
    # Pin the workloads to dr-0 first, so there is something to drain there.
    for node in nodes[1:]:
        await kube.merge_patch(NODES, node["metadata"]["name"], {"spec": {"unschedulable": True}})
    await kube.create(DEPLOYMENTS, web(4, "drweb"), namespace="default")
    await kube.create(PDBS, pdb("drweb", 3), namespace="default")
    await eventually(lambda: _count(kube, "app=drweb", 4), within=60, what="4 drweb pods running")
    for node in nodes[1:]:
        await kube.merge_patch(NODES, node["metadata"]["name"], {"spec": {"unschedulable": False}})
    tokens = {}
    for node in nodes:
        tokens[node["metadata"]["name"]] = await agent_token(
            kube, await agent_pod(kube, node["metadata"]["name"])
        )

    async with brupop_apiserver(cluster, kube, drain_seconds=5) as server, server.client() as http:
        drain = "/bottlerocket-node-resource/cordon-and-drain"
        uncordon = "/bottlerocket-node-resource/uncordon"
        # A PDB that allows one disruption at a time: the drain evicts pod by pod and empties the node.
        answer = await http.post(drain, headers=headers(nodes[0], tokens["dr-0"]))
        assert answer.status_code == 200, answer.text
        left = [
            p for p in running(await pods_on(kube, "default", "app=drweb")) if p["spec"]["nodeName"] == "dr-0"
        ]
        assert left == []
        assert (await kube.get(NODES, "dr-0"))["spec"]["unschedulable"] is True
        assert (await http.post(uncordon, headers=headers(nodes[0], tokens["dr-0"]))).status_code == 200
        assert not (await kube.get(NODES, "dr-0"))["spec"].get("unschedulable")

        # A PDB that never allows eviction: the drain fails after the limit and names the PDB and the pods.
        await kube.merge_patch(PDBS, "drweb", {"spec": {"minAvailable": 4}}, namespace="default")
        await eventually(lambda: _allowed(kube, "drweb", 0), what="the PDB to allow nothing")
        pods = running(await pods_on(kube, "default", "app=drweb"))
        busy = max(("dr-1", "dr-2"), key=lambda name: sum(p["spec"]["nodeName"] == name for p in pods))
        node = next(n for n in nodes if n["metadata"]["name"] == busy)
        stuck = await http.post(drain, headers=headers(node, tokens[busy]))
        assert stuck.status_code == 409, stuck.text
        body = stuck.json()
        assert body["blocking_pdbs"] == ["drweb"]
        assert body["pods"]
        assert "timed out after 5s" in body["error"]
        await http.post(uncordon, headers=headers(node, tokens[busy]))

        # An admin's cordon survives brupop's cordon and uncordon.
        await kube.merge_patch(NODES, "dr-0", {"spec": {"unschedulable": True}})
        assert (await http.post(drain, headers=headers(nodes[0], tokens["dr-0"]))).status_code == 200
        assert (await http.post(uncordon, headers=headers(nodes[0], tokens["dr-0"]))).status_code == 200
        after = await kube.get(NODES, "dr-0")
        assert after["spec"]["unschedulable"] is True
        assert CORDON_ANNOTATION not in (after["metadata"].get("annotations") or {})


async def _count(kube: KubeClient, selector: str, wanted: int) -> bool:
    return len(running(await pods_on(kube, "default", selector))) == wanted


async def _allowed(kube: KubeClient, name: str, wanted: int) -> bool:
    status = (await kube.get(PDBS, name, namespace="default")).get("status") or {}
    return status.get("disruptionsAllowed") == wanted and status.get("observedGeneration") == 2


@pytest.mark.integration
async def test_the_conversion_webhook_serves_both_versions(cluster: ClusterState, kube: KubeClient) -> None:
    await prepare(kube)
    async with brupop_apiserver(cluster, kube) as server:
        await install_crd(
            kube, crd_for_local_use(webhook_url=f"{server.url}/crdconvert", ca_pem=server.ca_pem)
        )
        v1_path = f"/apis/brupop.bottlerocket.aws/v1/namespaces/{NAMESPACE}/bottlerocketshadows"
        v2_path = f"/apis/brupop.bottlerocket.aws/v2/namespaces/{NAMESPACE}/bottlerocketshadows"
        meta = {"labels": {"team": "blue"}, "annotations": {"note": "kept"}}
        old = {
            "apiVersion": "brupop.bottlerocket.aws/v1",
            "kind": "BottlerocketShadow",
            "metadata": {"name": "brs-conv-1", **meta},
            "spec": {"state": "PerformedUpdate", "version": "1.1.0", "state_transition_timestamp": None},
        }
        created = await _retrying(lambda: kube.request("POST", v1_path, body=old))
        assert created["spec"]["state"] == "PerformedUpdate"
        as_v2 = await kube.request("GET", f"{v2_path}/brs-conv-1")
        assert as_v2["apiVersion"] == "brupop.bottlerocket.aws/v2"
        assert as_v2["spec"]["state"] == "StagedAndPerformedUpdate"
        assert as_v2["metadata"]["labels"] == {"team": "blue"}
        assert as_v2["metadata"]["annotations"]["note"] == "kept"
        new = {
            "apiVersion": "brupop.bottlerocket.aws/v2",
            "kind": "BottlerocketShadow",
            "metadata": {"name": "brs-conv-2", **meta},
            "spec": {"state": "ErrorReset", "version": "1.1.0", "state_transition_timestamp": None},
        }
        await kube.request("POST", v2_path, body=new)
        as_v1 = await kube.request("GET", f"{v1_path}/brs-conv-2")
        assert as_v1["apiVersion"] == "brupop.bottlerocket.aws/v1"
        assert as_v1["spec"]["state"] == "MonitoringUpdate"
        assert as_v1["metadata"]["labels"] == {"team": "blue"}
        await install_crd(kube, crd_for_local_use())


async def _retrying(call):  # type: ignore[no-untyped-def]
    """The API server may need a moment to pick up the new CRD's conversion settings."""
    last: Exception | None = None
    for _ in range(50):
        try:
            return await call()
        except (ApiError, httpx.HTTPError) as err:
            last = err
            await asyncio.sleep(0.2)
    raise AssertionError(f"the call kept failing: {last}")
