"""Helpers for tests and scenarios on the local cluster, all on brupop's own Kubernetes client: nodes,
namespaces, service accounts, pod-bound tokens, clients that act as a service account (so RBAC is really
enforced), and following a resource's events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from brupop.kube.client import (
    NAMESPACES,
    NODES,
    PODS,
    SERVICE_ACCOUNTS,
    ApiError,
    KubeClient,
    Resource,
    unavailable,
)
from brupop.kube.config import KubeConfig
from brupop.kube.informer import ResourceExpiredError
from brupop.models.constants import (
    CRD_NAME,
    POLICY_CRD_NAME,
    UPDATER_INTERFACE_LABEL,
    UPDATER_INTERFACE_VERSION,
)
from integ.cluster import KWOK_NODE_LABEL, ClusterState, is_ready
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


async def nonempty(found: Awaitable[list[T]]) -> list[T] | None:
    """`found`, or None while it is empty: for `eventually`, which takes an empty list for an answer."""
    return (await found) or None


async def until(condition: Callable[[], bool], *, within: float = 30.0, what: str = "") -> None:
    """`eventually` for a condition this process sees without asking anyone (a monitor's state)."""

    async def check() -> bool:
        return condition()

    await eventually(check, within=within, what=what)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, object]) -> AsyncIterator[None]:
    """Run `work` as a task for the length of the block, then cancel it and wait for it to end."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def pod_ready(pod: Obj) -> bool:
    """Whether the pod's Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def admin(state: ClusterState) -> KubeClient:
    return KubeClient(KubeConfig.from_kubeconfig(Path(state.kubeconfig)))


def client_with_token(state: ClusterState, token: str) -> KubeClient:
    """A client that authenticates with `token` only (no admin certificate)."""
    base = KubeConfig.from_kubeconfig(Path(state.kubeconfig))
    return KubeClient(KubeConfig(server=base.server, ca_file=base.ca_file, token=token, _keep=base._keep))


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


async def token_request(kube: KubeClient, account: str, namespace: str, spec: Obj) -> str:
    """A TokenRequest's token, asked for as a kubelet asks for a pod's projected token: again and again
    while the kube-apiserver cannot answer (a restart), for up to 90 s."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    deadline = time.monotonic() + 90
    while True:
        try:
            answer = await kube.create(
                SERVICE_ACCOUNTS, body, namespace=namespace, name=account, subresource="token"
            )
            return str(answer["status"]["token"])
        except Exception as err:
            if not unavailable(err) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def pod_bound_token(
    kube: KubeClient, pod: Mapping[str, Any], *, audiences: list[str], seconds: int = 3600
) -> str:
    """A TokenRequest for the pod's service account, bound to the pod (as the kubelet would project it)."""
    meta = pod["metadata"]
    spec = {
        "audiences": audiences or None,
        "expirationSeconds": seconds,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
    }
    account = pod["spec"].get("serviceAccountName", "default")
    return await token_request(kube, account, meta["namespace"], spec)


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


def policy_crd() -> Obj:
    """The CRD chart's UpdatePolicy CRD."""
    return find(chart_objects(), "CustomResourceDefinition", POLICY_CRD_NAME)


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


def transient(err: BaseException) -> bool:
    """An error that a kube-apiserver or etcd restart causes and that passes once it is back: no answer
    (the client's ApiUnavailableError, or a transport error of a watch's stream), a 429 or 5xx, a watch
    whose version expired meanwhile."""
    return unavailable(err) or isinstance(err, ResourceExpiredError)


async def watch_events(
    kube: KubeClient, resource: Resource, namespace: str | None = None
) -> AsyncIterator[tuple[str, Obj]]:
    """Every object as ADDED, then every change from that version on, until cancelled. The watch is
    started again when the server ends it, and after a kube-apiserver or etcd restart the objects are
    listed again (as ADDED, and DELETED for the ones gone meanwhile); bookmarks are dropped and an ERROR
    event other than an expired version raises."""
    known: set[tuple[str | None, str]] = set()
    while True:
        try:
            items, version = await kube.list(resource, namespace=namespace)
        except Exception as err:
            if not transient(err):
                raise
            await asyncio.sleep(0.2)
            continue
        listed = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in items}
        for key in known - listed.keys():
            yield "DELETED", {"metadata": {"namespace": key[0], "name": key[1]}}
        known = set(listed)
        for obj in items:
            yield "ADDED", obj
        try:
            while True:
                async for kind, obj in kube.watch(resource, namespace=namespace, resource_version=version):
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise ResourceExpiredError(str(obj.get("message")))
                        raise RuntimeError(f"watch of {resource.plural} failed: {obj.get('message')}")
                    if kind == "BOOKMARK":  # a bookmark only moves the resourceVersion on
                        continue
                    key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
                    (known.discard if kind == "DELETED" else known.add)(key)
                    yield kind, obj
        except Exception as err:
            if not transient(err):
                raise
            await asyncio.sleep(0.2)
