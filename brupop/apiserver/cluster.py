"""The apiserver's two protocols implemented on the Kubernetes API.

`ClusterGate` authenticates with TokenReview (results cached for a few seconds per token, so an agent's
burst of calls costs one review) and looks the calling pod up in an informer over the agent pods of the
namespace; the Node's UID comes from a GET (cheap, and always current).

`ClusterNodeOperations` creates shadows idempotently, patches their status, cordons (recording who did,
see `brupop.policy.drain`), drains with a time limit, uncordons, and sets the load-balancer label. Node
patches carry the resourceVersion they were computed from and are retried on a conflict. What it does to a
Node is recorded as Events on the Node and on its shadow, what a drain met on the way on the Node
(`brupop.kube.events`: in the background, never holding or failing the step), and counted
(`brupop.apiserver.metrics.DrainMetrics`).
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
    check_node_uid,
    pod_name_of,
    require_headers,
)
from brupop.apiserver.metrics import DrainMetrics
from brupop.kube.client import NODES, PDBS, PODS, SHADOWS, TOKEN_REVIEWS, ApiError, KubeClient, unavailable
from brupop.kube.drain import DrainError, EvictionRefusedError, Notice, drain
from brupop.kube.events import EventRecorder, Regarding
from brupop.kube.informer import Informer
from brupop.models.constants import (
    API_VERSION_V2,
    KIND,
    TOKEN_AUDIENCE,
    UPDATER_INTERFACE_LABEL,
    UPDATER_INTERFACE_VERSION,
    shadow_name,
)
from brupop.models.shadow import BottlerocketShadow, ShadowStatus
from brupop.policy.drain import Eviction, cordon_patch, exclude_from_lb_patch, read_eviction, uncordon_patch
from brupop.policy.membership import managed

log = structlog.get_logger("brupop.apiserver")
Obj = dict[str, Any]


def agent_pod(obj: Mapping[str, Any]) -> AgentPod:
    meta = obj.get("metadata") or {}
    return AgentPod(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        node_name=(obj.get("spec") or {}).get("nodeName"),
        terminating=bool(meta.get("deletionTimestamp")),
    )


def trim_pod(obj: Obj) -> Obj:
    """Keep only what authorisation needs of an agent pod."""
    meta = obj.get("metadata") or {}
    kept = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
    return {
        "metadata": {k: meta[k] for k in kept if k in meta},
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
            if unavailable(err):
                raise
            raise OperationError(503, f"TokenReview failed: {err}") from None
        review = ReviewedToken.from_status(answer.get("status") or {})
        if len(self._reviews) > 4096:
            self._reviews = {k: v for k, v in self._reviews.items() if v[0] > now}
        if review.authenticated:
            self._reviews[key] = (now + self._cache_seconds, review)
        return review

    async def identify(self, headers: Mapping[str, str]) -> NodeIdentity:
        """Authorize first: the headers' syntax (no call), the token and the agent pod it is bound to (a
        TokenReview and the cache); only the agent of the named node gets the lookup of that Node."""
        node_name, node_uid, token = require_headers(headers)
        if not self._agents.ready.is_set():
            try:
                async with asyncio.timeout(10):
                    await self._agents.ready.wait()
            except TimeoutError:
                raise OperationError(503, "the agent pod cache is not ready yet; try again") from None
        review = await self._review(token)
        cached = self._agents.get(f"{self._namespace}/{pod_name_of(review)}")
        pod = authorize(review, pod=agent_pod(cached) if cached else None, node_name=node_name)
        return check_node_uid(
            pod=pod,
            node_name=node_name,
            node_uid=node_uid,
            actual_node_uid=await self._node_uid(review, node_name),
        )

    async def _node_uid(self, review: ReviewedToken, node_name: str) -> str | None:
        """The named Node's UID: from the token's signed extras when it is bound to that node (Kubernetes
        1.30+, no API call), else from the API server."""
        if review.single(NODE_NAME_EXTRA) == node_name and review.single(NODE_UID_EXTRA):
            return review.single(NODE_UID_EXTRA)
        try:
            node = await self._kube.get(NODES, node_name)
        except ApiError as err:
            if unavailable(err):
                raise
            if not err.not_found:
                raise OperationError(503, f"cannot read node {node_name}: {err}") from None
            return None
        return str(node["metadata"]["uid"])


class _PodApi:
    """`brupop.kube.drain.PodApi` on the Kubernetes API; counts each eviction answer by name."""

    def __init__(self, kube: KubeClient, metrics: DrainMetrics) -> None:
        self._kube = kube
        self._metrics = metrics

    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        return await self._kube.list(PODS, field_selector=f"spec.nodeName={node}")

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        return self._kube.watch(
            PODS, resource_version=resource_version, field_selector=f"spec.nodeName={node}"
        )

    async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}} if uid else {},
        }
        try:
            await self._kube.create(PODS, body, namespace=namespace, name=name, subresource="eviction")
            answer = read_eviction(201, {})
        except ApiError as err:
            answer = read_eviction(err.status, err.body or {"message": err.message})
        self._metrics.evictions.labels(answer.name).inc()
        return answer

    async def disrupted_pods(self, namespace: str, pdb: str) -> Mapping[str, str]:
        budget = await self._kube.get(PDBS, pdb, namespace=namespace)
        disrupted = (budget.get("status") or {}).get("disruptedPods") or {}
        return {str(pod): str(since) for pod, since in disrupted.items()}

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self._kube.get(PODS, name, namespace=namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise


class ClusterNodeOperations:
    def __init__(
        self,
        *,
        kube: KubeClient,
        namespace: str,
        drain_seconds: float,
        events: EventRecorder,
        metrics: DrainMetrics,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._drain_seconds = drain_seconds
        self._events = events
        self._metrics = metrics
        self._pods = _PodApi(kube, metrics)
        self._draining: dict[str, asyncio.Lock] = {}

    async def create_shadow(self, node: NodeIdentity) -> Obj:
        """Create the node's shadow, refusing (403) when brupop does not manage the node or the caller is an
        agent pod on its way out: the controller deletes the shadows of nodes that left, and a leaving
        agent re-creating them would fight it."""
        if node.pod_terminating:
            raise OperationError(
                403, f"the agent pod of {node.name} is terminating: it may not create a shadow"
            )
        try:
            current = await self._kube.get(NODES, node.name)
        except ApiError as err:
            if unavailable(err):
                raise  # a 503 like every other call the kube-apiserver could not answer
            raise OperationError(502, f"cannot read node {node.name}: {err}") from None
        if not managed(current):
            raise OperationError(
                403,
                f"node {node.name} is not managed by brupop (no {UPDATER_INTERFACE_LABEL}="
                f"{UPDATER_INTERFACE_VERSION} label and not in an update cycle): no shadow is created",
            )
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
            if unavailable(err):
                raise
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
            if unavailable(err):
                raise
            status_code = 404 if err.not_found else 502
            raise OperationError(
                status_code, f"cannot update the status of {shadow_name(node.name)}: {err}"
            ) from None

    async def _patch_node(self, node: NodeIdentity, compute: Callable[[Obj], Obj | None]) -> Obj | None:
        """Apply the patch `compute` makes of the current Node; the patch applied, None when none was."""
        for _ in range(5):
            try:
                current = await self._kube.get(NODES, node.name)
                patch = compute(current)
                if patch is not None:
                    await self._kube.merge_patch(NODES, node.name, patch)
                return patch
            except ApiError as err:
                if unavailable(err):
                    raise
                if not err.conflict:
                    raise OperationError(502, f"cannot patch node {node.name}: {err}") from None
        raise OperationError(503, f"node {node.name} kept changing; try again")

    def _event(self, node: NodeIdentity, reason: str, note: str, *, warning: bool = False) -> None:
        """A step: on the Node and on its shadow."""
        self._notice(node, reason, note, warning=warning)
        shadow = Regarding.shadow(node.name, namespace=self._namespace)
        self._events.record(shadow, reason=reason, note=note, warning=warning)

    def _notice(self, node: NodeIdentity, reason: str, note: str, *, warning: bool = False) -> None:
        """What a step met on the way: on the Node."""
        self._events.record(Regarding.node(node.name, node.uid), reason=reason, note=note, warning=warning)

    async def cordon_and_drain(self, node: NodeIdentity) -> None:
        lock = self._draining.setdefault(node.name, asyncio.Lock())
        async with lock:  # a retried call joins the drain in progress instead of starting a second one
            patch = await self._patch_node(node, cordon_patch)
            if patch is not None and "spec" in patch:
                self._event(node, "Cordoned", "brupop cordoned the node to update it")

            def noticed(notice: Notice) -> None:
                self._metrics.noticed(notice)
                self._notice(node, notice.reason, notice.message, warning=True)

            try:
                result = await drain(self._pods, node.name, time_limit=self._drain_seconds, notify=noticed)
            except DrainError as err:
                log.warning("drain failed", node=node.name, error=str(err), pods=err.remaining, pdbs=err.pdbs)
                self._event(node, "DrainFailed", str(err), warning=True)
                detail: dict[str, Any] = {"pods": err.remaining, "blocking_pdbs": err.pdbs}
                if isinstance(err, EvictionRefusedError):
                    detail["refused"] = {"pod": err.pod, "answer": err.answer.name}
                raise OperationError(409, str(err), detail) from None
            except ApiError as err:
                if unavailable(err):
                    raise
                raise OperationError(502, f"cannot drain node {node.name}: {err}") from None
            left = f"; left running: {', '.join(result.left_running)}" if result.left_running else ""
            self._event(node, "Drained", f"brupop evicted {result.evicted} pod(s) from the node{left}")

    async def uncordon(self, node: NodeIdentity) -> None:
        patch = await self._patch_node(node, uncordon_patch)
        if patch is None:
            return
        if "spec" in patch:
            self._event(node, "Uncordoned", "brupop made the node schedulable again after its update")
        else:
            self._event(
                node, "CordonKept", "the node stays unschedulable: it was cordoned before brupop's update"
            )

    async def exclude_from_lb(self, node: NodeIdentity) -> None:
        await self._patch_node(node, lambda _: exclude_from_lb_patch(exclude=True))
        self._event(
            node, "ExcludedFromLoadBalancers", "brupop labelled the node out of external load balancers"
        )

    async def remove_exclusion_from_lb(self, node: NodeIdentity) -> None:
        await self._patch_node(node, lambda _: exclude_from_lb_patch(exclude=False))
        self._event(node, "LoadBalancerExclusionRemoved", "brupop removed the node's load-balancer exclusion")
