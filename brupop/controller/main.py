"""Runs the controller: informers always (a warm cache for a quick take-over), a reconciler only while this
replica leads. Each term of leadership gets a fresh reconciler that reads what must outlive a term from the
cluster (the Lease's schedule record), with fresh health parts (the Pod and workload caches and the
Prometheus queries, which run only while a policy needs them); a replica that stops leading (its renewals
failed, e.g. while the kube-apiserver restarts) goes back to campaigning instead of exiting. SIGTERM stops
at once and releases the Lease, so the other replica takes over without waiting for it to expire.
Notifications have one sender for the process (its queues outlive a term), fed by each term's announcer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry

from brupop.controller.announcer import Announcer
from brupop.controller.cluster import ClusterFleet, ClusterLeaseStore, LeaseLeadership
from brupop.controller.endpoints import serve_endpoints
from brupop.controller.health import Health
from brupop.controller.health_metrics import HealthMetrics
from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.kube.client import KubeClient, Retries
from brupop.kube.config import KubeConfig
from brupop.kube.informer import Informer
from brupop.kube.leader import LeaderElector, LeaseTiming
from brupop.kube.memory import release_freed_memory
from brupop.notify.sender import Notifier

log = structlog.get_logger("brupop.controller")
LEASE_NAME = "brupop-controller-leader"
EVENTS_FLUSH = 2.0
"""Seconds a stopping controller gives its queued Events to be sent."""


async def run(
    settings: ControllerSettings,
    kube_config: KubeConfig,
    *,
    namespace: str | None = None,
    identity: str | None = None,
    stop: asyncio.Event | None = None,
    metrics_port: int | None = None,
    timing: LeaseTiming | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until `stop` is set, when given: tests run replicas side by side)."""
    namespace = namespace or os.environ.get("BRUPOP_NAMESPACE") or kube_config.namespace
    identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    for warning in settings.warnings:
        log.warning(warning)
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    health_metrics = HealthMetrics(registry)
    notifier = Notifier(settings.notify, registry=registry)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with KubeClient(kube_config, retries=Retries()) as kube:
        lease = ClusterLeaseStore(kube, name=LEASE_NAME, namespace=namespace)
        elector = LeaderElector(
            store=lease, identity=identity, name=LEASE_NAME, namespace=namespace, timing=timing, watch=lease
        )
        current: list[Reconciler] = []

        def changed() -> None:
            for reconciler in current:
                reconciler.poke()

        fleet = ClusterFleet(
            kube=kube,
            namespace=namespace,
            on_change=changed,
            instance=identity,
            fence=elector.time_left,
        )
        informers = fleet.informers
        server = await serve_endpoints(
            host=os.environ.get("CONTROLLER_BIND_ADDRESS", "0.0.0.0"),
            port=settings.metrics_port if metrics_port is None else metrics_port,
            registry=registry,
            ready=lambda: all(i.ready.is_set() for i in informers),
        )
        background = [asyncio.create_task(i.run()) for i in informers]
        background.append(asyncio.create_task(notifier.run()))
        background.append(asyncio.create_task(fleet.events.run()))
        campaign = asyncio.create_task(elector.run())
        try:
            while not stop.is_set() and await _until(elector.leading.wait(), stop=stop):
                term = elector.term
                assert term is not None
                if not await _until(_synced(informers), term.ended.wait(), stop=stop) or term.ended.is_set():
                    continue
                release_freed_memory()  # the first lists are parsed and cached; give back what they used
                health = Health.on(kube, metrics=health_metrics, on_change=changed, clock=_now)
                reconciler = Reconciler(
                    view=fleet,
                    writer=fleet,
                    leadership=LeaseLeadership(elector),
                    settings=settings,
                    metrics=metrics,
                    clock=_now,
                    health=health,
                    notices=Announcer(notifier.notify).passed,
                )
                current[:] = [reconciler]
                log.info("leading: reconciling", term=term.number)
                try:
                    await _until(reconciler.run(), term.ended.wait(), stop=stop)
                finally:
                    current.clear()
                    await health.aclose()
                if not stop.is_set():
                    log.warning("no longer leading; campaigning again", term=term.number)
        finally:
            campaign.cancel()  # releases the Lease when held
            await fleet.events.flush(EVENTS_FLUSH)  # what the last pass told, before the sender stops
            for task in background:
                task.cancel()
            await asyncio.gather(campaign, *background, return_exceptions=True)
            server.close()


def _now() -> datetime:
    return datetime.now(UTC)


async def _synced(informers: list[Informer]) -> None:
    for informer in informers:
        await informer.ready.wait()


async def _until(*waits: Awaitable[object], stop: asyncio.Event) -> bool:
    """Wait until the first of `waits` ends, or `stop` is set: False when `stop` came first. The others are
    cancelled; an exception from a wait is raised."""
    stopping = asyncio.ensure_future(stop.wait())
    tasks = [stopping, *(asyncio.ensure_future(w) for w in waits)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        return stopping not in done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
