"""Helpers for tests and scenarios on the local cluster, all on brupop's own Kubernetes client: nodes,
namespaces, service accounts, pod-bound tokens, clients that act as a service account (so RBAC is really
enforced), and following a resource's events."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from brupop.kube.client import NAMESPACES, NODES, PODS, SERVICE_ACCOUNTS, ApiError, KubeClient, Resource
from brupop.kube.config import KubeConfig
from brupop.models.constants import CRD_NAME, UPDATER_INTERFACE_LABEL, UPDATER_INTERFACE_VERSION
from integ.cluster import KWOK_NODE_LABEL, ClusterState
from integ.helm import chart_objects, find

T = TypeVar("T")
Obj = dict[str, Any]
BRUPOP_LABELS = {UPDATER_INTERFACE_LABEL: UPDATER_INTERFACE_VERSION}


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = 30.0, what: str = "") -> T:
    """Poll `check` until it returns something other than None/False, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(0.1)


def admin(state: ClusterState) -> KubeClient:
    return KubeClient(KubeConfig.from_kubeconfig(Path(state.kubeconfig)))


def client_with_token(state: ClusterState, token: str) -> KubeClient:
    """A client that authenticates with `token` only (no admin certificate)."""
    base = KubeConfig.from_kubeconfig(Path(state.kubeconfig))
    return KubeClient(KubeConfig(server=base.server, ca_file=base.ca_file, token=token, _keep=base._keep))


def is_ready(node: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or ()
    )


async def create_nodes(
    kube: KubeClient, names: Iterable[str], *, labels: Mapping[str, str] | None = None, wait: bool = True
) -> list[Obj]:
    """kwok-managed Nodes (Ready within a second or two), with `labels` added to kwok's."""
    created = []
    for name in names:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **(labels or {}),
                },
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
        }
        created.append(await kube.create(NODES, body))
    if wait:
        for node in created:
            name = node["metadata"]["name"]

            async def ready(name: str = name) -> bool:
                return is_ready(await kube.get(NODES, name))

            await eventually(ready, what=f"node {name} Ready")
    return created


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    try:
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as err:
        if not err.conflict:
            raise

    async def default_sa() -> bool:
        try:
            await kube.get(SERVICE_ACCOUNTS, "default", namespace=name)
            return True
        except ApiError as err:
            if err.not_found:
                return False
            raise

    await eventually(default_sa, what=f"the default service account of {name}")


async def create_service_account(kube: KubeClient, namespace: str, name: str) -> Obj:
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    try:
        return await kube.create(SERVICE_ACCOUNTS, body, namespace=namespace)
    except ApiError as err:
        if not err.conflict:
            raise
        return await kube.get(SERVICE_ACCOUNTS, name, namespace=namespace)


async def pod_bound_token(
    kube: KubeClient, pod: Mapping[str, Any], *, audiences: list[str], seconds: int = 3600
) -> str:
    """A TokenRequest for the pod's service account, bound to the pod (as the kubelet would project it)."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences or None,
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        },
    }
    answer = await kube.create(
        SERVICE_ACCOUNTS,
        body,
        namespace=meta["namespace"],
        name=pod["spec"].get("serviceAccountName", "default"),
        subresource="token",
    )
    return str(answer["status"]["token"])


async def pods_on(kube: KubeClient, namespace: str, selector: str) -> list[Obj]:
    items, _ = await kube.list(PODS, namespace=namespace, label_selector=selector)
    return items


def running(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)


def crd_for_local_use(*, webhook_url: str | None = None, ca_pem: bytes | None = None) -> Obj:
    """The CRD chart's CRD, its conversion webhook pointed at `webhook_url` (a local HTTPS server trusted
    through `ca_pem`), or conversion turned off when no URL is given (v2 objects need none)."""
    crd = find(chart_objects(), "CustomResourceDefinition", CRD_NAME)
    if webhook_url is None:
        crd["spec"]["conversion"] = {"strategy": "None"}
    else:
        assert ca_pem is not None
        crd["spec"]["conversion"]["webhook"]["clientConfig"] = {
            "url": webhook_url,
            "caBundle": base64.b64encode(ca_pem).decode(),
        }
    return crd


async def install_crd(kube: KubeClient, crd: Obj) -> None:
    name = crd["metadata"]["name"]
    try:
        existing = await kube.get(CRDS, name)
        crd = {
            **crd,
            "metadata": {**crd["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]},
        }
        await kube.replace(CRDS, name, crd)
    except ApiError as err:
        if not err.not_found:
            raise
        await kube.create(CRDS, crd)

    async def established() -> bool:
        conditions = ((await kube.get(CRDS, name)).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, what=f"CRD {name} to be established")


async def watch_events(
    kube: KubeClient, resource: Resource, namespace: str | None = None
) -> AsyncIterator[tuple[str, Obj]]:
    """Every object as ADDED, then every change from that version on, until cancelled (re-watching when
    the server ends a watch); bookmarks are dropped and an ERROR event raises."""
    items, version = await kube.list(resource, namespace=namespace)
    for obj in items:
        yield "ADDED", obj
    while True:
        async for kind, obj in kube.watch(resource, namespace=namespace, resource_version=version):
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "ERROR":
                raise RuntimeError(f"watch of {resource.plural} failed: {obj.get('message')}")
            if kind != "BOOKMARK":  # a bookmark only moves the resourceVersion on
                yield kind, obj
