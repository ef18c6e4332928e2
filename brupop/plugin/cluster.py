"""The plugin's conversation with the cluster, on brupop's own client (`brupop.kube.client`): checking that
brupop is installed, reading a snapshot, finding out who the user is, asking whether the user may do
something before doing any of it, and recording Events.

Every failure becomes one `PluginError` line that says what to do: the API server cannot be reached (and
which one, from which kubeconfig context), brupop's CRDs are missing (which, and how to install them), or
the user lacks a right (which verb on which resource, where).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

import httpx

from brupop.kube.client import DEPLOYMENTS, EVENTS, NODES, SHADOWS, ApiError, KubeClient, Resource
from brupop.kube.config import KubeConfigError
from brupop.kube.leader import micro_time
from brupop.models import constants as c
from brupop.plugin.facts import (
    CONTROLLER_DEPLOYMENT,
    ControllerFacts,
    Snapshot,
    controller_facts,
    node_facts,
    shadow_facts,
)

T = TypeVar("T")
Obj = dict[str, Any]
POLICIES: Final = Resource(c.API_GROUP, c.POLICY_VERSION, c.POLICY_PLURAL, namespaced=False)
SELF_SUBJECT_REVIEWS: Final = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", namespaced=False)
ACCESS_REVIEWS: Final = Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", namespaced=False)
REPORTER: Final = "brupop.bottlerocket.aws/kubectl-brupop"
CLUSTER_EVENTS_NAMESPACE: Final = "default"
"""Where Events about cluster-scoped objects (Nodes, UpdatePolicies) must go (events.k8s.io/v1 accepts
`default` and `kube-system` only), and where `kubectl describe node` finds a kubelet's."""
INSTALL: Final = (
    "helm install brupop-crd charts/bottlerocket-shadow -n {ns} --create-namespace && "
    "helm install brupop charts/bottlerocket-update-operator -n {ns} (README: Install)"
)


UNREACHABLE: Final = (httpx.TransportError, KubeConfigError, OSError)
"""What a request raises when the API server cannot be reached (or the credentials cannot be read)."""


class PluginError(Exception):
    """What went wrong, in one line for the user."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a verb is about, for a refusal's words and an access review."""

    verb: str
    resource: Resource
    namespace: str | None = None
    name: str | None = None

    def words(self) -> str:
        what = self.resource.plural + (f"/{self.name}" if self.name else "")
        group = self.resource.group or "core"
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {what} (API group {group}, {where})"

    def can_i(self) -> str:
        kind = self.resource.plural + (f".{self.resource.group}" if self.resource.group else "")
        return f"kubectl auth can-i {self.verb} {kind}" + (f" -n {self.namespace}" if self.namespace else "")


class Cluster:
    def __init__(self, kube: KubeClient, *, namespace: str, where: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._where = where
        self._user: str | None = None

    async def call(self, target: Target, request: Awaitable[T]) -> T:
        """Await one request; any failure is a PluginError saying what to do."""
        try:
            return await request
        except (ApiError, *UNREACHABLE) as err:
            raise self._failure(target, err) from None

    async def call_or_none(self, target: Target, request: Awaitable[T]) -> T | None:
        """`call`, but None when the object (or the API) does not exist."""
        try:
            return await request
        except ApiError as err:
            if err.not_found:
                return None
            raise self._failure(target, err) from None
        except UNREACHABLE as err:
            raise self._failure(target, err) from None

    async def get_or_none(self, target: Target) -> Obj | None:
        assert target.name is not None
        name, namespace = target.name, target.namespace
        return await self.call_or_none(target, self.kube.get(target.resource, name, namespace=namespace))

    def _failure(self, target: Target, err: Exception) -> PluginError:
        if not isinstance(err, ApiError):
            return PluginError(
                f"cannot reach the Kubernetes API at {self.kube.config.server} ({self._where}): "
                f"{str(err) or type(err).__name__}"
            )
        if err.status == 401:
            return PluginError(
                f"the API server at {self.kube.config.server} did not accept your credentials "
                f"({self._where}): {err.message or err.reason}; log in again or check the kubeconfig's user"
            )
        if err.status == 403:
            return self._refused(target)
        return PluginError(f"could not {target.words()}: {err}")

    def _refused(self, target: Target) -> PluginError:
        return PluginError(
            f"you ({self._user or 'this user'}) may not {target.words()}: ask your cluster administrator "
            f"for that right (check with `{target.can_i()}`)"
        )

    async def installed(self) -> bool:
        """Raises unless the BottlerocketShadow CRD is served; whether the UpdatePolicy CRD is too."""
        served = {}
        for version, plural in ((c.API_VERSION_V2, c.PLURAL), (c.API_VERSION_POLICY, c.POLICY_PLURAL)):
            path = f"/apis/{version}"
            target = Target("get", Resource(c.API_GROUP, version.split("/")[1], "", namespaced=False))
            found = await self.call_or_none(target, self.kube.request("GET", path))
            served[plural] = any(r.get("name") == plural for r in (found or {}).get("resources") or ())
        if not served[c.PLURAL]:
            missing = (
                f"the CustomResourceDefinition {c.CRD_NAME} is missing"
                if served[c.POLICY_PLURAL]
                else f"the CustomResourceDefinitions {c.CRD_NAME} and {c.POLICY_CRD_NAME} are missing"
            )
            raise PluginError(
                f"brupop is not installed in this cluster ({self._where}): {missing}; install brupop with "
                f"{INSTALL.format(ns=self.namespace)}"
            )
        return served[c.POLICY_PLURAL]

    async def whoami(self) -> str:
        """The user's name as the API server knows it (a SelfSubjectReview), for Events."""
        if self._user is None:
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            try:
                review = await self.kube.create(SELF_SUBJECT_REVIEWS, body)
                self._user = str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "")
            except (ApiError, *UNREACHABLE):
                self._user = ""
            self._user = self._user or "an unknown user"
        return self._user

    async def require(self, *targets: Target) -> None:
        """Refuse before anything changes unless the user may do all of it (SelfSubjectAccessReviews)."""
        await self.whoami()
        for target in targets:
            attributes = {
                "verb": target.verb,
                "group": target.resource.group,
                "resource": target.resource.plural,
            }
            if target.namespace:
                attributes["namespace"] = target.namespace
            if target.name:
                attributes["name"] = target.name
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            }
            review = await self.call(Target("create", ACCESS_REVIEWS), self.kube.create(ACCESS_REVIEWS, body))
            if not (review.get("status") or {}).get("allowed"):
                raise self._refused(target)

    async def snapshot(self, *, policies_served: bool) -> Snapshot:
        ns = self.namespace
        shadows, _ = await self.call(Target("list", SHADOWS, ns), self.kube.list(SHADOWS, namespace=ns))
        selector = f"{c.UPDATER_INTERFACE_LABEL}={c.UPDATER_INTERFACE_VERSION}"
        listed, _ = await self.call(
            Target("list", NODES), self.kube.list(NODES, label_selector=selector, transform=trim_node)
        )
        nodes = {n.name: n for n in map(node_facts, listed)}
        facts = tuple(map(shadow_facts, shadows))
        for name in sorted({s.node for s in facts} - nodes.keys()):
            node = await self.get_or_none(Target("get", NODES, name=name))
            if node is not None:
                nodes[name] = node_facts(node)
        policies: list[Obj] = []
        if policies_served:
            policies, _ = await self.call(Target("list", POLICIES), self.kube.list(POLICIES))
        return Snapshot(
            namespace=ns,
            nodes=nodes,
            shadows=facts,
            policies=tuple(policies),
            controller=await self.controller(),
            policies_served=policies_served,
        )

    async def controller(self) -> ControllerFacts:
        target = Target("get", DEPLOYMENTS, self.namespace, CONTROLLER_DEPLOYMENT)
        try:
            deployment = await self.get_or_none(target)
        except PluginError as err:  # status works without it, on the chart's defaults
            return ControllerFacts(None, f"{err}; assuming the chart's default settings")
        return controller_facts(deployment, namespace=self.namespace)

    async def record(self, regarding: Obj, *, reason: str, note: str, now: datetime) -> None:
        """An Event about `regarding` (a whole object as the API server returned it)."""
        meta = regarding["metadata"]
        namespace = meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}-", "namespace": namespace},
            "eventTime": micro_time(now),
            "reportingController": REPORTER,
            "reportingInstance": f"kubectl-brupop@{socket.gethostname()}"[:128],
            "action": reason,
            "reason": reason,
            "note": note[:1024],
            "type": "Normal",
            "regarding": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        await self.call(
            Target("create", EVENTS, namespace), self.kube.create(EVENTS, event, namespace=namespace)
        )


def trim_node(node: Obj) -> Obj:
    """What status keeps of a Node (they carry image lists of tens of kilobytes)."""
    meta = node.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "labels", "annotations") if k in meta}
    return {"metadata": kept, "spec": {"unschedulable": (node.get("spec") or {}).get("unschedulable", False)}}
