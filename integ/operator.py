"""brupop's own parts on the local cluster, as a real installation has them: the RBAC objects of the
generated manifest, service-account identities, agent pods on kwok nodes with pod-bound tokens, and the
brupop apiserver running in this process under its own service account with a certificate of the
cluster's CA."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from brupop.agent.agent import Agent, AgentOptions
from brupop.agent.apiclient import ApiserverClient
from brupop.agent.host import HostClient
from brupop.apiserver.server import serve
from brupop.apiserver.settings import ApiserverSettings
from brupop.deploy import AGENT_SA, APISERVER_SA, manifest
from brupop.kube.client import PODS, SERVICE_ACCOUNTS, ApiError, KubeClient, Resource
from brupop.kube.config import KubeConfig
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE, TOKEN_AUDIENCE
from integ.cluster import ClusterState, free_port
from integ.kubetools import eventually, pod_bound_token
from integ.pki import CertificateAuthority

Obj = dict[str, Any]
_RBAC = "rbac.authorization.k8s.io"
KINDS: Mapping[str, Resource] = {
    "ServiceAccount": SERVICE_ACCOUNTS,
    "ClusterRole": Resource(_RBAC, "v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource(_RBAC, "v1", "clusterrolebindings", namespaced=False),
    "Role": Resource(_RBAC, "v1", "roles", namespaced=True),
    "RoleBinding": Resource(_RBAC, "v1", "rolebindings", namespaced=True),
    "DaemonSet": Resource("apps", "v1", "daemonsets", namespaced=True),
}


async def apply(kube: KubeClient, objects: Iterable[Mapping[str, Any]]) -> None:
    """Create or replace each object (only the kinds in KINDS)."""
    for obj in objects:
        resource = KINDS[obj["kind"]]
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        try:
            await kube.create(resource, dict(obj), namespace=namespace)
            continue
        except ApiError as err:
            if not err.conflict:
                raise
        for attempt in range(5):  # a controller may update the object between our read and our write
            current = await kube.get(resource, meta["name"], namespace=namespace)
            body = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
            try:
                await kube.replace(resource, meta["name"], body, namespace=namespace)
                break
            except ApiError as err:
                if not err.conflict or attempt == 4:
                    raise


RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


async def install_rbac(kube: KubeClient) -> None:
    await apply(kube, [o for o in manifest() if o["kind"] in RBAC_KINDS])


async def service_account_token(kube: KubeClient, name: str, *, audiences: list[str] | None = None) -> str:
    spec: Obj = {"expirationSeconds": 3600}
    if audiences:
        spec["audiences"] = audiences
    answer = await kube.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        namespace=NAMESPACE,
        name=name,
        subresource="token",
    )
    return str(answer["status"]["token"])


def config_as(cluster: ClusterState, token: str) -> KubeConfig:
    base = KubeConfig.from_kubeconfig(Path(cluster.kubeconfig))
    return KubeConfig(
        server=base.server, ca_file=base.ca_file, token=token, namespace=NAMESPACE, _keep=base._keep
    )


async def install_agents(kube: KubeClient) -> None:
    """The manifest's agent DaemonSet: the DaemonSet controller puts an agent pod on every labelled node."""
    await apply(kube, [o for o in manifest() if o["kind"] == "DaemonSet"])


async def agent_pod(kube: KubeClient, node: str) -> Obj:
    """The agent DaemonSet's pod on `node`, once it exists."""

    async def find() -> Obj | None:
        items, _ = await kube.list(
            PODS,
            namespace=NAMESPACE,
            label_selector=f"{COMPONENT_LABEL}={AGENT_COMPONENT}",
            field_selector=f"spec.nodeName={node}",
        )
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    return await eventually(find, what=f"the agent pod on {node}")


async def bare_pod(kube: KubeClient, node: str, *, labels: Mapping[str, str]) -> Obj:
    """A pod on `node` that no controller owns, running as the agent's service account."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"not-an-agent-{node}",
            "namespace": NAMESPACE,
            "labels": dict(labels),
        },
        "spec": {
            "serviceAccountName": AGENT_SA,
            "nodeName": node,
            "containers": [{"name": "brupop", "image": "brupop:0.1.0"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }
    return await kube.create(PODS, body, namespace=NAMESPACE)


async def agent_token(kube: KubeClient, pod: Obj) -> str:
    return await pod_bound_token(kube, pod, audiences=[TOKEN_AUDIENCE])


@dataclass
class RunningApiserver:
    url: str
    ca_file: Path
    ca_pem: bytes

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=60
        )


@contextlib.asynccontextmanager
async def brupop_apiserver(
    cluster: ClusterState, kube: KubeClient, *, drain_seconds: float = 60.0
) -> AsyncIterator[RunningApiserver]:
    """The brupop apiserver in this process, as its own service account with the manifest's RBAC."""
    await install_rbac(kube)
    directory = Path(cluster.directory)
    tls = directory / "brupop-apiserver-tls"
    tls.mkdir(exist_ok=True)
    CertificateAuthority.load(directory).issue(
        tls, "tls", common_name="brupop-apiserver", dns=("localhost",), ips=("127.0.0.1",), server=True
    )
    port = free_port()
    settings = ApiserverSettings(
        port=port, bind="127.0.0.1", tls_dir=tls, drain_seconds=drain_seconds, namespace=NAMESPACE
    )
    token = await service_account_token(kube, APISERVER_SA)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, config_as(cluster, token), stop=stop))
    running = RunningApiserver(
        url=f"https://127.0.0.1:{port}",
        ca_file=directory / "ca.crt",
        ca_pem=(directory / "ca.crt").read_bytes(),
    )
    async with running.client() as http:

        async def pong() -> bool:
            if task.done():
                task.result()
            try:
                return (await http.get("/ping")).text == "pong"
            except httpx.TransportError:
                return False

        await eventually(pong, what="the brupop apiserver to answer /ping")
    try:
        yield running
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def node_agent(
    cluster: ClusterState,
    kube: KubeClient,
    server: RunningApiserver,
    *,
    node: str,
    socket: Path,
    options: AgentOptions | None = None,
) -> AsyncIterator[Agent]:
    """An agent for `node`, running in this process with the identity of the DaemonSet's pod there: a
    pod-bound token for the Kubernetes API and one for the brupop apiserver (audience brupop-apiserver)."""
    pod = await agent_pod(kube, node)
    kube_token = await pod_bound_token(kube, pod, audiences=[])
    token_file = Path(cluster.directory) / f"agent-token-{node}"
    token_file.write_text(await agent_token(kube, pod))
    async with KubeClient(config_as(cluster, kube_token)) as agent_kube:
        api = ApiserverClient(
            base_url=server.url, node_name=node, token_file=token_file, ca_file=server.ca_file
        )
        host = HostClient(socket)
        agent = Agent(
            node_name=node, namespace=NAMESPACE, kube=agent_kube, host=host, api=api, options=options
        )
        task = asyncio.create_task(agent.run())
        try:
            yield agent
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await host.close()
            await api.close()
