"""The HTTP surface: the Rust brupop's routes and headers (so agents of either stay compatible), with
authentication as a FastAPI dependency and the cluster work behind two small protocols.

`Gatekeeper` proves who is calling (see `auth`), `NodeOperations` performs the writes; both are built from
`brupop.kube` in `server`. Keeping them as protocols lets the routes be tested without a cluster and keeps
this module free of Kubernetes client code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from brupop.apiserver.auth import NODE_NAME_HEADER, NODE_UID_HEADER, TOKEN_HEADER, AuthError, NodeIdentity
from brupop.models.conversion import handle_conversion_review
from brupop.models.crd import structural_schema
from brupop.models.shadow import ShadowStatus
from brupop.models.wire import WireError

NODE_RESOURCE = "/bottlerocket-node-resource"
# Seconds; drains can legitimately take up to DRAIN_TIMEOUT (30 minutes by default).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 300, 1800)


class Gatekeeper(Protocol):
    async def identify(self, headers: Mapping[str, str]) -> NodeIdentity:
        """The node the caller may act for; raises AuthError otherwise."""
        ...


class NodeOperations(Protocol):
    async def create_shadow(self, node: NodeIdentity) -> dict[str, Any]: ...
    async def update_status(self, node: NodeIdentity, status: ShadowStatus) -> dict[str, Any]: ...
    async def cordon_and_drain(self, node: NodeIdentity) -> None: ...
    async def uncordon(self, node: NodeIdentity) -> None: ...
    async def exclude_from_lb(self, node: NodeIdentity) -> None: ...
    async def remove_exclusion_from_lb(self, node: NodeIdentity) -> None: ...


class OperationError(Exception):
    """A node operation that failed in a way the caller should see: `status` and a JSON-able `detail`."""

    def __init__(self, status: int, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = dict(detail or {})


class RequestMetrics:
    """Request counts and latencies per route template (not per raw path, to bound cardinality)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "brupop_apiserver_requests",
            "HTTP requests served, by method, route and status code.",
            ["method", "route", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "brupop_apiserver_request_duration_seconds",
            "Time to serve a request, by method and route.",
            ["method", "route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.requests.labels(request.method, template, str(response.status_code)).inc()
        self.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response


async def _caller(
    request: Request,
    # Declared for the OpenAPI schema only; the gate reads and checks them (401 when missing, not 422).
    node_name: Annotated[str | None, Header(alias=NODE_NAME_HEADER)] = None,
    node_uid: Annotated[str | None, Header(alias=NODE_UID_HEADER)] = None,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
) -> NodeIdentity:
    gate: Gatekeeper = request.app.state.gate
    return await gate.identify(request.headers)


Caller = Annotated[NodeIdentity, Depends(_caller)]


def create_app(
    *, gate: Gatekeeper, ops: NodeOperations, registry: CollectorRegistry | None = None
) -> FastAPI:
    metrics = RequestMetrics(registry or CollectorRegistry())
    app = FastAPI(title="brupop apiserver", version="2", docs_url=None, redoc_url=None)
    app.state.gate = gate
    app.middleware("http")(metrics.middleware)

    @app.exception_handler(AuthError)
    async def refused(request: Request, err: AuthError) -> JSONResponse:
        return JSONResponse({"error": err.reason}, status_code=err.status)

    @app.exception_handler(OperationError)
    async def failed(request: Request, err: OperationError) -> JSONResponse:
        return JSONResponse({"error": err.message, **err.detail}, status_code=err.status)

    @app.get("/ping", response_class=PlainTextResponse)
    async def ping() -> str:
        return "pong"

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/crdconvert")
    async def convert(request: Request) -> JSONResponse:
        try:
            review = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "request body is not JSON"}, status_code=400)
        if not isinstance(review, dict):
            return JSONResponse({"error": "a ConversionReview must be a JSON object"}, status_code=400)
        return JSONResponse(handle_conversion_review(review))

    @app.post(NODE_RESOURCE)
    async def create(node: Caller) -> dict[str, Any]:
        """Create this node's BottlerocketShadow (or return the existing one). The body is ignored."""
        return await ops.create_shadow(node)

    # The body is read by the wire models, not by FastAPI; its schema is declared for the OpenAPI document.
    status_body = {
        "required": True,
        "content": {"application/json": {"schema": structural_schema(ShadowStatus)}},
    }

    @app.put(NODE_RESOURCE, openapi_extra={"requestBody": status_body})
    async def update(node: Caller, request: Request) -> Response:
        """Merge-patch this node's shadow status with the (v2) status object in the body."""
        try:
            status = ShadowStatus.from_json(await request.body())
        except WireError as err:
            return JSONResponse({"error": f"invalid status: {err}"}, status_code=422)
        await ops.update_status(node, status)
        return JSONResponse(status.to_wire())

    def action(path: str, operation: Callable[[NodeIdentity], Awaitable[None]], summary: str) -> None:
        async def run(node: Caller) -> Response:
            await operation(node)
            return Response(status_code=200)

        app.post(f"{NODE_RESOURCE}/{path}", summary=summary, response_class=Response)(run)

    action("cordon-and-drain", ops.cordon_and_drain, "Cordon the node and evict its pods (bounded)")
    action("uncordon", ops.uncordon, "Make the node schedulable again unless an admin cordoned it")
    action("exclude-from-lb", ops.exclude_from_lb, "Label the node out of external load balancers")
    action("remove-exclusion-from-lb", ops.remove_exclusion_from_lb, "Remove the load-balancer exclusion")
    return app
