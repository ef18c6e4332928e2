"""A thin asyncio client for the Kubernetes REST API, over one pooled httpx connection.

Objects stay plain JSON dicts; callers read what they need through the wire models (`brupop.models.wire`).
Verbs are the few the programs use: get, list (paged), create (also for subresources such as eviction and
token requests), JSON merge patch (main resource or a subresource such as `status`), replace, delete, and
watch.

Every failure is an `ApiError`, including no answer at all (`ApiUnavailableError`: connection refused or
reset, a timeout), so one `except ApiError` covers a kube-apiserver that restarts. `retryable` says whether
the same call may succeed later (no answer, 429, 5xx) and `retry_after` what the server asked for. A client
made with `retries` repeats retryable calls itself (not watches: informers resume those); callers that need
a bound on the whole call wrap it in `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import httpx

from brupop.kube.config import KubeConfig
from brupop.kube.informer import ListWatch, ResourceExpiredError
from brupop.kube.retry import Backoff, wait_before_retry
from brupop.models import constants as c

Obj = dict[str, Any]
MERGE_PATCH: Final = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path; every caller-given part is one percent-encoded segment (see `segment`)."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{segment(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{segment(name)}"
        if subresource is not None:
            base += f"/{segment(subresource)}"
        return base


def segment(text: str) -> str:
    """`text` as exactly one URL path segment: every character that could end the segment or the path
    (`/`, `?`, `#`) or start an escape (`%`) is percent-encoded, and the dot segments, which a URL parser
    would resolve against the path, are refused, as is the empty name. So no name, whoever chose it, can
    make a request reach another URL than the one object's."""
    if text in ("", ".", ".."):
        raise ValueError(f"{text!r} is not a valid path segment for a Kubernetes name")
    return quote(text, safe="")


NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods", namespaced=True)
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", namespaced=True)
EVENTS = Resource("events.k8s.io", "v1", "events", namespaced=True)
CORE_EVENTS = Resource("", "v1", "events", namespaced=True)
"""The same Events through the core API, which alone may set the timestamps `kubectl describe` sorts by."""
LEASES = Resource("coordination.k8s.io", "v1", "leases", namespaced=True)
PDBS = Resource("policy", "v1", "poddisruptionbudgets", namespaced=True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", namespaced=True)
REPLICASETS = Resource("apps", "v1", "replicasets", namespaced=True)
STATEFULSETS = Resource("apps", "v1", "statefulsets", namespaced=True)
DAEMONSETS = Resource("apps", "v1", "daemonsets", namespaced=True)
TOKEN_REVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", namespaced=False)
SHADOWS = Resource(c.API_GROUP, "v2", c.PLURAL, namespaced=True)
POLICIES = Resource(c.API_GROUP, c.POLICY_VERSION, c.POLICY_PLURAL, namespaced=False)


class ApiError(Exception):
    """A non-2xx answer, with the Status object's reason and message when the server sent one."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        body: Obj | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        self.retry_after = retry_after
        """Seconds the server asked us to wait (Retry-After, or the Status's retryAfterSeconds)."""

    @property
    def retryable(self) -> bool:
        """The same call may succeed later: no answer, too many requests, or a server error."""
        return self.status == 0 or self.status == 429 or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def too_many_requests(self) -> bool:
        return self.status == 429


class ApiUnavailableError(ApiError):
    """No answer: the connection was refused or reset, or the request timed out (status 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unavailable", message)
        self.args = (f"no answer: {message}",)


@dataclass(frozen=True, slots=True)
class Retries:
    """How a client repeats retryable calls: up to `attempts` tries in all, `backoff` between them."""

    attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=5.0))


def unavailable(err: BaseException) -> bool:
    """Whether `err` means the API server could not answer now (no answer at all, 429 throttling, a 5xx),
    so the same call may well succeed later."""
    if isinstance(err, ApiError):
        return err.retryable
    return isinstance(err, httpx.TransportError)


class _BearerAuth(httpx.Auth):
    """Reads the token on every request, so rotated projected tokens are picked up."""

    def __init__(self, config: KubeConfig) -> None:
        self._config = config

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._config.bearer_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None  # an HTTP date: the kube-apiserver sends seconds, so a date is not worth parsing
    return seconds if seconds >= 0 else None


def _error(response: httpx.Response, body: bytes) -> ApiError:
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    retry_after = _seconds(response.headers.get("Retry-After", ""))
    if isinstance(status, dict) and status.get("kind") == "Status":
        if retry_after is None:
            retry_after = _seconds((status.get("details") or {}).get("retryAfterSeconds", ""))
        return ApiError(
            response.status_code,
            str(status.get("reason", "")),
            str(status.get("message", "")),
            status,
            retry_after=retry_after,
        )
    return ApiError(
        response.status_code,
        response.reason_phrase,
        body.decode(errors="replace")[:500],
        retry_after=retry_after,
    )


def _unavailable(method: str, path: str, err: httpx.TransportError) -> ApiUnavailableError:
    return ApiUnavailableError(f"{method} {path}: {str(err) or type(err).__name__}")


KEEPALIVE: Final = 60.0
"""Seconds an idle connection to the kube-apiserver is kept for the next request. httpx's default (5 s)
is shorter than the leader's renewal interval (it was equal to the first one, and a third of those
renewals paid a new TLS handshake, 2.3 ms of CPU each, measured); the kube-apiserver closes idle
connections after 90 s, so ours never meets one it closed."""


class KubeClient:
    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: Retries | None = None,
    ):
        self.config = config
        self._retries = retries or Retries(attempts=1)
        self._http = httpx.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context() if transport is None else True,
            auth=_BearerAuth(config),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE
            ),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "brupop-python"},
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else None
        failures = 0
        while True:
            try:
                return await self._send(method, path, params=params, content=content, headers=headers)
            except ApiError as err:
                failures += 1
                if not err.retryable or failures >= self._retries.attempts:
                    raise
                wait = wait_before_retry(self._retries.backoff, failures - 1, retry_after=err.retry_after)
                await asyncio.sleep(wait)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Obj:
        try:
            response = await self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as err:
            raise _unavailable(method, path, err) from None
        if response.status_code >= 400:
            raise _error(response, response.content)
        return response.json() if response.content else {}

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> Obj:
        return await self.request("GET", resource.path(namespace=namespace, name=name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 100,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> tuple[list[Obj], str]:
        """Every matching object (following `continue` tokens) and the list's resourceVersion; `transform`
        trims each page as it arrives, so a large list never sits in memory whole."""
        items: list[Obj] = []
        params = _selectors(label_selector, field_selector)
        params["limit"] = str(page_size)
        while True:
            page = await self.request("GET", resource.path(namespace=namespace), params=params)
            page_items = page.get("items") or []
            items.extend(map(transform, page_items) if transform else page_items)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = meta["continue"]

    async def create(
        self,
        resource: Resource,
        body: Obj,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request("POST", path, body=body)

    async def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def replace(self, resource: Resource, name: str, body: Obj, *, namespace: str | None = None) -> Obj:
        return await self.request("PUT", resource.path(namespace=namespace, name=name), body=body)

    async def delete(
        self, resource: Resource, name: str, *, namespace: str | None = None, options: Obj | None = None
    ) -> Obj:
        return await self.request("DELETE", resource.path(namespace=namespace, name=name), body=options)

    async def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events; a 410 answer raises ResourceExpiredError, other errors ApiError."""
        params = _selectors(label_selector, field_selector)
        params.update(
            watch="1",
            allowWatchBookmarks="true",
            resourceVersion=resource_version,
            timeoutSeconds=str(timeout_seconds),
        )
        timeout = httpx.Timeout(30.0, read=timeout_seconds + 30.0)
        path = resource.path(namespace=namespace)
        try:
            async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    error = _error(response, await response.aread())
                    if error.status == 410:
                        raise ResourceExpiredError(error.message)
                    raise error
                async for line in response.aiter_lines():
                    if line.strip():
                        event = json.loads(line)
                        yield str(event.get("type", "")), event.get("object") or {}
        except httpx.TransportError as err:
            raise _unavailable("WATCH", path, err) from None

    def list_watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> ListWatch:
        """For an informer; `transform` (the informer's own, idempotent) trims list pages as they arrive."""
        return _ResourceListWatch(self, resource, namespace, label_selector, field_selector, transform)


@dataclass(frozen=True, slots=True)
class _ResourceListWatch:
    client: KubeClient
    resource: Resource
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    transform: Callable[[Obj], Obj] | None

    async def list(self) -> tuple[list[Obj], str]:
        return await self.client.list(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            transform=self.transform,
        )

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        return self.client.watch(
            self.resource,
            resource_version=resource_version,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params
