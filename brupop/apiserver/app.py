"""The HTTP surface: the Rust brupop's routes and headers (so agents of either stay compatible), with
authentication checked first in every node route and the cluster work behind two small protocols.

`Gatekeeper` proves who is calling (see `auth`), `NodeOperations` performs the writes; both are built from
`brupop.kube` in `server`. Keeping them as protocols lets the routes be tested without a cluster and keeps
this module free of Kubernetes client code. What it does know of the Kubernetes API is which failures mean
"it could not answer now" (`brupop.kube.client.unavailable`): a transport error, a timeout, throttling or
a 5xx becomes a 503 that tells the agent to try again, never a 500, and the process serves on.

Plain Starlette routes, not FastAPI: nothing here needs request models (the one JSON body is read by the
wire models), and FastAPI with pydantic cost the apiserver 15 MiB of its memory. The OpenAPI document
(`GET /openapi.json`, the Brupop headers and the status body's schema included) is written here, from the
routes, when first asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from brupop.apiserver.auth import NODE_NAME_HEADER, NODE_UID_HEADER, TOKEN_HEADER, AuthError, NodeIdentity
from brupop.apiserver.bodies import (
    STATUS_BODY_LIMIT,
    BodyTooLargeError,
    ConversionWebhook,
    read_body,
    too_large,
)
from brupop.apiserver.metrics import RequestMetrics
from brupop.kube.client import ApiError, unavailable
from brupop.models.shadow import ShadowStatus
from brupop.models.wire import WireError, loads

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]
NODE_RESOURCE = "/bottlerocket-node-resource"
TITLE, VERSION = "brupop apiserver", "2"


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


def described(err: BaseException) -> str:
    """An error as a caller reads it; a transport error's text alone may be empty."""
    return str(err) if isinstance(err, ApiError) else f"{type(err).__name__}: {err}".rstrip(": ")


async def answered(call: Awaitable[T]) -> T:
    """`call`'s result; a failure that means the Kubernetes API server could not answer becomes a 503."""
    try:
        return await call
    except Exception as err:
        if not unavailable(err):
            raise
        raise OperationError(
            503, f"the Kubernetes API server could not answer ({described(err)}); try again"
        ) from None


async def _refused(request: Request, err: Exception) -> Response:
    assert isinstance(err, AuthError)
    return JSONResponse({"error": err.reason}, status_code=err.status)


async def _failed(request: Request, err: Exception) -> Response:
    assert isinstance(err, OperationError)
    return JSONResponse({"error": err.message, **err.detail}, status_code=err.status)


def create_app(
    *, gate: Gatekeeper, ops: NodeOperations, registry: CollectorRegistry | None = None
) -> Starlette:
    metrics = RequestMetrics(registry or CollectorRegistry())

    async def caller(request: Request) -> NodeIdentity:
        return await answered(gate.identify(request.headers))

    async def ping(request: Request) -> Response:
        return PlainTextResponse("pong")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def create(request: Request) -> Response:
        """Create this node's BottlerocketShadow (or return the existing one). The body is ignored."""
        node = await caller(request)
        return JSONResponse(await answered(ops.create_shadow(node)))

    async def update(request: Request) -> Response:
        """Merge-patch this node's shadow status with the (v2) status object in the body."""
        node = await caller(request)
        try:
            data = loads(await read_body(request, STATUS_BODY_LIMIT))
        except WireError as err:
            return JSONResponse({"error": f"invalid status: {err}"}, status_code=400)
        try:
            status = ShadowStatus.from_wire(data)
        except WireError as err:
            return JSONResponse({"error": f"invalid status: {err}"}, status_code=422)
        await answered(ops.update_status(node, status))
        return JSONResponse(status.to_wire())

    def action(operation: Callable[[NodeIdentity], Awaitable[None]]) -> Endpoint:
        async def run(request: Request) -> Response:
            await answered(operation(await caller(request)))
            return Response(status_code=200)

        return run

    webhook = ConversionWebhook()

    async def convert(request: Request) -> Response:
        return await webhook(request)

    document: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        if not document:
            document.update(openapi_document())
        return JSONResponse(document)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/crdconvert", convert, methods=["POST"]),
        Route(NODE_RESOURCE, create, methods=["POST"]),
        Route(NODE_RESOURCE, update, methods=["PUT"]),
        *(
            Route(f"{NODE_RESOURCE}/{path}", action(getattr(ops, operation)), methods=["POST"])
            for path, operation, _ in ACTIONS
        ),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[metrics.middleware()],
        exception_handlers={AuthError: _refused, OperationError: _failed, BodyTooLargeError: too_large},
    )


ACTIONS = (
    ("cordon-and-drain", "cordon_and_drain", "Cordon the node and evict its pods (bounded)"),
    ("uncordon", "uncordon", "Make the node schedulable again unless an admin cordoned it"),
    ("exclude-from-lb", "exclude_from_lb", "Label the node out of external load balancers"),
    ("remove-exclusion-from-lb", "remove_exclusion_from_lb", "Remove the load-balancer exclusion"),
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the routes: the Brupop headers on every node route (checked by the
    gate: missing ones are a 401, malformed ones a 400) and the status update's body schema."""
    from brupop.models.crd import structural_schema  # only when asked: it loads every CRD's models

    headers = [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in (NODE_NAME_HEADER, NODE_UID_HEADER, TOKEN_HEADER)
    ]
    refusals = {
        str(code): {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for code, text in (
            (400, "malformed headers or body"),
            (401, "missing or invalid credentials"),
            (403, "not the agent of this node"),
            (503, "the Kubernetes API server could not answer; try again"),
        )
    }

    def node_route(summary: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"summary": summary, "parameters": headers, "responses": {"200": ok, **refusals}, **extra}

    empty = {"description": "done"}
    json_object = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    status_body = {
        "required": True,
        "content": {"application/json": {"schema": structural_schema(ShadowStatus)}},
    }
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths: dict[str, Any] = {
        "/ping": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "pong", "content": text}}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "", "content": text}},
            }
        },
        "/crdconvert": {
            "post": {
                "summary": "The CRD conversion webhook (no authentication, as for the Rust brupop)",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": json_object, "400": {"description": "not a ConversionReview"}},
            }
        },
        NODE_RESOURCE: {
            "post": node_route("Create this node's BottlerocketShadow (the body is ignored)", json_object),
            "put": node_route("Merge-patch this node's shadow status", json_object, requestBody=status_body),
        },
    }
    for path, _, summary in ACTIONS:
        paths[f"{NODE_RESOURCE}/{path}"] = {"post": node_route(summary, empty)}
    return {"openapi": "3.1.0", "info": {"title": TITLE, "version": VERSION}, "paths": paths}


ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
