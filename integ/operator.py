"""brupop's own parts on the local cluster, as a real installation has them: the RBAC objects of the
Helm charts, service-account identities, agent pods on kwok nodes with pod-bound tokens, and the
brupop apiserver under its own service account with a certificate of the cluster's CA, either in this
process (quick, for focused tests) or as a process of its own (which a scenario can kill outright)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from brupop.agent.agent import Agent, AgentOptions
from brupop.agent.apiclient import ApiserverClient
from brupop.agent.host import HostClient
from brupop.apiserver.server import serve
from brupop.apiserver.settings import ApiserverSettings
from brupop.deploy import AGENT_SA, APISERVER_SA
from brupop.kube.client import PODS, SERVICE_ACCOUNTS, ApiError, KubeClient, Resource
from brupop.kube.config import KubeConfig
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE, TOKEN_AUDIENCE
from integ.cluster import ClusterState, free_port
from integ.helm import chart_objects
from integ.kubetools import eventually, pod_bound_token, token_request
from integ.pki import CertificateAuthority
from integ.processes import BrupopProcess, RunAs, owned_by

Obj = dict[str, Any]
PROGRAM_LOGGING = {
    "LOGGING_FORMATTER": "json",
    "LOGGING_ANSI_ENABLED": "false",
    "TRACING_FILTER_DIRECTIVE": "info",
}
"""The logging environment every brupop pod of the manifest has (JSON lines the harness can read)."""
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
    await apply(kube, [o for o in chart_objects() if o["kind"] in RBAC_KINDS])


async def service_account_token(kube: KubeClient, name: str, *, audiences: list[str] | None = None) -> str:
    spec: Obj = {"expirationSeconds": 3600}
    if audiences:
        spec["audiences"] = audiences
    return await token_request(kube, name, NAMESPACE, spec)


def config_as(cluster: ClusterState, token: str) -> KubeConfig:
    base = KubeConfig.from_kubeconfig(Path(cluster.kubeconfig))
    return KubeConfig(
        server=base.server, ca_file=base.ca_file, token=token, namespace=NAMESPACE, _keep=base._keep
    )


async def install_agents(kube: KubeClient) -> None:
    """The chart's agent DaemonSet: the DaemonSet controller puts an agent pod on every labelled node."""
    await apply(kube, [o for o in chart_objects() if o["kind"] == "DaemonSet"])


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


def _serving_certificate(cluster: ClusterState) -> Path:
    """A directory with tls.crt and tls.key for 127.0.0.1, issued by the cluster's CA (once per cluster:
    replicas share it, as they share the Secret)."""
    directory = Path(cluster.directory)
    tls = directory / "brupop-apiserver-tls"
    if not (tls / "tls.key").exists():
        tls.mkdir(exist_ok=True)
        CertificateAuthority.load(directory).issue(
            tls, "tls", common_name="brupop-apiserver", dns=("localhost",), ips=("127.0.0.1",), server=True
        )
    return tls


async def _answering(running: RunningApiserver, alive: Callable[[], None]) -> None:
    """Wait until `running` answers /ping; `alive` raises if the server died meanwhile."""
    async with running.client() as http:

        async def pong() -> bool:
            alive()
            try:
                return (await http.get("/ping")).text == "pong"
            except httpx.TransportError:
                return False

        await eventually(pong, what=f"the brupop apiserver at {running.url} to answer /ping")


def apiserver_at(cluster: ClusterState, port: int) -> RunningApiserver:
    ca_file = Path(cluster.directory) / "ca.crt"
    return RunningApiserver(url=f"https://127.0.0.1:{port}", ca_file=ca_file, ca_pem=ca_file.read_bytes())


@contextlib.asynccontextmanager
async def brupop_apiserver(
    cluster: ClusterState, kube: KubeClient, *, drain_seconds: float = 60.0
) -> AsyncIterator[RunningApiserver]:
    """The brupop apiserver in this process, as its own service account with the manifest's RBAC."""
    await install_rbac(kube)
    port = free_port()
    settings = ApiserverSettings(
        port=port,
        bind="127.0.0.1",
        tls_dir=_serving_certificate(cluster),
        drain_seconds=drain_seconds,
        namespace=NAMESPACE,
    )
    token = await service_account_token(kube, APISERVER_SA)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, config_as(cluster, token), stop=stop))
    running = apiserver_at(cluster, port)

    def alive() -> None:
        if task.done():
            task.result()

    await _answering(running, alive)
    try:
        yield running
    finally:
        stop.set()
        await task


def token_kubeconfig(
    cluster: ClusterState,
    path: Path,
    token: str | None = None,
    *,
    token_file: Path | None = None,
    server: str | None = None,
) -> Path:
    """Write, at `path` (mode 0600), a kubeconfig for a brupop program in its own process: the local
    kube-apiserver (or `server`, e.g. a fault proxy's listener), trusted through the cluster's CA, reached
    with a bearer token alone (`token`, or `token_file`, read on every request as a projected token is), in
    brupop's namespace."""
    base = KubeConfig.from_kubeconfig(Path(cluster.kubeconfig))
    user: Obj = {"tokenFile": str(token_file)} if token_file is not None else {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "brupop",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server or base.server, "certificate-authority": str(base.ca_file)},
            }
        ],
        "users": [{"name": "brupop", "user": user}],
        "contexts": [
            {"name": "brupop", "context": {"cluster": "local", "user": "brupop", "namespace": NAMESPACE}}
        ],
    }
    path.write_text(json.dumps(config))  # read without importing yaml, as in-cluster config is
    path.chmod(0o600)
    return path


def service_account_volume(cluster: ClusterState, directory: Path, token: str, run_as: RunAs | None) -> Path:
    """The pod's service account volume as the kubelet projects it (`token`, `ca.crt`, `namespace`), at
    `directory`; the program sees it at the in-cluster path (`integ.unprivileged`)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    (directory / "token").write_text(token)
    owned_by(directory / "token", run_as)
    shutil.copyfile(Path(cluster.directory) / "ca.crt", directory / "ca.crt")
    owned_by(directory / "ca.crt", run_as, mode=0o644)
    (directory / "namespace").write_text(NAMESPACE)
    owned_by(directory / "namespace", run_as, mode=0o644)
    return directory


def in_cluster_env(server: str) -> dict[str, str]:
    """The variables through which the kubelet tells a pod where the Kubernetes API is (the `kubernetes`
    Service), here `server`: a fault proxy's listener."""
    address = httpx.URL(server)
    return {"KUBERNETES_SERVICE_HOST": address.host, "KUBERNETES_SERVICE_PORT": str(address.port)}


async def stop_process(process: asyncio.subprocess.Process, *, grace: float) -> None:
    """SIGTERM, as the kubelet sends, then SIGKILL after `grace` seconds; nothing if it already exited."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@dataclass
class ApiserverProcess:
    """A `brupop apiserver` replica in a process of its own, which a test can kill outright."""

    running: RunningApiserver
    port: int
    process: BrupopProcess

    @property
    def name(self) -> str:
        return self.process.pod

    def logged(self, event: str, **fields: str) -> bool:
        return self.process.logged(event, **fields)


def serving_secret(cluster: ClusterState, pod_dir: Path, run_as: RunAs | None) -> Path:
    """The apiserver's TLS Secret as mounted into one pod: a copy of the shared certificate, owned by the
    pod's user."""
    tls = pod_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        shutil.copyfile(_serving_certificate(cluster) / name, tls / name)
        owned_by(tls / name, run_as)
    if run_as is not None:
        os.chown(tls, run_as.uid, run_as.gid)
    return tls


async def apiserver_pod(
    cluster: ClusterState,
    kube: KubeClient,
    *,
    name: str,
    drain_seconds: float = 60.0,
    python: str = sys.executable,
    server: str | None = None,
    run_as: RunAs | None = None,
    pod_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    in_cluster: bool = False,
) -> ApiserverProcess:
    """A `brupop apiserver` replica configured by its environment, as the Deployment's pods are, with a
    kubeconfig holding the apiserver service account's token (pointed at `server` when given); its files
    and log are in `pod_dir` (by default <cluster dir>/pods/<name>; one `run_as` may enter when given),
    and `env` added to its environment. Started, not yet answering.

    `in_cluster` (needs `server` and `run_as`) runs it as its container does instead: the token at the
    in-cluster path, the API's address in `KUBERNETES_SERVICE_HOST`/`_PORT`, a read-only root."""
    await install_rbac(kube)
    pod_dir = pod_dir or Path(cluster.directory) / "pods" / name
    pod_dir.mkdir(parents=True, exist_ok=True)
    token = await service_account_token(kube, APISERVER_SA)
    volume: Path | None = None
    if in_cluster:
        if server is None or run_as is None:
            raise ValueError(f"{name}: running in-cluster needs the API's address and a user")
        volume = service_account_volume(cluster, pod_dir / "serviceaccount", token, run_as)
        api = in_cluster_env(server)
    else:
        kubeconfig = owned_by(
            token_kubeconfig(cluster, pod_dir / "kubeconfig", token=token, server=server), run_as
        )
        api = {"KUBECONFIG": str(kubeconfig)}
    port = free_port()
    env = {
        **api,
        "POD_NAME": name,
        "APISERVER_INTERNAL_PORT": str(port),
        "APISERVER_BIND_ADDRESS": "127.0.0.1",
        "APISERVER_TLS_DIR": str(serving_secret(cluster, pod_dir, run_as)),
        "DRAIN_TIMEOUT": str(drain_seconds),
        "BRUPOP_NAMESPACE": NAMESPACE,
        **PROGRAM_LOGGING,
        **(env or {}),
    }
    process = BrupopProcess(
        pod=name,
        program="apiserver",
        env=env,
        directory=pod_dir,
        run_as=run_as,
        python=python,
        service_account=volume,
        read_only_root=in_cluster,
    )
    await process.start()
    return ApiserverProcess(running=apiserver_at(cluster, port), port=port, process=process)


async def answering(replica: ApiserverProcess) -> None:
    """Wait until the replica answers /ping; fails at once if it exits meanwhile."""

    def alive() -> None:
        if not replica.process.running:
            raise RuntimeError(f"{replica.name} exited; see {replica.process.log}:\n{replica.process.tail()}")

    await _answering(replica.running, alive)


@contextlib.asynccontextmanager
async def apiserver_process(
    cluster: ClusterState,
    kube: KubeClient,
    *,
    name: str,
    drain_seconds: float = 60.0,
    python: str = sys.executable,
) -> AsyncIterator[ApiserverProcess]:
    """One apiserver replica (`apiserver_pod`), answering, stopped (SIGTERM, then SIGKILL) at the end."""
    replica = await apiserver_pod(cluster, kube, name=name, drain_seconds=drain_seconds, python=python)
    try:
        await answering(replica)
        yield replica
    finally:
        await replica.process.terminate(grace=35)


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
        # The simulated host's boot ID (the fleet writes it next to the socket), as the pod reads its host's
        # kernel boot ID: the machine's own never changes on a simulated reboot.
        host = HostClient(socket, boot_id_file=socket.parent / "boot_id")
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
