"""brupop installed as users install it, on the real API server. With Helm: both charts into a namespace of
their own, a rollout across simulated nodes by the programs run with the environment the chart gives their
pods, a `helm upgrade` of MAX_CONCURRENT_UPDATE that the restarted controller follows, and a `helm
uninstall` that leaves only what README documents. With kubectl: every object of the rendered one-file
manifest passes a server-side dry run (cert-manager's CRDs installed first, from its Go module) and
`kubectl delete -f` removes what `kubectl apply -f` created. Each component's identity may do exactly what
the program calls, not the dangerous rest."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from brupop.controller.main import LEASE_NAME
from brupop.deploy import AGENT_SA, APISERVER_SA, CONTROLLER_SA
from brupop.kube.client import DEPLOYMENTS, NAMESPACES, NODES, PODS, SHADOWS, ApiError, KubeClient, Resource
from brupop.models.constants import (
    AGENT_COMPONENT,
    APISERVER_COMPONENT,
    COMPONENT_LABEL,
    CONTROLLER_COMPONENT,
    CRD_NAME,
    NAMESPACE,
    TOKEN_AUDIENCE,
)
from brupop.models.shadow import BottlerocketShadow, ShadowState
from integ import certmanager, promoperator
from integ.build import build
from integ.cluster import ClusterState, free_port
from integ.helm import (
    CRD_CHART,
    CRD_RELEASE,
    MANIFEST,
    OPERATOR_CHART,
    OPERATOR_RELEASE,
    chart_objects,
    install,
    render,
    uninstall,
)
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.kubetools import (
    BRUPOP_LABELS,
    CRDS,
    create_nodes,
    ensure_namespace,
    eventually,
    install_crd,
    pod_bound_token,
    running,
    watch_events,
)
from integ.operator import RunningApiserver, apiserver_at, install_rbac, token_kubeconfig
from integ.pki import CertificateAuthority
from integ.podenv import container_env, pod_program

Obj = dict[str, Any]
REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews", namespaced=False)
BRS = "brupop.bottlerocket.aws"

WORKLOAD_KINDS = ("replicasets", "deployments", "statefulsets", "daemonsets")
# (group, resource, subresource, verb, namespaced) each program calls.
Call = tuple[str, str, str, str, bool]
CALLS: dict[str, list[Call]] = {
    AGENT_SA: [
        (BRS, "bottlerocketshadows", "", "list", True),
        (BRS, "bottlerocketshadows", "", "watch", True),
        ("", "nodes", "", "list", False),
        ("", "nodes", "", "watch", False),
        ("", "events", "", "create", True),  # about its shadow
        ("", "events", "", "create", False),  # about its Node, in the default namespace
    ],
    APISERVER_SA: [
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        ("", "pods", "", "list", True),
        ("", "pods", "", "watch", True),
        ("", "pods", "", "list", False),  # the drain lists a node's pods in every namespace
        ("", "pods", "eviction", "create", False),
        ("policy", "poddisruptionbudgets", "", "get", True),
        ("", "nodes", "", "get", False),
        ("", "nodes", "", "patch", False),
        (BRS, "bottlerocketshadows", "", "create", True),
        (BRS, "bottlerocketshadows", "", "get", True),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("", "events", "", "create", True),  # about shadows
        ("", "events", "", "create", False),  # about Nodes, in the default namespace
    ],
    CONTROLLER_SA: [
        (BRS, "bottlerocketshadows", "", "list", True),
        (BRS, "bottlerocketshadows", "", "watch", True),
        (BRS, "bottlerocketshadows", "", "patch", True),
        (BRS, "bottlerocketshadows", "", "delete", True),
        ("", "nodes", "", "list", False),
        ("", "nodes", "", "watch", False),
        ("", "nodes", "", "patch", False),  # the in-cycle label and the policies' duringUpdate marks
        (BRS, "updatepolicies", "", "list", False),
        (BRS, "updatepolicies", "", "watch", False),
        (BRS, "updatepolicies", "status", "patch", False),
        ("", "events", "", "create", True),  # about shadows
        ("", "events", "", "create", False),  # about Nodes and policies, in `default`
        ("coordination.k8s.io", "leases", "", "create", True),
        # The health gates and verification, while a policy sets them.
        ("", "pods", "", "list", False),
        ("", "pods", "", "watch", False),
        *(("apps", kind, "", verb, False) for kind in WORKLOAD_KINDS for verb in ("list", "watch")),
    ],
}
DANGEROUS: dict[str, list[Call]] = {
    AGENT_SA: [
        ("", "nodes", "", "patch", False),
        ("", "pods", "eviction", "create", False),
        (BRS, "bottlerocketshadows", "", "patch", True),
        (BRS, "bottlerocketshadows", "", "create", True),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        ("", "secrets", "", "get", True),
    ],
    APISERVER_SA: [
        ("", "nodes", "", "delete", False),
        ("", "pods", "", "delete", False),
        (BRS, "bottlerocketshadows", "", "delete", True),
        ("", "secrets", "", "list", True),
    ],
    CONTROLLER_SA: [
        ("", "pods", "eviction", "create", False),
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("coordination.k8s.io", "leases", "", "create", False),  # only in its own namespace
        ("", "secrets", "", "get", True),
        (BRS, "updatepolicies", "", "patch", False),  # people write policies; the controller only status
        (BRS, "updatepolicies", "", "delete", False),
    ],
}


async def allowed(kube: KubeClient, account: str, call: Call, *, namespace: str = NAMESPACE) -> bool:
    group, resource, subresource, verb, namespaced = call
    attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb}
    if namespaced:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    return bool((await kube.create(REVIEWS, review))["status"].get("allowed"))


async def check_rbac_matrix(kube: KubeClient, *, namespace: str = NAMESPACE) -> None:
    """Each program's service account may make every call the program makes, and none of the dangerous."""
    for account, calls in CALLS.items():
        for call in calls:
            assert await allowed(kube, account, call, namespace=namespace), (account, call)
    for account, calls in DANGEROUS.items():
        for call in calls:
            assert not await allowed(kube, account, call, namespace=namespace), (account, call)


@pytest.mark.integration
async def test_rbac_matrix(kube: KubeClient) -> None:
    await ensure_namespace(kube, NAMESPACE)
    await install_rbac(kube)  # the chart's objects, rendered with their defaults
    await check_rbac_matrix(kube)


def kubectl(cluster: ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build() / "kubectl"), "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True
    )


@pytest.mark.integration
async def test_the_manifest_applies_and_deletes_cleanly(cluster: ClusterState, kube: KubeClient) -> None:
    assert len(await certmanager.install(kube)) == 6
    objects = [o for o in yaml.safe_load_all(MANIFEST.read_text()) if o]
    # A fresh install: nothing of brupop's in the cluster (earlier tests created some of it through the API).
    cleared = kubectl(
        cluster, "delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait=true", "--timeout=120s"
    )
    assert cleared.returncode == 0, cleared.stderr
    # Namespaced objects can only be dry-run in a namespace that exists: create it, then dry-run everything.
    await ensure_namespace(kube, NAMESPACE)
    dry = kubectl(cluster, "apply", "--dry-run=server", "-f", str(MANIFEST))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(server dry run)") == len(objects)

    applied = kubectl(cluster, "apply", "-f", str(MANIFEST))
    assert applied.returncode == 0, applied.stderr
    deleted = kubectl(cluster, "delete", "-f", str(MANIFEST), "--wait=true", "--timeout=120s")
    assert deleted.returncode == 0, deleted.stderr
    left = kubectl(cluster, "get", "-f", str(MANIFEST), "--ignore-not-found", "-o", "name")
    assert left.stdout.strip() == "", left.stdout


@pytest.mark.integration
async def test_the_optional_monitoring_objects_pass_a_server_dry_run(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    for crd in promoperator.crds():
        await install_crd(kube, crd)
    await ensure_namespace(kube, NAMESPACE)
    enabled = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    objects = render(OPERATOR_CHART, release=OPERATOR_RELEASE, values=[{"prometheus": enabled}])
    monitoring = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(o["kind"] for o in monitoring) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump_all(monitoring))
    dry = kubectl(cluster, "apply", "--dry-run=server", "-f", str(path))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(server dry run)") == 3


# The helm install below: its own namespace, brupop's workloads on a system node (so drains never evict the
# pods whose identities the programs use), four opted-in nodes with simulated hosts.
OPS = "platform-updates"
SYSTEM_NODE = "helm-system"
POOL = {"brupop.test/pool": "system"}
HOSTS = [f"helm-{i}" for i in range(4)]
OLD, NEW, NEWER = "1.0.0", "1.1.0", "1.2.0"
VALUES: dict[str, Any] = {
    "controller": {"maxConcurrentUpdate": 1, "nodeSelector": POOL},
    "apiserver": {"nodeSelector": POOL, "drainTimeoutSeconds": 60},
    "agent": {"updateCheckIntervalSeconds": 1},
}
# What `helm uninstall` of both releases leaves in the namespace (README: "Uninstall"): the shadows (each
# node's update record), the controller's Lease, Events, and what Kubernetes puts in every namespace.
LEFT_BEHIND: dict[str, set[str] | None] = {
    "bottlerocketshadow.brupop.bottlerocket.aws": None,  # any name: one per node
    "lease.coordination.k8s.io": {LEASE_NAME},
    "event": None,
    "event.events.k8s.io": None,
    "serviceaccount": {"default"},
    "configmap": {"kube-root-ca.crt"},
}


async def live_pods(kube: KubeClient, component: str) -> list[Obj]:
    items, _ = await kube.list(PODS, namespace=OPS, label_selector=f"{COMPONENT_LABEL}={component}")
    return [dict(p) for p in running(items)]


async def one_pod(kube: KubeClient, component: str, *, node: str | None = None, **env: str) -> Obj:
    """A running pod of `component` (on `node`, with these environment values), once there is one."""

    async def find_pod() -> Obj | None:
        for pod in await live_pods(kube, component):
            values = container_env(pod)
            if (node is None or pod["spec"]["nodeName"] == node) and all(
                values[k] == v for k, v in env.items()
            ):
                return pod
        return None

    return await eventually(find_pod, within=120, what=f"a running {component} pod {node or ''} {env}")


class Concurrency:
    """The most nodes seen in an update cycle at once (spec or status not Idle), from a watch of the
    shadows."""

    def __init__(self) -> None:
        self.peak = 0
        self.shadows: dict[str, BottlerocketShadow] = {}

    async def follow(self, kube: KubeClient) -> None:
        async for kind, obj in watch_events(kube, SHADOWS, OPS):
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.shadows.pop(name, None)
                continue
            self.shadows[name] = BottlerocketShadow.from_wire(obj)
            busy = sum(
                1
                for s in self.shadows.values()
                if s.spec.state is not ShadowState.IDLE
                or (s.status is not None and s.status.current_state is not ShadowState.IDLE)
            )
            self.peak = max(self.peak, busy)

    def all_on(self, version: str) -> bool:
        done = [
            s
            for s in self.shadows.values()
            if s.spec.state is ShadowState.IDLE
            and s.status is not None
            and s.status.current_state is ShadowState.IDLE
            and s.status.current_version == version
        ]
        return len(done) == len(HOSTS)


async def identity(cluster: ClusterState, kube: KubeClient, pod: Obj, work: Path) -> str:
    """A kubeconfig file acting as `pod` (a token bound to it, as the kubelet projects one)."""
    token = await pod_bound_token(kube, pod, audiences=[])
    return str(token_kubeconfig(cluster, work / f"{pod['metadata']['name']}.kubeconfig", token))


@contextlib.asynccontextmanager
async def apiserver(cluster: ClusterState, kube: KubeClient, work: Path) -> AsyncIterator[RunningApiserver]:
    pod = await one_pod(kube, APISERVER_COMPONENT)
    tls = work / "apiserver-tls"
    tls.mkdir()
    CertificateAuthority.load(Path(cluster.directory)).issue(
        tls, "tls", common_name="brupop-apiserver", ips=("127.0.0.1",), server=True
    )
    port = free_port()
    overrides = {
        "KUBECONFIG": await identity(cluster, kube, pod, work),
        "APISERVER_INTERNAL_PORT": str(port),
        "APISERVER_BIND_ADDRESS": "127.0.0.1",
        "APISERVER_TLS_DIR": str(tls),
    }
    async with pod_program(pod, overrides=overrides, log=work / "apiserver.log") as process:
        server = apiserver_at(cluster, port)
        async with server.client() as http:

            async def pong() -> bool:
                assert process.returncode is None, (work / "apiserver.log").read_text()
                try:
                    return (await http.get("/ping")).text == "pong"
                except httpx.TransportError:
                    return False

            await eventually(pong, what="the apiserver to answer /ping")
        yield server


@contextlib.asynccontextmanager
async def agents(
    cluster: ClusterState, kube: KubeClient, work: Path, server: RunningApiserver, hosts: Fleet
) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for node in HOSTS:
            pod = await one_pod(kube, AGENT_COMPONENT, node=node)
            token_file = work / f"agent-token-{node}"
            token_file.write_text(await pod_bound_token(kube, pod, audiences=[TOKEN_AUDIENCE]))
            overrides = {
                "KUBECONFIG": await identity(cluster, kube, pod, work),
                "BRUPOP_APISERVER_URL": server.url,
                "BRUPOP_CA_FILE": str(server.ca_file),
                "BRUPOP_TOKEN_FILE": str(token_file),
                "BRUPOP_HOST_SOCKET": str(hosts.socket(node)),
                "BRUPOP_BOOT_ID_FILE": str(hosts.boot_id_file(node)),
                "AGENT_INTERNAL_PORT": str(free_port()),  # the chart's 8080, once per node here
            }
            await stack.enter_async_context(
                pod_program(pod, overrides=overrides, log=work / f"agent-{node}.log")
            )
        yield


@contextlib.asynccontextmanager
async def controller(cluster: ClusterState, kube: KubeClient, work: Path, limit: str) -> AsyncIterator[None]:
    """The controller of a pod whose environment (from the Deployment) says MAX_CONCURRENT_UPDATE=`limit`."""
    pod = await one_pod(kube, CONTROLLER_COMPONENT, MAX_CONCURRENT_UPDATE=limit)
    overrides = {
        "KUBECONFIG": await identity(cluster, kube, pod, work),
        "CONTROLLER_INTERNAL_PORT": str(free_port()),
        "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
    }
    async with pod_program(pod, overrides=overrides, log=work / f"controller-{limit}.log"):
        yield


def leftovers(cluster: ClusterState) -> list[str]:
    """Everything in the namespace that the uninstall did not take away and nobody documented."""
    kinds = kubectl(cluster, "api-resources", "--verbs=list", "--namespaced", "-o", "name")
    assert kinds.returncode == 0, kinds.stderr
    listed = kubectl(cluster, "get", ",".join(kinds.stdout.split()), "-n", OPS, "-o", "name")
    assert listed.returncode == 0, listed.stderr
    unexpected = []
    for line in listed.stdout.split():
        kind, name = line.split("/", 1)
        names = LEFT_BEHIND.get(kind, set())
        if names is not None and name not in names:
            unexpected.append(line)
    return unexpected


async def fresh_cluster(cluster: ClusterState, kube: KubeClient) -> None:
    """Nothing of brupop's left from earlier tests (they create its objects through the API), as on a
    cluster that never had it; cert-manager's CRDs there for the chart's Issuers and Certificates."""
    await certmanager.install(kube)
    cleared = kubectl(
        cluster, "delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait=true", "--timeout=120s"
    )
    assert cleared.returncode == 0, cleared.stderr


async def helm_install(cluster: ClusterState, *values: dict[str, Any], upgrade: bool = False) -> None:
    await asyncio.to_thread(
        install,
        cluster.kubeconfig,
        OPERATOR_CHART,
        release=OPERATOR_RELEASE,
        namespace=OPS,
        values=[VALUES, *values],
        upgrade=upgrade,
    )


@pytest.mark.integration
async def test_helm_install_rollout_upgrade_and_uninstall_in_another_namespace(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await fresh_cluster(cluster, kube)
    await create_nodes(kube, [SYSTEM_NODE], labels=POOL)
    await create_nodes(kube, HOSTS, labels=BRUPOP_LABELS)
    hosts = Fleet(tmp_path / "hosts", time_scale=0.05, timings=Timings(prepare=20, reboot=20))
    hosts.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    try:
        await asyncio.to_thread(install, cluster.kubeconfig, CRD_CHART, release=CRD_RELEASE, namespace=OPS)
        await helm_install(cluster)
        await check_rbac_matrix(kube, namespace=OPS)
        for name in HOSTS:
            await hosts.add(name, version=OLD)
        seen = Concurrency()
        follower = asyncio.create_task(seen.follow(kube))
        async with (
            apiserver(cluster, kube, tmp_path) as server,
            agents(cluster, kube, tmp_path, server, hosts),
        ):
            async with controller(cluster, kube, tmp_path, "1"):
                await eventually(
                    lambda: _ready(seen.all_on(NEW), follower), within=300, what="1.1.0 everywhere"
                )
            assert seen.peak == 1

            # The controller reads its environment at start: the upgrade rolls its pods, and the controller of
            # a new pod follows the new limit.
            await helm_install(cluster, {"controller": {"maxConcurrentUpdate": 3}}, upgrade=True)
            deployment = await kube.get(DEPLOYMENTS, "brupop-controller-deployment", namespace=OPS)
            (template,) = deployment["spec"]["template"]["spec"]["containers"]
            assert {"name": "MAX_CONCURRENT_UPDATE", "value": "3"} in template["env"]
            seen.peak = 0
            hosts.repository.offer(NEWER, variant="aws-k8s-1.29", arch="x86_64")
            async with controller(cluster, kube, tmp_path, "3"):
                await eventually(
                    lambda: _ready(seen.all_on(NEWER), follower), within=300, what="1.2.0 everywhere"
                )
            assert 1 < seen.peak <= 3
        follower.cancel()
        await hosts.stop()

        await asyncio.to_thread(uninstall, cluster.kubeconfig, release=OPERATOR_RELEASE, namespace=OPS)
        await asyncio.to_thread(uninstall, cluster.kubeconfig, release=CRD_RELEASE, namespace=OPS)

        async def nothing_else_left() -> bool:
            return not await asyncio.to_thread(leftovers, cluster)

        await eventually(nothing_else_left, within=120, what=f"only {sorted(LEFT_BEHIND)} left in {OPS}")
        cluster_scoped = [
            f"{o['kind'].lower()}/{o['metadata']['name']}"
            for o in chart_objects(OPS)
            if "namespace" not in o["metadata"] and o["kind"] != "CustomResourceDefinition"
        ]
        gone = kubectl(cluster, "get", *cluster_scoped, "--ignore-not-found", "-o", "name")
        assert (gone.returncode, gone.stdout) == (0, ""), gone.stderr
        kept = await kube.get(CRDS, CRD_NAME)  # the CRD chart's CRD stays, with every node's record
        assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        items, _ = await kube.list(SHADOWS, namespace=OPS)
        assert sorted(o["metadata"]["name"] for o in items) == sorted(f"brs-{name}" for name in HOSTS)
    finally:
        await hosts.stop()
        for name in [SYSTEM_NODE, *HOSTS]:
            with contextlib.suppress(ApiError):
                await kube.delete(NODES, name)
        with contextlib.suppress(ApiError):
            await kube.delete(NAMESPACES, OPS)


async def _ready(done: bool, follower: asyncio.Task[None]) -> bool:
    if follower.done():
        follower.result()  # the watch failed: say why
    return done
