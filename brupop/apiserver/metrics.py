"""The apiserver's Prometheus metrics: requests by route, and what drains met on the way."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brupop.kube.drain import Notice

# Seconds; drains can legitimately take up to DRAIN_TIMEOUT (30 minutes by default).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 300, 1800)


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

    def middleware(self) -> Middleware:
        """The ASGI middleware that counts every HTTP request (an error that escapes counts as a 500)."""
        return Middleware(_Measured, metrics=self)


@dataclass
class _Measured:
    app: ASGIApp
    metrics: RequestMetrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")  # set by the router on a match
            method = str(scope["method"])
            self.metrics.requests.labels(method, template, str(code)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


class DrainMetrics:
    """Eviction answers by name, and the notices drains give (refusals that last, lost evictions that hold
    a PodDisruptionBudget, pods left running on a drained node)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.evictions = Counter(
            "brupop_apiserver_eviction_answers",
            "Answers of the Eviction API to drains, by name (Evicted, DisruptionBudget, NotFound, ...).",
            ["answer"],
            registry=registry,
        )
        self.notices = Counter(
            "brupop_apiserver_drain_notices",
            "What drains reported: EvictionRefused (for long), StaleDisruption (a PodDisruptionBudget "
            "holding a lost eviction), LeftRunning; by namespace and PodDisruptionBudget (not by pod: "
            "every pod ever named would stay a series; the log line and the Event name it).",
            ["reason", "namespace", "pdb"],
            registry=registry,
        )

    def noticed(self, notice: Notice) -> None:
        namespace = notice.pod.partition("/")[0]
        for pdb in notice.pdbs or ("",):
            self.notices.labels(notice.reason, namespace, pdb).inc()
