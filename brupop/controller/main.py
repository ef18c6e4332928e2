"""Runs the controller: informers always (a warm cache for a quick take-over), the reconciler only while
this replica holds the Lease. Losing the Lease stops the process (its pod restarts and campaigns again);
SIGTERM releases the Lease so the other replica takes over at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry

from brupop.controller.cluster import ClusterFleet, ClusterLeaseStore
from brupop.controller.endpoints import serve_endpoints
from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.informer import Informer
from brupop.kube.leader import LeaderElector
from brupop.kube.memory import release_freed_memory

log = structlog.get_logger("brupop.controller")
LEASE_NAME = "brupop-controller-leader"


class LeadershipLostError(RuntimeError):
    pass


async def run(
    settings: ControllerSettings,
    kube_config: KubeConfig,
    *,
    namespace: str | None = None,
    identity: str | None = None,
    stop: asyncio.Event | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until `stop` is set, when given: tests run replicas side by side)."""
    namespace = namespace or os.environ.get("BRUPOP_NAMESPACE") or kube_config.namespace
    identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    for warning in settings.warnings:
        log.warning(warning)
    registry = CollectorRegistry()
    async with KubeClient(kube_config) as kube:
        reconciler: Reconciler | None = None

        def changed() -> None:
            if reconciler is not None:
                reconciler.poke()

        fleet = ClusterFleet(kube=kube, namespace=namespace, on_change=changed, instance=identity)
        reconciler = Reconciler(
            view=fleet,
            writer=fleet,
            settings=settings,
            metrics=FleetMetrics(registry),
            clock=lambda: datetime.now(UTC),
        )
        informers = [fleet.shadow_informer, fleet.node_informer]
        server = await serve_endpoints(
            host=os.environ.get("CONTROLLER_BIND_ADDRESS", "0.0.0.0"),
            port=settings.metrics_port if metrics_port is None else metrics_port,
            registry=registry,
            ready=lambda: all(i.ready.is_set() for i in informers),
        )
        elector = LeaderElector(
            store=ClusterLeaseStore(kube, name=LEASE_NAME, namespace=namespace),
            identity=identity,
            name=LEASE_NAME,
            namespace=namespace,
        )
        tasks = [asyncio.create_task(i.run()) for i in informers]
        campaign = asyncio.create_task(elector.run())
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        try:
            await _lead(elector, informers, reconciler, stop, campaign)
        finally:
            for task in [campaign, *tasks]:
                task.cancel()
            for task in [campaign, *tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            server.close()


async def _lead(
    elector: LeaderElector,
    informers: list[Informer],
    reconciler: Reconciler,
    stop: asyncio.Event,
    campaign: asyncio.Task[None],
) -> None:
    waits = [asyncio.create_task(elector.leading.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    if stop.is_set():
        return
    for informer in informers:
        await informer.ready.wait()
    release_freed_memory()  # the first lists are parsed and cached; give back what they used in passing
    log.info("leading: reconciling")
    work = asyncio.create_task(reconciler.run())
    ended = [work, campaign, asyncio.create_task(stop.wait())]
    await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    if elector.lost.is_set():
        raise LeadershipLostError("lost the leader Lease; exiting so the pod restarts and campaigns again")
