"""The apiserver's two protocols implemented on the Kubernetes API.

`ClusterGate` authenticates with TokenReview (results cached for a few seconds per token, so an agent's
burst of calls costs one review) and looks the calling pod up in an informer over the agent pods of the
namespace; the Node's UID comes from a GET (cheap, and always current).

`ClusterNodeOperations` creates shadows idempotently, patches their status, cordons (recording who did,
see `brupop.policy.drain`), drains with a time limit, uncordons, and sets the load-balancer label. Node
patches carry the resourceVersion they were computed from and are retried on a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from brupop.apiserver.app import OperationError
from brupop.apiserver.auth import (
    NODE_NAME_EXTRA,
    NODE_UID_EXTRA,
    AgentPod,
    NodeIdentity,
    ReviewedToken,
    authorize,
    pod_name_of,
    require_headers,
)
from brupop.kube.client import NODES, PODS, SHADOWS, TOKEN_REVIEWS, ApiError, KubeClient
from brupop.kube.drain import DrainTimeoutError, EvictionBlockedError, PodGoneError, drain
from brupop.kube.informer import Informer
from brupop.models.constants import API_VERSION_V2, KIND, TOKEN_AUDIENCE, shadow_name
from brupop.models.shadow import BottlerocketShadow, ShadowStatus
from brupop.policy.drain import cordon_patch, exclude_from_lb_patch, uncordon_patch

log = structlog.get_logger("brupop.apiserver")
Obj = dict[str, Any]


def agent_pod(obj: Mapping[str, Any]) -> AgentPod:
    meta = obj.get("metadata") or {}
    return AgentPod(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        node_name=(obj.get("spec") or {}).get("nodeName"),
    )


def trim_pod(obj: Obj) -> Obj:
    """Keep only what authorisation needs of an agent pod."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
        "spec": {"nodeName": (obj.get("spec") or {}).get("nodeName")},
    }


class ClusterGate:
    def __init__(
        self,
        *,
        kube: KubeClient,
        agents: Informer,
        namespace: str,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._agents = agents
        self._namespace = namespace
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._reviews: dict[str, tuple[float, ReviewedToken]] = {}

    async def _review(self, token: str) -> ReviewedToken:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._reviews.get(key)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [TOKEN_AUDIENCE]},
        }
        try:
            answer = await self._kube.create(TOKEN_REVIEWS, body)
        except ApiError as err:
            raise OperationError(503, f"TokenReview failed: {err}") from None
        review = ReviewedToken.from_status(answer.get("status") or {})
        if len(self._reviews) > 4096:
            self._reviews = {k: v for k, v in self._reviews.items() if v[0] > now}
        if review.authenticated:
            self._reviews[key] = (now + self._cache_seconds, review)
        return review

    async def identify(self, headers: Mapping[str, str]) -> NodeIdentity:
        node_name, node_uid, token = require_headers(headers)
        if not self._agents.ready.is_set():
            try:
                await asyncio.wait_for(self._agents.ready.wait(), timeout=10)
            except TimeoutError:
                raise OperationError(503, "the agent pod cache is not ready yet; try again") from None
        review = await self._review(token)
        pod_name = pod_name_of(review)
        cached = self._agents.get(f"{self._namespace}/{pod_name}")
        actual_uid = await self._node_uid(review, node_name)
        return authorize(
            review,
            pod=agent_pod(cached) if cached else None,
            node_name=node_name,
            node_uid=node_uid,
            actual_node_uid=actual_uid,
        )

    async def _node_uid(self, review: ReviewedToken, node_name: str) -> str | None:
        """The named Node's UID: from the token's signed extras when it is bound to that node (Kubernetes
        1.30+, no API call), else from the API server."""
        if review.single(NODE_NAME_EXTRA) == node_name and review.single(NODE_UID_EXTRA):
            return review.single(NODE_UID_EXTRA)
        try:
            node = await self._kube.get(NODES, node_name)
        except ApiError as err:
            if not err.not_found:
                raise OperationError(503, f"cannot read node {node_name}: {err}") from None
            return None
        return str(node["metadata"]["uid"])


class _PodApi:
    """`brupop.kube.drain.PodApi` on the Kubernetes API."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        return await self._kube.list(PODS, field_selector=f"spec.nodeName={node}")

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        return self._kube.watch(
            PODS, resource_version=resource_version, field_selector=f"spec.nodeName={node}"
        )

    async def evict(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}} if uid else {},
        }
        try:
            await self._kube.create(PODS, body, namespace=namespace, name=name, subresource="eviction")
        except ApiError as err:
            if err.not_found or (err.conflict and "Precondition" in err.message):
                raise PodGoneError(f"{namespace}/{name}") from None
            if err.too_many_requests:
                causes = (err.body.get("details") or {}).get("causes") or []
                detail = " ".join(str(c.get("message", "")) for c in causes if isinstance(c, dict))
                raise EvictionBlockedError(f"{err.message} {detail}".strip()) from None
            raise


class ClusterNodeOperations:
    def __init__(self, *, kube: KubeClient, namespace: str, drain_seconds: float) -> None:
        self._kube = kube
        self._namespace = namespace
        self._drain_seconds = drain_seconds
        self._pods = _PodApi(kube)
        self._draining: dict[str, asyncio.Lock] = {}

    async def create_shadow(self, node: NodeIdentity) -> Obj:
        body = BottlerocketShadow(
            metadata={
                "name": shadow_name(node.name),
                "namespace": self._namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}],
            }
        ).to_wire()
        del body["status"]
        try:
            return await self._kube.create(SHADOWS, body, namespace=self._namespace)
        except ApiError as err:
            if not err.conflict:
                raise OperationError(502, f"cannot create the shadow of {node.name}: {err}") from None
            return await self._kube.get(SHADOWS, shadow_name(node.name), namespace=self._namespace)

    async def update_status(self, node: NodeIdentity, status: ShadowStatus) -> Obj:
        patch = {"apiVersion": API_VERSION_V2, "kind": KIND, "status": status.to_wire()}
        try:
            return await self._kube.merge_patch(
                SHADOWS, shadow_name(node.name), patch, namespace=self._namespace, subresource="status"
            )
        except ApiError as err:
            status_code = 404 if err.not_found else 502
            raise OperationError(
                status_code, f"cannot update the status of {shadow_name(node.name)}: {err}"
            ) from None

    async def _patch_node(self, node: NodeIdentity, compute: Callable[[Obj], Obj | None]) -> None:
        for _ in range(5):
            try:
                current = await self._kube.get(NODES, node.name)
                patch = compute(current)
                if patch is not None:
                    await self._kube.merge_patch(NODES, node.name, patch)
                return
            except ApiError as err:
                if not err.conflict:
                    raise OperationError(502, f"cannot patch node {node.name}: {err}") from None
        raise OperationError(503, f"node {node.name} kept changing; try again")

    async def cordon_and_drain(self, node: NodeIdentity) -> None:
        lock = self._draining.setdefault(node.name, asyncio.Lock())
        async with lock:  # a retried call joins the drain in progress instead of starting a second one
            await self._patch_node(node, cordon_patch)
            try:
                await drain(self._pods, node.name, time_limit=self._drain_seconds)
            except DrainTimeoutError as err:
                log.warning("drain timed out", node=node.name, pods=err.remaining, pdbs=err.pdbs)
                raise OperationError(
                    409, str(err), {"pods": err.remaining, "blocking_pdbs": err.pdbs}
                ) from None
            except ApiError as err:
                raise OperationError(502, f"cannot drain node {node.name}: {err}") from None

    async def uncordon(self, node: NodeIdentity) -> None:
        await self._patch_node(node, uncordon_patch)

    async def exclude_from_lb(self, node: NodeIdentity) -> None:
        await self._patch_node(node, lambda _: exclude_from_lb_patch(exclude=True))

    async def remove_exclusion_from_lb(self, node: NodeIdentity) -> None:
        await self._patch_node(node, lambda _: exclude_from_lb_patch(exclude=False))
