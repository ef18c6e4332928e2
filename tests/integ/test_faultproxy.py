"""The fault proxy in front of the real kube-apiserver: it passes requests and the caller's own token
through untouched, streams watches as they happen, and does each fault only to the requests it matches."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brupop.kube.client import (
    NAMESPACES,
    NODES,
    SERVICE_ACCOUNTS,
    ApiError,
    ApiUnavailableError,
    KubeClient,
    Resource,
)
from brupop.kube.config import KubeConfig
from integ.cluster import ClusterState
from integ.faultproxy import Fault, FaultProxy, Match
from integ.kubetools import create_service_account, until
from integ.operator import config_as

CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
CLUSTER_ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False)
pytestmark = pytest.mark.integration


@pytest.fixture
async def proxy(cluster: ClusterState, tmp_path: Path) -> AsyncIterator[FaultProxy]:
    directory = Path(cluster.directory)
    proxy = FaultProxy(upstream=cluster.server, ca_file=directory / "ca.crt", cert_dir=tmp_path)
    try:
        yield proxy
    finally:
        await proxy.close()


async def through(proxy: FaultProxy, cluster: ClusterState, client: str, token: str) -> KubeClient:
    config = config_as(cluster, token)
    return KubeClient(
        KubeConfig(
            server=await proxy.listen(client), ca_file=config.ca_file, token=token, _keep=config._keep
        ),
        timeout=10,
    )


async def token_of(kube: KubeClient, name: str) -> str:
    await create_service_account(kube, "default", name)
    answer = await kube.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        namespace="default",
        name=name,
        subresource="token",
    )
    return str(answer["status"]["token"])


async def test_passes_requests_and_the_callers_own_token(
    cluster: ClusterState, kube: KubeClient, proxy: FaultProxy
) -> None:
    token = await token_of(kube, "proxy-test")  # a service account allowed nothing
    async with await through(proxy, cluster, "nobody", token) as client:
        with pytest.raises(ApiError) as refused:
            await client.list(NODES)
    assert refused.value.status == 403
    assert "system:serviceaccount:default:proxy-test" in refused.value.message
    [exchange] = proxy.log
    assert (exchange.client, exchange.method, exchange.path, exchange.status) == (
        "nobody",
        "GET",
        "/api/v1/nodes",
        403,
    )


async def admin_through(proxy: FaultProxy, cluster: ClusterState, client: str) -> KubeClient:
    """A cluster-admin service account's token through the proxy (a client certificate cannot pass a proxy
    that terminates TLS; brupop's programs use tokens anyway)."""
    async with KubeClient(KubeConfig.from_kubeconfig(Path(cluster.kubeconfig))) as kube:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "proxy-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "proxy-admin", "namespace": "default"}],
        }
        with contextlib.suppress(ApiError):  # made by an earlier test
            await kube.create(CLUSTER_ROLE_BINDINGS, binding)
        token = await token_of(kube, "proxy-admin")
    return await through(proxy, cluster, client, token)


async def test_streams_a_watch_as_events_happen(
    cluster: ClusterState, kube: KubeClient, proxy: FaultProxy
) -> None:
    async with await admin_through(proxy, cluster, "watcher") as client:
        _, version = await client.list(CONFIGMAPS, namespace="default")
        seen: asyncio.Queue[str] = asyncio.Queue()

        async def follow() -> None:
            async for kind, obj in client.watch(CONFIGMAPS, namespace="default", resource_version=version):
                await seen.put(f"{kind} {obj['metadata']['name']}")

        task = asyncio.create_task(follow())
        try:
            await until(lambda: bool(proxy.open_watches()), what="the watch to be open")
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"streamed-{time.time_ns()}"},
            }
            await kube.create(CONFIGMAPS, body, namespace="default")
            async with asyncio.timeout(10):
                assert await seen.get() == f"ADDED {body['metadata']['name']}"
            assert not task.done()  # the watch is still open: events came through as they happened
            assert proxy.cut(Match(client="watcher", watch=True)) == 1
            with pytest.raises(ApiUnavailableError):  # the client's word for a connection gone
                async with asyncio.timeout(10):
                    await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiUnavailableError):
                await task


async def test_answers_429_to_the_matched_client_only(cluster: ClusterState, proxy: FaultProxy) -> None:
    async with (
        await admin_through(proxy, cluster, "target") as target,
        await admin_through(proxy, cluster, "bystander") as bystander,
    ):
        proxy.inject(
            Fault(
                Match(client="target", methods=frozenset({"GET"}), path="/namespaces"),
                "answer",
                status=429,
                retry_after=3,
            )
        )
        with pytest.raises(ApiError) as refused:
            await target.list(NAMESPACES)
        assert refused.value.status == 429
        assert refused.value.reason == "TooManyRequests"
        await bystander.list(NAMESPACES)
        await target.list(NODES)  # another path of the same client
        raw = await target._http.get("/api/v1/namespaces")
        assert raw.headers["Retry-After"] == "3"
    assert [(e.client, e.status) for e in proxy.log if e.path == "/api/v1/namespaces"] == [
        ("target", 429),
        ("bystander", 200),
        ("target", 429),
    ]


async def test_stall_holds_a_request_until_lifted(cluster: ClusterState, proxy: FaultProxy) -> None:
    async with await admin_through(proxy, cluster, "stalled") as client:
        stall = proxy.inject(Fault(Match(path="/namespaces/default$"), "stall"))
        request = asyncio.create_task(client.get(NAMESPACES, "default"))
        await until(lambda: stall.used == 1, what="the request to be held")
        done, _ = await asyncio.wait([request], timeout=1.0)
        assert not done  # held, not answered
        stall.lift()
        async with asyncio.timeout(10):
            assert (await request)["metadata"]["name"] == "default"


async def test_delay_answers_late_and_drop_resets(cluster: ClusterState, proxy: FaultProxy) -> None:
    async with await admin_through(proxy, cluster, "slow") as client:
        with proxy.injected(Fault(Match(client="slow"), "delay", seconds=0.5, count=1)):
            started = time.monotonic()
            await client.get(NAMESPACES, "default")
            assert time.monotonic() - started >= 0.5
        with proxy.injected(Fault(Match(client="slow"), "drop")), pytest.raises(ApiUnavailableError):
            await client.get(NAMESPACES, "default")
        await client.get(NAMESPACES, "default")  # lifted: a new connection goes through
