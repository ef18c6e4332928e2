"""The brupop apiserver on the real control plane, running as its own service account under the
manifest's RBAC, called by agent pods' pod-bound tokens."""

import asyncio
import contextlib
import json
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from benchmarks.measure import rss_mib
from brupop.apiserver.bodies import CONVERSION_BODY_LIMIT, STATUS_BODY_LIMIT
from brupop.kube.client import (
    DEPLOYMENTS,
    EVENTS,
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    SHADOWS,
    ApiError,
    KubeClient,
)
from brupop.models.constants import NAMESPACE, shadow_name
from brupop.policy.drain import CORDON_ANNOTATION
from integ.cluster import ClusterState, restart_component, stop_component
from integ.fleet import prepare
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    ensure_namespace,
    eventually,
    install_crd,
    pod_bound_token,
    pods_on,
    running,
)
from integ.operator import (
    ApiserverProcess,
    agent_pod,
    agent_token,
    apiserver_process,
    bare_pod,
    brupop_apiserver,
    install_agents,
    install_rbac,
)
from tests.integ.test_install import kubectl
from tests.unit.apiserver.test_bodies import batch_of_shadows

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
        stale_uid = "00000000-0000-4000-8000-000000000000"
        assert (await http.post(create, headers=headers(node_a, token_a, uid=stale_uid))).status_code == 403
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
        # What kubectl shows of a new shadow (item 23): an AGE column, and no `<no value>` for the goal's
        # fields that are not set yet.
        listed = kubectl(cluster, "get", "brs", shadow_name("api-a"), "-n", NAMESPACE)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert re.split(r"\s{2,}", header.strip()) == [
            "NAME",
            "STATE",
            "VERSION",
            "TARGET STATE",
            "TARGET VERSION",
            "CRASH COUNT",
            "AGE",
        ]
        assert "<no value>" not in row, listed.stdout
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
    # The disruption controller has counted them: until then the budget allows nothing, and a loaded
    # kube-controller-manager took longer than the drain's 5 s to get there (seen after test_controller).
    await eventually(lambda: _allowed(kube, "drweb", 1, generation=1), within=60, what="the PDB to allow one")
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


async def _allowed(kube: KubeClient, name: str, wanted: int, *, generation: int = 2) -> bool:
    status = (await kube.get(PDBS, name, namespace="default")).get("status") or {}
    return status.get("disruptionsAllowed") == wanted and status.get("observedGeneration") == generation


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
        assert created["spec"]["state"] == "StagedUpdate"  # v2 has one state for both; see DESIGN
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


PROBES = [
    "../pods",
    "../namespaces/kube-system/secrets",
    "probe-a?watch=1&resourceVersion=0",
    "../../api/v1/pods?watch=1",
    "probe-a/status",
    "%2e%2e",
]


@pytest.mark.integration
async def test_a_crafted_node_name_never_reaches_a_kubernetes_url(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 8 of issue 14: with pod-bound tokens of the right audience (an agent's, and a pod's that is no
    agent), node names that are URL fragments are refused as names, nothing of the cluster comes back, and
    a flood of them leaves a real agent's call working."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node_a,) = await create_nodes(kube, ["probe-a"], labels=BRUPOP_LABELS)
    agent_token_a = await agent_token(kube, await agent_pod(kube, "probe-a"))
    impostor_token = await agent_token(kube, await bare_pod(kube, "probe-a", labels={"app": "prober"}))
    uid = node_a["metadata"]["uid"]
    create = "/bottlerocket-node-resource"
    async with brupop_apiserver(cluster, kube) as server, server.client() as http:
        for token in (agent_token_a, impostor_token):
            for name in PROBES:
                probe = {"BrupopNodeName": name, "BrupopNodeUid": uid, "BrupopK8sAuthToken": token}
                answer = await http.post(create, headers=probe)
                assert answer.status_code == 400, (name, answer.status_code, answer.text)
                assert answer.json() == {
                    "error": f"BrupopNodeName {name!r} is not a Kubernetes node name (lower-case RFC 1123 "
                    "subdomain, at most 253 characters)"
                }
            # A crafted UID is refused the same way.
            probe = {"BrupopNodeName": "probe-a", "BrupopNodeUid": "../../pods", "BrupopK8sAuthToken": token}
            answer = await http.post(create, headers=probe)
            assert (answer.status_code, answer.json()) == (
                400,
                {"error": "BrupopNodeUid '../../pods' is not a Kubernetes UID (a UUID)"},
            )
        # A pod that is no agent is refused before anything uses the headers.
        answer = await http.post(create, headers=headers(node_a, impostor_token))
        assert answer.status_code == 403, answer.text
        assert answer.json() == {"error": "pod 'not-an-agent-probe-a' is not a brupop agent pod"}

        # 200 crafted requests at once, and the real agent's calls in the middle of them.
        async def crafted(i: int) -> int:
            name = PROBES[i % len(PROBES)]
            token = (agent_token_a, impostor_token)[i % 2]
            hdrs = {"BrupopNodeName": name, "BrupopNodeUid": uid, "BrupopK8sAuthToken": token}
            return (await http.post(create, headers=hdrs)).status_code

        async def real_agent() -> list[int]:
            codes = []
            for _ in range(5):
                codes.append((await http.post(create, headers=headers(node_a, agent_token_a))).status_code)
                put = await http.put(create, headers=headers(node_a, agent_token_a), json=STATUS)
                codes.append(put.status_code)
            return codes

        *flood, agent_codes = await asyncio.gather(*(crafted(i) for i in range(200)), real_agent())
        assert set(flood) == {400}
        assert agent_codes == [200] * 10
        shadow = await kube.get(SHADOWS, shadow_name("probe-a"), namespace=NAMESPACE)
        assert shadow["status"]["current_version"] == "1.0.0"


@pytest.mark.integration
async def test_a_kube_apiserver_that_is_down_is_a_503_and_the_apiserver_serves_on(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 7 of issue 14 (apiserver part): with the kube-apiserver killed, every call that needs it
    answers 503 naming the cause (the cached TokenReview lets the status update get that far), /ping and
    the conversion webhook keep answering, and once it is back the same calls succeed, in the same process."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["down-a"], labels=BRUPOP_LABELS)
    pod = await agent_pod(kube, "down-a")
    token, fresh_token = await agent_token(kube, pod), await agent_token(kube, pod)
    create = "/bottlerocket-node-resource"
    async with (
        apiserver_process(cluster, kube, name="brupop-apiserver-kube-down") as replica,
        replica.running.client() as http,
    ):
        assert (await http.post(create, headers=headers(node, token))).status_code == 200
        stop_component(cluster, "kube-apiserver")
        try:
            put = await http.put(create, headers=headers(node, token), json=STATUS)
            assert put.status_code == 503, put.text
            assert put.json()["error"].startswith("the Kubernetes API server could not answer (no answer: ")
            uncached = await http.post(create, headers=headers(node, fresh_token))
            assert uncached.status_code == 503, uncached.text
            drain = await http.post(f"{create}/cordon-and-drain", headers=headers(node, token))
            assert drain.status_code == 503, drain.text
            assert (await http.get("/ping")).text == "pong"
            review = {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "ConversionReview",
                "request": {"uid": "u", "desiredAPIVersion": "brupop.bottlerocket.aws/v1", "objects": []},
            }
            converted = await http.post("/crdconvert", json=review)
            assert converted.json()["response"]["result"]["status"] == "Success"
        finally:
            await asyncio.to_thread(restart_component, cluster, "kube-apiserver")

        async def served() -> bool:
            answer = await http.put(create, headers=headers(node, fresh_token), json=STATUS)
            return answer.status_code == 200

        await eventually(served, within=60, what="the status update to succeed again")
        assert replica.process.running


@pytest.mark.integration
async def test_a_node_uncordoned_behind_brupops_back_is_cordoned_again(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 16 of issue 14: brupop cordoned the node, the agent died, an admin ran `kubectl uncordon`
    (which keeps the cordoned-by annotation), and the restarted agent asks for the cordon and drain again:
    the node is cordoned before the drain, not drained while schedulable."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["recordon-a"], labels=BRUPOP_LABELS)
    token = await agent_token(kube, await agent_pod(kube, "recordon-a"))
    drain = "/bottlerocket-node-resource/cordon-and-drain"
    async with brupop_apiserver(cluster, kube) as server, server.client() as http:
        assert (await http.post(drain, headers=headers(node, token))).status_code == 200
        uncordoned = kubectl(cluster, "uncordon", "recordon-a")
        assert uncordoned.returncode == 0, uncordoned.stderr
        stale = await kube.get(NODES, "recordon-a")
        assert not stale["spec"].get("unschedulable")
        assert stale["metadata"]["annotations"][CORDON_ANNOTATION] == "brupop"

        assert (await http.post(drain, headers=headers(node, token))).status_code == 200
        after = await kube.get(NODES, "recordon-a")
        assert after["spec"]["unschedulable"] is True
        assert after["metadata"]["annotations"][CORDON_ANNOTATION] == "brupop"
        # And the update's end still undoes brupop's cordon.
        uncordon = "/bottlerocket-node-resource/uncordon"
        assert (await http.post(uncordon, headers=headers(node, token))).status_code == 200
        assert not (await kube.get(NODES, "recordon-a"))["spec"].get("unschedulable")


async def _status_of_big_request(
    replica: ApiserverProcess, head: str, body: AsyncIterator[bytes]
) -> tuple[int, str]:
    """Send `head` and then `body` over a raw TLS connection, reading the answer as it comes (a server that
    refuses a body answers before the client has sent it all, as curl expects); (status, answer text)."""
    context = ssl.create_default_context(cafile=str(replica.running.ca_file))
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port, ssl=context)

    async def pump() -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # the server may close once it answered
            writer.write(head.encode())
            async for chunk in body:
                writer.write(chunk)
                await writer.drain()

    pumping = asyncio.create_task(pump())
    try:
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()).strip():
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        answer = await reader.readexactly(length)
    finally:
        pumping.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
            await pumping
    return int(status_line.split()[1]), answer.decode()


async def _spaces(total: int, *, chunked: bool, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b" " * size + b"\r\n" if chunked else b" " * size
    if chunked:
        yield b"0\r\n\r\n"


@pytest.mark.integration
async def test_big_bodies_are_refused_with_413_memory_stays_bounded_and_ping_answers(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 10 of issue 14: 50 MB to the conversion webhook (no authentication) and to the status route
    (authenticated), declared or chunked, are refused with 413 while they arrive; reviews just under the cap
    are converted; the process's resident memory stays within a bound and /ping answers throughout."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["big-a"], labels=BRUPOP_LABELS)
    token = await agent_token(kube, await agent_pod(kube, "big-a"))
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers(node, token).items())
    fifty_mb = 50_000_000
    async with (
        apiserver_process(cluster, kube, name="brupop-apiserver-big-bodies") as replica,
        replica.running.client() as http,
    ):
        assert (
            await http.post("/bottlerocket-node-resource", headers=headers(node, token))
        ).status_code == 200
        baseline = rss_mib(replica.process.pid)
        pings: list[str] = []
        stop = asyncio.Event()

        async def ping() -> None:
            while not stop.is_set():
                pings.append((await http.get("/ping")).text)
                await asyncio.sleep(0.05)

        pinger = asyncio.create_task(ping())
        put = "PUT /bottlerocket-node-resource HTTP/1.1\r\nHost: x\r\n"
        requests = {
            "declared, webhook": (
                f"POST /crdconvert HTTP/1.1\r\nHost: x\r\nContent-Length: {fifty_mb}\r\n\r\n",
                False,
                CONVERSION_BODY_LIMIT,
            ),
            "chunked, webhook": (
                "POST /crdconvert HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                True,
                CONVERSION_BODY_LIMIT,
            ),
            "declared, status": (
                f"{put}{auth}Content-Length: {fifty_mb}\r\n\r\n",
                False,
                STATUS_BODY_LIMIT,
            ),
            "chunked, status": (
                f"{put}{auth}Transfer-Encoding: chunked\r\n\r\n",
                True,
                STATUS_BODY_LIMIT,
            ),
        }
        for what, (head, chunked, limit) in requests.items():
            status, answer = await _status_of_big_request(replica, head, _spaces(fifty_mb, chunked=chunked))
            assert status == 413, (what, status, answer)
            assert json.loads(answer) == {
                "error": f"the request body is larger than this route's limit of {limit} bytes"
            }, what

        # Three reviews just under the cap at once (about 2.7 MB of shadows each): all converted.
        body = batch_of_shadows(2000)
        assert len(body) < CONVERSION_BODY_LIMIT
        reviews = await asyncio.gather(*(http.post("/crdconvert", content=body) for _ in range(3)))
        for converted in reviews:
            assert converted.status_code == 200
            assert converted.json()["response"]["result"]["status"] == "Success"
        stop.set()
        await pinger
        peak = rss_mib(replica.process.pid, field="VmHWM")
        print(f"apiserver RSS: {baseline:.1f} MiB before, peak {peak:.1f} MiB")
        assert peak - baseline < 96, (baseline, peak)
        assert pings
        assert set(pings) == {"pong"}


async def kubectl_async(cluster: ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl in a thread: the kube-apiserver may call back into the brupop apiserver running on this
    event loop (the conversion webhook) while kubectl waits for it."""
    return await asyncio.to_thread(kubectl, cluster, *args)


V1_SHADOWS = "bottlerocketshadows.v1.brupop.bottlerocket.aws"
V2_SHADOWS = "bottlerocketshadows.v2.brupop.bottlerocket.aws"


def _stored_shadow(name: str, *, timestamp: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    return {
        "apiVersion": "brupop.bottlerocket.aws/v2",
        "kind": "BottlerocketShadow",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"state": "Idle", "state_transition_timestamp": timestamp, "version": "1.1.0"},
    }


@contextlib.asynccontextmanager
async def _converting(cluster: ClusterState, kube: KubeClient) -> AsyncIterator[None]:
    """The brupop apiserver in this process as the CRD's conversion webhook, for the kube-apiserver."""
    async with brupop_apiserver(cluster, kube) as server:
        await install_crd(
            kube, crd_for_local_use(webhook_url=f"{server.url}/crdconvert", ca_pem=server.ca_pem)
        )
        try:
            yield
        finally:
            await install_crd(kube, crd_for_local_use())


SHADOWS_V2 = f"/apis/brupop.bottlerocket.aws/v2/namespaces/{NAMESPACE}/bottlerocketshadows"
SHADOWS_V1 = SHADOWS_V2.replace("/v2/", "/v1/")


@pytest.mark.integration
@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59-23:59",  # a valid RFC 3339 text whose instant is in year 10000
        "0001-01-01T00:00:00+23:59",  # ... or in year 0
        "\u0662\u0660\u0662\u0664-10-24T17:02:03Z",  # digits of another script
        "2024-02-30T00:00:00Z",  # no such day
    ],
)
async def test_the_api_server_refuses_a_shadow_brupop_could_not_read(
    cluster: ClusterState, kube: KubeClient, timestamp: str
) -> None:
    """Items 9 and 11 of issue 14, at the door: the kube-apiserver fails a whole v1 list or watch when the
    webhook fails to convert one object in it, so a shadow whose timestamp brupop cannot read must never be
    stored. The CRD's pattern and CEL rule refuse it, naming the field; readable shadows still list as v1
    (also through kubectl)."""
    await prepare(kube)
    async with _converting(cluster, kube):
        await kube.request("POST", SHADOWS_V2, body=_stored_shadow("brs-good"))
        with pytest.raises(ApiError) as refused:
            await kube.request("POST", SHADOWS_V2, body=_stored_shadow("brs-unreadable", timestamp=timestamp))
        assert refused.value.status == 422, refused.value
        assert "spec.state_transition_timestamp" in str(refused.value)
        # Nor written over a readable one (the check lets only an unchanged stored value stay).
        spec = {"spec": {"state_transition_timestamp": timestamp}}
        with pytest.raises(ApiError) as overwritten:
            await kube.merge_patch(SHADOWS, "brs-good", spec, namespace=NAMESPACE)
        assert overwritten.value.status == 422, overwritten.value
        listed = await _retrying(lambda: kube.request("GET", SHADOWS_V1))
        assert [o["metadata"]["name"] for o in listed["items"]] == ["brs-good"]
        got = await kubectl_async(cluster, "get", V1_SHADOWS, "-n", NAMESPACE, "-o", "name")
        assert got.returncode == 0, got.stderr


@pytest.mark.integration
async def test_kubectl_through_v1_keeps_the_crash_back_off_and_shows_nothing_internal(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Items 12 and 23 of issue 14 with the real kubectl:
    - `kubectl label` through v1 of an ErrorReset shadow with crash_count 3 keeps the state, the count and
      the failure time, and leaves no internal annotation on the stored object;
    - a shadow a v1 client wrote in PerformedUpdate carries no internal annotation in v2 reads."""
    await prepare(kube)
    async with _converting(cluster, kube):
        await kube.request("POST", SHADOWS_V2, body=_stored_shadow("brs-crashed"))
        status = {
            "current_version": "1.0.0",
            "target_version": "1.1.0",
            "current_state": "ErrorReset",
            "crash_count": 3,
            "state_transition_failure_timestamp": "2024-05-01T10:05:00Z",
        }
        await kube.merge_patch(
            SHADOWS, "brs-crashed", {"status": status}, namespace=NAMESPACE, subresource="status"
        )
        as_v1 = await _retrying(lambda: kube.request("GET", f"{SHADOWS_V1}/brs-crashed"))
        assert as_v1["status"]["current_state"] == "MonitoringUpdate"
        labelled = await kubectl_async(
            cluster, "label", V1_SHADOWS, "brs-crashed", "-n", NAMESPACE, "team=blue"
        )
        assert labelled.returncode == 0, labelled.stderr
        stored = await kube.get(SHADOWS, "brs-crashed", namespace=NAMESPACE)
        assert stored["metadata"]["labels"] == {"team": "blue"}
        assert stored["status"] == status
        assert not any(
            key.startswith("brupop.bottlerocket.aws/") for key in stored["metadata"].get("annotations") or {}
        )

        # A v1 client's PerformedUpdate: v2 reads and kubectl describe show nothing internal.
        performed = {
            "apiVersion": "brupop.bottlerocket.aws/v1",
            "kind": "BottlerocketShadow",
            "metadata": {"name": "brs-performed", "annotations": {"note": "kept"}},
            "spec": {"state": "PerformedUpdate", "version": "1.1.0"},
        }
        await kube.request("POST", SHADOWS_V1, body=performed)
        as_v2 = await kube.get(SHADOWS, "brs-performed", namespace=NAMESPACE)
        assert as_v2["spec"]["state"] == "StagedAndPerformedUpdate"
        assert as_v2["metadata"]["annotations"] == {"note": "kept"}
        described = await kubectl_async(cluster, "describe", V2_SHADOWS, "brs-performed", "-n", NAMESPACE)
        assert described.returncode == 0, described.stderr
        assert "Annotations:  note: kept" in described.stdout, described.stdout
        assert "v1-state" not in described.stdout


def pinned(
    name: str, replicas: int, node: str, *, tolerations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Deployment whose pods may run only on `node`."""
    deployment = web(replicas, name)
    spec = deployment["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return deployment


async def _metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    """A sample of the brupop apiserver's /metrics, 0 when absent."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _node_events(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    items, _ = await kube.list(EVENTS, namespace="default", field_selector=f"regarding.name={node}")
    return [e for e in items if e.get("reportingController") == "brupop.bottlerocket.aws/apiserver"]


async def _pods_created(kube: KubeClient, app: str) -> int:
    """How many pods the app's ReplicaSet created (its SuccessfulCreate Events, counted with their series)."""
    items, _ = await kube.list(EVENTS, namespace="default")
    return sum(
        (e.get("deprecatedCount") or 1) if e.get("reason") == "SuccessfulCreate" else 0
        for e in items
        if (e.get("regarding") or {}).get("name", "").startswith(f"{app}-")
    )


@pytest.mark.integration
async def test_a_replacement_that_tolerates_the_cordon_does_not_make_the_drain_loop(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 5 of issue 14: a Deployment with `tolerations: [{operator: Exists}]` pinned to the node gets
    its replacements bound to the cordoned node again. The drain evicts the two pods that were there, leaves
    the replacements running (and says so), and ends: no eviction loop until DRAIN_TIMEOUT. The Events on
    the Node tell what brupop did (item 23), as `kubectl describe node` shows them."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["tol-a"], labels=BRUPOP_LABELS)
    await kube.create(
        DEPLOYMENTS, pinned("tolweb", 2, "tol-a", tolerations=[{"operator": "Exists"}]), namespace="default"
    )
    await eventually(lambda: _count(kube, "app=tolweb", 2), within=60, what="2 tolweb pods running")
    before = {p["metadata"]["name"] for p in running(await pods_on(kube, "default", "app=tolweb"))}
    token = await agent_token(kube, await agent_pod(kube, "tol-a"))
    async with brupop_apiserver(cluster, kube, drain_seconds=20) as server, server.client() as http:
        answer = await http.post("/bottlerocket-node-resource/cordon-and-drain", headers=headers(node, token))
        assert answer.status_code == 200, answer.text
        assert await _metric(http, "brupop_apiserver_eviction_answers_total", answer="Evicted") == 2
        assert await _metric(http, "brupop_apiserver_drain_notices_total", reason="LeftRunning") >= 1

        async def replaced() -> bool:
            now = {p["metadata"]["name"] for p in running(await pods_on(kube, "default", "app=tolweb"))}
            return len(now) == 2 and not now & before

        await eventually(replaced, within=30, what="both tolweb pods replaced, on the cordoned node")
        assert await _pods_created(kube, "tolweb") == 4  # the first two and one replacement each

        async def described() -> str | None:
            text = (await kubectl_async(cluster, "describe", "node", "tol-a")).stdout
            return text if "Drained" in text else None

        text = await eventually(described, within=15, what="the Drained event in kubectl describe node")
        for reason in ("Cordoned", "Drained", "LeftRunning"):
            assert reason in text, text
        assert "brupop.bottlerocket.aws/apiserver" in text
        events = {e["reason"]: e for e in await _node_events(kube, "tol-a")}
        assert events["Drained"]["note"].startswith("brupop evicted 2 pod(s) from the node; left running: ")
        assert events["LeftRunning"]["type"] == "Warning"
        assert (
            await http.post("/bottlerocket-node-resource/uncordon", headers=headers(node, token))
        ).status_code == 200
        assert "Uncordoned" in {e["reason"] for e in await _node_events(kube, "tol-a")} or await eventually(
            lambda: _has_event(kube, "tol-a", "Uncordoned"), what="the Uncordoned event"
        )
    await kube.delete(DEPLOYMENTS, "tolweb", namespace="default")


async def _bind_pending(
    kube: KubeClient, app: str, node: str, *, count: int, stop: asyncio.Event
) -> list[str]:
    """A kube-scheduler whose cache missed the cordon (chaos seed 279): bind each Pending pod of `app` to
    `node` through the Binding API, as the scheduler does, `count` of them or until `stop`. The pods bound."""
    bound: list[str] = []
    while len(bound) < count and not stop.is_set():
        for pod in await pods_on(kube, "default", f"app={app}"):
            name = pod["metadata"]["name"]
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp") or stop.is_set():
                continue
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            with contextlib.suppress(ApiError):  # deleted or bound meanwhile
                await kube.request("POST", f"/api/v1/namespaces/default/pods/{name}/binding", body=binding)
                bound.append(name)
        with contextlib.suppress(TimeoutError):  # a scheduler's pace: it binds what was made since
            await asyncio.wait_for(stop.wait(), timeout=0.1)
    return bound


@pytest.mark.integration
async def test_pods_bound_to_the_cordoned_node_during_the_drain_are_all_evicted_before_it_ends(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Chaos seed 279 (issue 15): after a kube-apiserver restart the scheduler kept binding the evicted pods'
    replacements to the cordoned node. The drain evicted three per owner, then left the rest and answered
    success, and the host rebooted over them. Now the drain evicts each one and answers only once none has
    come for a while, with no pod of the workload left on the node."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["stale-a"], labels=BRUPOP_LABELS)
    await kube.create(DEPLOYMENTS, pinned("staleweb", 2, "stale-a"), namespace="default")
    await eventually(lambda: _count(kube, "app=staleweb", 2), within=60, what="2 staleweb pods running")
    token = await agent_token(kube, await agent_pod(kube, "stale-a"))
    answered = asyncio.Event()
    async with brupop_apiserver(cluster, kube, drain_seconds=60) as server, server.client() as http:
        stale = asyncio.create_task(_bind_pending(kube, "staleweb", "stale-a", count=6, stop=answered))
        answer = await http.post("/bottlerocket-node-resource/cordon-and-drain", headers=headers(node, token))
        answered.set()
        bound = await stale
        assert answer.status_code == 200, answer.text
        assert len(bound) == 6, bound  # more than the three per owner the old drain evicted, before it ended
        left = [
            p["metadata"]["name"]
            for p in await pods_on(kube, "default", "app=staleweb")
            if p["spec"].get("nodeName") == "stale-a" and not p["metadata"].get("deletionTimestamp")
        ]
        assert left == [], f"the drain answered with pods on the node it never evicted: {left}"
        assert await _metric(http, "brupop_apiserver_drain_notices_total", reason="LeftRunning") == 0
    await kube.delete(DEPLOYMENTS, "staleweb", namespace="default")


async def _has_event(kube: KubeClient, node: str, reason: str) -> bool:
    return reason in {e["reason"] for e in await _node_events(kube, node)}


@pytest.mark.integration
async def test_a_pod_with_two_pdbs_fails_the_drain_at_once_naming_the_answer(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 20 of issue 14: two PDBs select the pod, so the API server answers every eviction with a 500
    ("more than one PodDisruptionBudget"). The drain fails now, naming the answer, not after DRAIN_TIMEOUT
    as a generic time-out."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["twopdb-a"], labels=BRUPOP_LABELS)
    await kube.create(DEPLOYMENTS, pinned("twopdb", 1, "twopdb-a"), namespace="default")
    for name in ("twopdb-one", "twopdb-two"):
        budget = pdb(name, 0)
        budget["spec"]["selector"] = {"matchLabels": {"app": "twopdb"}}
        await kube.create(PDBS, budget, namespace="default")
    await eventually(lambda: _count(kube, "app=twopdb", 1), within=60, what="the twopdb pod running")
    token = await agent_token(kube, await agent_pod(kube, "twopdb-a"))
    async with brupop_apiserver(cluster, kube, drain_seconds=20) as server, server.client() as http:
        answer = await http.post("/bottlerocket-node-resource/cordon-and-drain", headers=headers(node, token))
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert (
            "(MultiplePodDisruptionBudgets): This pod has more than one PodDisruptionBudget" in body["error"]
        )
        assert body["refused"]["answer"] == "MultiplePodDisruptionBudgets"
        assert body["refused"]["pod"].startswith("default/twopdb-")
        assert (
            await _metric(
                http, "brupop_apiserver_eviction_answers_total", answer="MultiplePodDisruptionBudgets"
            )
            == 1
        )
        assert await eventually(
            lambda: _has_event(kube, "twopdb-a", "DrainFailed"), what="a DrainFailed event"
        )
        await http.post("/bottlerocket-node-resource/uncordon", headers=headers(node, token))
    await kube.delete(DEPLOYMENTS, "twopdb", namespace="default")
    for name in ("twopdb-one", "twopdb-two"):
        await kube.delete(PDBS, name, namespace="default")


@pytest.mark.integration
async def test_a_terminating_namespace_is_waited_for_and_named(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 20 of issue 14: a pod whose namespace is being deleted cannot be evicted (403, cause
    NamespaceTerminating); the namespace controller deletes it. The drain asks once, waits for that and
    names the answer; with the namespace controller stopped it times out naming NamespaceTerminating, and
    with it back the next drain ends."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (node,) = await create_nodes(kube, ["doomed-a"], labels=BRUPOP_LABELS)
    await ensure_namespace(kube, "doomed")
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "doomed-pod", "namespace": "doomed"},
        "spec": {"nodeName": "doomed-a", "containers": [{"name": "c", "image": "nginx"}]},
    }
    await kube.create(PODS, body, namespace="doomed")
    token = await agent_token(kube, await agent_pod(kube, "doomed-a"))
    stop_component(cluster, "kube-controller-manager")  # the namespace controller: nobody deletes the pod
    try:
        await kube.delete(NAMESPACES, "doomed")
        async with brupop_apiserver(cluster, kube, drain_seconds=6) as server, server.client() as http:
            drain = "/bottlerocket-node-resource/cordon-and-drain"
            stuck = await http.post(drain, headers=headers(node, token))
            assert stuck.status_code == 409, stuck.text
            assert "last answers: doomed/doomed-pod: NamespaceTerminating" in stuck.json()["error"]
            assert (
                await _metric(http, "brupop_apiserver_eviction_answers_total", answer="NamespaceTerminating")
                == 1
            )
            await asyncio.to_thread(restart_component, cluster, "kube-controller-manager")

            async def drained() -> bool:  # once the namespace controller is back and deletes the pod
                return (await http.post(drain, headers=headers(node, token))).status_code == 200

            await eventually(drained, within=90, what="a drain to end once the namespace controller runs")
            await http.post("/bottlerocket-node-resource/uncordon", headers=headers(node, token))
    finally:
        if not _alive(cluster, "kube-controller-manager"):
            await asyncio.to_thread(restart_component, cluster, "kube-controller-manager")


def _alive(cluster: ClusterState, name: str) -> bool:
    try:
        os.killpg(cluster.pids[name], 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration
async def test_a_pdb_holding_a_lost_eviction_is_named_and_the_drain_ends_when_it_expires(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Item 27 of issue 14: the PDB counts a living pod as disrupted (what an eviction whose delete was lost
    leaves: here written into the PDB's status, as the eviction handler writes it, 105 s ago), so it allows
    nothing. The drain names the PDB and the pod (log, Warning Event on the Node, metric), and gets the pod
    out as soon as the disruption controller expires the entry."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    node, _ = await create_nodes(kube, ["lost-a", "lost-b"], labels={**BRUPOP_LABELS, "test-group": "lost"})
    await kube.merge_patch(NODES, "lost-b", {"spec": {"unschedulable": True}})  # every pod on lost-a first
    lostweb = web(3, "lostweb")
    lostweb["spec"]["template"]["spec"]["nodeSelector"] = {"test-group": "lost"}
    await kube.create(DEPLOYMENTS, lostweb, namespace="default")
    await kube.create(PDBS, pdb("lostweb", 2), namespace="default")
    await eventually(lambda: _count(kube, "app=lostweb", 3), within=60, what="3 lostweb pods running")
    await kube.merge_patch(NODES, "lost-b", {"spec": {"unschedulable": False}})  # where replacements go
    await eventually(
        lambda: _allowed(kube, "lostweb", 1, generation=1), within=30, what="the PDB to allow one"
    )
    victim = running(await pods_on(kube, "default", "app=lostweb"))[0]["metadata"]["name"]
    since = (datetime.now(UTC) - timedelta(seconds=105)).strftime("%Y-%m-%dT%H:%M:%SZ")
    budget = await kube.get(PDBS, "lostweb", namespace="default")
    budget["status"]["disruptedPods"] = {victim: since}
    budget["status"]["disruptionsAllowed"] = 0
    await kube.request(
        "PUT", PDBS.path(namespace="default", name="lostweb", subresource="status"), body=budget
    )
    await eventually(
        lambda: _allowed(kube, "lostweb", 0, generation=1), within=30, what="the PDB to allow none"
    )
    # Evicting the pod the PDB already counts is refused all the same: only disruptionsAllowed counts.
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": victim, "namespace": "default"},
    }
    with pytest.raises(ApiError) as again:
        await kube.create(PODS, eviction, namespace="default", name=victim, subresource="eviction")
    assert again.value.status == 429
    token = await agent_token(kube, await agent_pod(kube, "lost-a"))
    async with brupop_apiserver(cluster, kube, drain_seconds=90) as server, server.client() as http:
        answer = await http.post("/bottlerocket-node-resource/cordon-and-drain", headers=headers(node, token))
        assert answer.status_code == 200, answer.text
        assert (
            await _metric(
                http,
                "brupop_apiserver_drain_notices_total",
                reason="StaleDisruption",
                namespace="default",
                pdb="lostweb",
            )
            == 1
        )
        events = await eventually(
            lambda: _events_with(kube, "lost-a", "StaleDisruption"), what="the StaleDisruption event"
        )
        assert events[0]["type"] == "Warning"
        assert (
            f"PodDisruptionBudget default/lostweb has counted pod default/{victim} as disrupted"
            in events[0]["note"]
        )
        await http.post("/bottlerocket-node-resource/uncordon", headers=headers(node, token))
    await kube.delete(DEPLOYMENTS, "lostweb", namespace="default")
    await kube.delete(PDBS, "lostweb", namespace="default")


async def _events_with(kube: KubeClient, node: str, reason: str) -> list[dict[str, Any]] | None:
    found = [e for e in await _node_events(kube, node) if e["reason"] == reason]
    return found or None
