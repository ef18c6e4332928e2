"""The controller against the real API server, with the test playing the agents (writing `status`), and
with the real brupop apiserver, agent DaemonSet and agents where nodes leave brupop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from brupop.agent.agent import AgentOptions
from brupop.controller.cluster import ClusterFleet, ClusterLeaseStore
from brupop.controller.main import LEASE_NAME, run
from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.deploy import AGENT_SA, CONTROLLER_SA
from brupop.kube.client import EVENTS, LEASES, NODES, PODS, SHADOWS, ApiError, KubeClient, Resource, Retries
from brupop.kube.config import KubeConfig
from brupop.kube.leader import LeaderElector, LeaseStore, LeaseTiming
from brupop.models.constants import (
    AGENT_COMPONENT,
    COMPONENT_LABEL,
    IN_CYCLE_LABEL,
    NAMESPACE,
    UPDATER_INTERFACE_LABEL,
    shadow_name,
)
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp
from brupop.policy.schedule import Schedule, ScheduleKind
from integ.cluster import ClusterState, free_port, restart_component
from integ.fleet import create_fleet, prepare, set_status, shadows, watching
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.kubetools import (
    BRUPOP_LABELS,
    admin,
    crd_for_local_use,
    create_nodes,
    eventually,
    install_crd,
    nonempty,
    watch_events,
)
from integ.operator import (
    agent_pod,
    agent_token,
    brupop_apiserver,
    config_as,
    install_agents,
    install_rbac,
    node_agent,
    service_account_token,
    stop_process,
    token_kubeconfig,
)
from tests.electors import Overlap, skewed, stop_electors

S = ShadowState


class Sole:
    """Leadership for a controller that runs alone, without a Lease: always steady, schedule state kept in
    memory."""

    def __init__(self) -> None:
        self.recorded: dict[str, datetime] = {}

    def steady(self) -> bool:
        return True

    def drained_at(self) -> Mapping[str, datetime]:
        return self.recorded

    async def record_drained(self, pool: str, at: datetime, *, live: Collection[str]) -> bool:
        self.recorded[pool] = at
        return True


@contextlib.asynccontextmanager
async def controller(
    cluster: ClusterState,
    env: dict[str, str],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    loop: bool = True,
) -> AsyncIterator[Reconciler]:
    """The controller's reconciler alone (no leader election), as the controller's service account; with
    `loop=False` the test runs each pass itself (`reconcile_once`)."""
    settings = ControllerSettings.from_env(env, now=clock())
    async with KubeClient(await controller_identity(cluster), retries=Retries()) as kube:
        reconciler: list[Reconciler] = []

        def changed() -> None:
            for each in reconciler:
                each.poke()

        fleet = ClusterFleet(
            kube=kube,
            namespace=NAMESPACE,
            on_change=changed,
            instance="test",
            fence=lambda: 60.0,
        )
        reconciler.append(
            Reconciler(
                view=fleet,
                writer=fleet,
                leadership=Sole(),
                settings=settings,
                metrics=FleetMetrics(CollectorRegistry()),
                clock=clock,
            )
        )
        tasks = [asyncio.create_task(informer.run()) for informer in fleet.informers]
        tasks.append(asyncio.create_task(fleet.events.run()))
        await eventually(lambda: _synced(fleet), within=30, what="the controller's caches to sync")
        if loop:
            tasks.append(asyncio.create_task(reconciler[0].run()))
        try:
            yield reconciler[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _synced(fleet: ClusterFleet) -> bool:
    return all(informer.ready.is_set() for informer in fleet.informers)


async def controller_identity(cluster: ClusterState) -> KubeConfig:
    """The controller's own service account, under the manifest's RBAC."""
    async with admin(cluster) as kube:
        await install_rbac(kube)
        return config_as(cluster, await service_account_token(kube, CONTROLLER_SA))


async def all_done(kube: KubeClient, prefix: str, count: int, version: str = "1.1.0") -> bool:
    found = await shadows(kube, prefix)
    return len(found) == count and all(
        s.status is not None
        and s.status.current_version == version
        and s.status.current_state is S.IDLE
        and s.spec.state is S.IDLE
        and s.spec.version is None
        for s in found
    )


@pytest.mark.integration
async def test_eight_nodes_two_at_a_time(cluster: ClusterState, kube: KubeClient) -> None:
    await prepare(kube)
    await create_fleet(kube, [f"lim-{i}" for i in range(8)])
    async with watching(kube, "lim-") as watcher, controller(cluster, {"MAX_CONCURRENT_UPDATE": "2"}):
        await eventually(lambda: all_done(kube, "lim-", 8), within=90, what="all 8 nodes updated")
    assert watcher.peak == 2


@pytest.mark.integration
async def test_a_closed_window_starts_nothing_but_lets_in_flight_nodes_finish(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["win-0", "win-1", "win-2"])
    await kube.merge_patch(
        SHADOWS,
        shadow_name("win-0"),
        {"spec": {"state": "StagedAndPerformedUpdate", "version": "1.1.0"}},
        namespace=NAMESPACE,
    )
    closed = {"MAX_CONCURRENT_UPDATE": "3", "SCHEDULER_CRON_EXPRESSION": "* * * * * * 2099"}
    async with watching(kube, "win-"), controller(cluster, closed):

        async def first_done() -> bool:
            (s,) = [s for s in await shadows(kube, "win-0")]
            return s.status is not None and s.status.current_version == "1.1.0" and s.spec == type(s.spec)()

        await eventually(first_done, within=60, what="the in-flight node to finish")
        others = await shadows(kube, "win-")
    assert [s.spec.state for s in others if s.name != "brs-win-0"] == [S.IDLE, S.IDLE]


@pytest.mark.integration
async def test_backoff_in_whole_minutes_and_crash_count_order(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["bo-a", "bo-b"])
    failed_at = datetime(2030, 1, 1, 12, tzinfo=UTC)
    await set_status(
        kube,
        "bo-a",
        ShadowStatus(
            current_version="1.0.0",
            target_version="1.1.0",
            current_state=S.IDLE,
            crash_count=3,
            state_transition_failure_timestamp=Timestamp.from_datetime(failed_at),
        ),
    )
    now = [failed_at + timedelta(minutes=8, seconds=59)]  # 8 whole minutes: 2^3 not yet exceeded
    env = {"MAX_CONCURRENT_UPDATE": "1"}
    async with (
        watching(kube, "bo-", agents=False),
        controller(cluster, env, clock=lambda: now[0]) as reconciler,
    ):

        async def started(name: str) -> bool:
            return (await shadows(kube, name))[0].spec.state is S.STAGED_AND_PERFORMED_UPDATE

        await eventually(lambda: started("bo-b"), what="the crash-free node to start first")
        assert (await shadows(kube, "bo-a"))[0].spec.state is S.IDLE
        # bo-b finishes; bo-a is still inside its back-off.
        b = (await shadows(kube, "bo-b"))[0]
        assert b.status is not None
        await set_status(kube, "bo-b", replace(b.status, current_version="1.1.0", target_version="1.1.0"))
        await kube.merge_patch(
            SHADOWS, shadow_name("bo-b"), {"spec": {"state": "Idle", "version": None}}, namespace=NAMESPACE
        )
        reconciler.poke()
        await eventually(lambda: _equal((shadows(kube, "bo-b")), None), what="bo-b settled")
        assert (await shadows(kube, "bo-a"))[0].spec.state is S.IDLE
        now[0] = failed_at + timedelta(minutes=9)
        reconciler.poke()
        await eventually(lambda: started("bo-a"), what="bo-a to start once 9 whole minutes have passed")


async def _equal(found_coro, version):  # type: ignore[no-untyped-def]
    (s,) = await found_coro
    return s.spec.version == version and s.spec.state is S.IDLE


@pytest.mark.integration
async def test_removing_the_label_deletes_the_shadow(cluster: ClusterState, kube: KubeClient) -> None:
    await prepare(kube)
    await create_fleet(kube, ["lbl-0"], target="1.0.0")
    async with controller(cluster, {"MAX_CONCURRENT_UPDATE": "1"}):
        await kube.merge_patch(
            NODES, "lbl-0", {"metadata": {"labels": {"bottlerocket.aws/updater-interface-version": None}}}
        )

        async def gone() -> bool:
            try:
                await kube.get(SHADOWS, shadow_name("lbl-0"), namespace=NAMESPACE)
                return False
            except ApiError as err:
                return err.not_found

        await eventually(gone, what="the shadow of the unlabelled node to be deleted")


@pytest.mark.integration
async def test_two_replicas_only_the_leader_writes(cluster: ClusterState, kube: KubeClient) -> None:
    await prepare(kube)
    config = await controller_identity(cluster)
    settings = ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "1"}, now=datetime.now(UTC))
    stops = {"replica-a": asyncio.Event(), "replica-b": asyncio.Event()}
    replicas = {
        name: asyncio.create_task(
            run(settings, config, namespace=NAMESPACE, identity=name, stop=stop, metrics_port=0)
        )
        for name, stop in stops.items()
    }
    try:
        lease = await eventually(lambda: _holder(kube), what="a leader")
        await create_fleet(kube, ["ha-0", "ha-1"])
        async with watching(kube, "ha-"):
            await eventually(lambda: all_done(kube, "ha-", 2), within=60, what="both nodes updated")
        events, _ = await kube.list(EVENTS, namespace=NAMESPACE)
        writers = {e["reportingInstance"] for e in events if e["regarding"]["name"].startswith("brs-ha-")}
        assert writers == {lease}
        # The leader steps down on SIGTERM and releases the Lease; the other replica takes over at once.
        stops[lease].set()
        await replicas[lease]
        other = next(name for name in stops if name != lease)
        assert (
            await eventually(lambda: _holder(kube, other), within=10, what="the other replica to lead")
            == other
        )
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*replicas.values(), return_exceptions=True)


async def _holder(kube: KubeClient, wanted: str | None = None) -> str | None:
    try:
        lease = await kube.get(LEASES, LEASE_NAME, namespace=NAMESPACE)
    except ApiError:
        return None
    holder = lease["spec"].get("holderIdentity")
    return holder if holder and (wanted is None or holder == wanted) else None


# --- leadership on a real Lease (item 2) ---------------------------------------------------------------

REAL_FAST = LeaseTiming(
    duration=timedelta(seconds=2),  # the shortest timings worth testing that the Lease API honours
    renew_deadline=timedelta(seconds=1.5),
    retry_period=timedelta(seconds=0.25),
)


class CountingStore:
    """A ClusterLeaseStore that counts the reads that came back."""

    def __init__(self, store: ClusterLeaseStore) -> None:
        self._store = store
        self.reads = 0

    async def get(self) -> dict[str, Any] | None:
        found = await self._store.get()
        self.reads += 1
        return found

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._store.create(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._store.replace(body)


class Switch:
    """A TCP proxy to the kube-apiserver that can stop answering: once `freeze()`d, connections stay open
    (old and new) but no byte goes through in either direction, as with a hung server or a dead link."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._frozen = asyncio.Event()
        self._links: set[asyncio.Task[Any]] = set()

    def freeze(self) -> None:
        self._frozen.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self._frozen.is_set():
                    await asyncio.Event().wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        link = asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._links.add(link)  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.CancelledError):
            await link

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            for link in self._links:
                link.cancel()
            server.close()


def via(config: KubeConfig, port: int) -> KubeConfig:
    return replace(config, server=f"https://127.0.0.1:{port}")


async def _fresh_lease(kube: KubeClient) -> str:
    """The controller's Lease (the only one its Role may read and renew), deleted for a fresh start."""
    with contextlib.suppress(ApiError):
        await kube.delete(LEASES, LEASE_NAME, namespace=NAMESPACE)
    return LEASE_NAME


def elector(store: LeaseStore, identity: str, *, lease: str, skew: timedelta = timedelta(0)) -> LeaderElector:
    """A candidate for `lease` (behind `store`), on the fast timings, its wall clock off by `skew`."""
    return LeaderElector(
        store=store, identity=identity, name=lease, namespace=NAMESPACE, timing=REAL_FAST, clock=skewed(skew)
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("skew_a", "skew_b"),
    [(timedelta(0), timedelta(hours=3)), (-timedelta(hours=3), timedelta(0))],
    ids=["candidate-ahead", "leader-behind"],
)
async def test_replicas_whose_clocks_differ_by_hours_never_lead_together(
    cluster: ClusterState, kube: KubeClient, skew_a: timedelta, skew_b: timedelta
) -> None:
    await prepare(kube)
    config = await controller_identity(cluster)
    lease = await _fresh_lease(kube)
    async with KubeClient(config) as kube_a, KubeClient(config) as kube_b:
        b_store = CountingStore(ClusterLeaseStore(kube_b, name=lease, namespace=NAMESPACE))
        a = elector(ClusterLeaseStore(kube_a, name=lease, namespace=NAMESPACE), "a", lease=lease, skew=skew_a)
        b = elector(b_store, "b", lease=lease, skew=skew_b)
        task_a = asyncio.create_task(a.run())
        await eventually(lambda: _set(a.leading), what="a to lead")
        overlap = Overlap(a, b)
        task_b = asyncio.create_task(b.run())
        try:
            # b reads the real Lease for three lease durations while a renews it: b must not take over.
            reads = 3 * REAL_FAST.duration / REAL_FAST.retry_period
            await eventually(lambda: _true(b_store.reads >= reads), what="b to read the Lease many times")
            assert not b.leading.is_set()
            assert a.leading.is_set()
            await stop_electors(task_a)  # a releases the Lease: b takes over at once
            await eventually(lambda: _set(b.leading), what="b to lead once a released the Lease")
        finally:
            await stop_electors(task_a, task_b)
        assert not overlap.stop()


class WatchingStore(CountingStore):
    """A CountingStore whose watch of the Lease is the ClusterLeaseStore's own, with the watch errors
    counted."""

    def __init__(self, store: ClusterLeaseStore) -> None:
        super().__init__(store)
        self._watched = store
        self.watch_errors: list[str] = []

    async def changes(self, resource_version: str) -> AsyncGenerator[dict[str, Any] | None, None]:
        try:
            async for lease in self._watched.changes(resource_version):
                yield lease
        except ApiError as err:
            self.watch_errors.append(str(err))
            raise


@pytest.mark.integration
async def test_a_standby_watches_the_real_lease_under_the_charts_rbac_instead_of_reading_it(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """The standby sees the leader's renewals on a watch (the chart's Role lets the controller list and
    watch its Lease by name), reads the Lease only to start each watch, and takes over at the release."""
    await prepare(kube)
    config = await controller_identity(cluster)
    lease = await _fresh_lease(kube)
    async with KubeClient(config) as kube_a, KubeClient(config) as kube_b:
        b_store = WatchingStore(ClusterLeaseStore(kube_b, name=lease, namespace=NAMESPACE))
        a = elector(ClusterLeaseStore(kube_a, name=lease, namespace=NAMESPACE), "a", lease=lease)
        b = LeaderElector(
            store=b_store, identity="b", name=lease, namespace=NAMESPACE, timing=REAL_FAST, watch=b_store
        )
        task_a = asyncio.create_task(a.run())
        await eventually(lambda: _set(a.leading), what="a to lead")
        overlap = Overlap(a, b)
        task_b = asyncio.create_task(b.run())
        try:
            seen: list[str] = []

            async def renewals(count: int) -> None:
                async for _, obj in watch_events(kube, LEASES, NAMESPACE):
                    if obj["metadata"]["name"] == lease:
                        seen.append(obj["spec"]["renewTime"])
                    if len(set(seen)) >= count:
                        return

            await asyncio.wait_for(renewals(int(3 * REAL_FAST.duration / (REAL_FAST.renew_deadline / 2))), 30)
            assert not b.leading.is_set()
            assert b_store.watch_errors == []
            assert b_store.reads <= 2
            await stop_electors(task_a)  # a releases the Lease: b sees it on its watch and takes over
            await eventually(lambda: _set(b.leading), what="b to lead once a released the Lease")
        finally:
            await stop_electors(task_a, task_b)
        assert not overlap.stop()


@pytest.mark.integration
async def test_a_leader_whose_server_stops_answering_stops_leading_before_another_can_lead(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    config = await controller_identity(cluster)
    switch = Switch(int(config.server.rsplit(":", 1)[1]))
    lease = await _fresh_lease(kube)
    async with (
        switch.serving() as port,
        KubeClient(via(config, port)) as kube_a,
        KubeClient(config) as kube_b,
    ):
        a = elector(ClusterLeaseStore(kube_a, name=lease, namespace=NAMESPACE), "a", lease=lease)
        b = elector(ClusterLeaseStore(kube_b, name=lease, namespace=NAMESPACE), "b", lease=lease)
        task_a = asyncio.create_task(a.run())
        await eventually(lambda: _set(a.leading), what="a to lead")
        task_b = asyncio.create_task(b.run())
        overlap = Overlap(a, b)
        try:
            switch.freeze()  # a's renewals now hang: no answer, no error (the client's timeout is 30 s)
            await eventually(lambda: _set(b.leading), within=30, what="b to take over the unrenewed Lease")
            assert not a.leading.is_set()
            assert a.time_left() == 0  # a's writes stopped too
        finally:
            await stop_electors(task_a, task_b)
        assert not overlap.stop()


@pytest.mark.integration
async def test_a_deposed_leaders_late_write_is_refused(cluster: ClusterState, kube: KubeClient) -> None:
    """A write decided on what the old leader saw, arriving after its successor wrote: refused (409) by the
    resourceVersion precondition. And once its Lease has run out, it sends nothing at all."""
    await prepare(kube)
    await create_fleet(kube, ["late-0"])
    left = [60.0]
    async with KubeClient(await controller_identity(cluster)) as kube_old:
        deposed = ClusterFleet(
            kube=kube_old, namespace=NAMESPACE, on_change=lambda: None, instance="old", fence=lambda: left[0]
        )
        informer = asyncio.create_task(deposed.shadow_informer.run())
        try:
            await eventually(lambda: _set(deposed.shadow_informer.ready), what="the old leader's cache")
            (seen,) = deposed.shadows()
            now = Timestamp.from_datetime(datetime.now(UTC))
            # The successor starts the node.
            successor = {
                "state": "StagedAndPerformedUpdate",
                "version": "1.1.0",
                "state_transition_timestamp": str(now),
            }
            await kube.merge_patch(SHADOWS, seen.name, {"spec": successor}, namespace=NAMESPACE)
            # The old leader's write, decided before, arrives now.
            old = ShadowSpec(state=S.IDLE, state_transition_timestamp=now, version=None)
            assert not await deposed.write_shadow(seen, spec=old, annotations={})
            (after,) = await shadows(kube, "late-0")
            assert after.spec.state is S.STAGED_AND_PERFORMED_UPDATE
            # Out of time: even a write on the freshest view is not sent.
            await eventually(lambda: _true(deposed.shadows()[0].spec.state is S.STAGED_AND_PERFORMED_UPDATE))
            left[0] = 0.0
            assert not await deposed.write_shadow(deposed.shadows()[0], spec=old, annotations={})
            assert not await deposed.delete_shadow(deposed.shadows()[0])
            (still,) = await shadows(kube, "late-0")
            assert still.spec == after.spec
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)


async def _set(event: asyncio.Event) -> bool:
    return event.is_set()


async def _true(value: bool) -> bool:
    return value


# --- replicas of `run`, side by side ----------------------------------------------------------------------


class Replicas:
    """`brupop.controller.main.run` replicas in this process, each with its own identity and metrics port."""

    def __init__(self, config: KubeConfig, env: dict[str, str]) -> None:
        self._config = config
        self._env = env
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ports: dict[str, int] = {}

    def start(self, identity: str) -> None:
        settings = ControllerSettings.from_env(self._env, now=datetime.now(UTC))
        self.stops[identity] = asyncio.Event()
        self.ports[identity] = free_port()
        self.tasks[identity] = asyncio.create_task(
            run(
                settings,
                self._config,
                namespace=NAMESPACE,
                identity=identity,
                stop=self.stops[identity],
                metrics_port=self.ports[identity],
            )
        )

    async def stop(self, identity: str) -> None:
        """Stop one replica as SIGTERM does; it must be done within 30 s (and have released its Lease)."""
        self.stops[identity].set()
        done, _ = await asyncio.wait([self.tasks[identity]], timeout=30)
        assert done, f"{identity} did not stop within 30 s of being asked to"
        self.tasks[identity].result()

    async def metric(self, identity: str, name: str) -> float | None:
        """A metric's value on the replica's endpoint (None while it does not answer or has none)."""
        async with httpx.AsyncClient() as http:
            try:
                text = (await http.get(f"http://127.0.0.1:{self.ports[identity]}/metrics")).text
            except httpx.TransportError:
                return None
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    async def close(self) -> None:
        for stop in self.stops.values():
            stop.set()
        _, stuck = await asyncio.wait(self.tasks.values(), timeout=30)
        for task in stuck:  # a replica that ignored its stop (reported by `stop`): do not hang the session
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@contextlib.asynccontextmanager
async def replicas(cluster: ClusterState, env: dict[str, str], *identities: str) -> AsyncIterator[Replicas]:
    group = Replicas(await controller_identity(cluster), env)
    for identity in identities:
        group.start(identity)
    try:
        yield group
    finally:
        await group.close()


async def started_at(kube: KubeClient, node: str) -> datetime | None:
    (found,) = await shadows(kube, node)
    stamp = found.spec.state_transition_timestamp
    return stamp.instant if found.spec.state is not S.IDLE and stamp is not None else None


# --- one-shot triggers across leaders (item 3) ----------------------------------------------------------


@pytest.mark.integration
async def test_a_standby_never_replays_a_trigger_that_already_drained(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    env = {
        "MAX_CONCURRENT_UPDATE": "1",
        "SCHEDULER_CRON_EXPRESSION": "*/30 * * * * * *",
        "SCHEDULER_TIMEZONE": "UTC",
    }
    schedule = ControllerSettings.from_env(env, now=datetime.now(UTC)).schedule
    assert schedule.kind is ScheduleKind.TRIGGER  # fires at :00 and :30 of every minute
    await create_fleet(kube, ["rp-0"])
    async with replicas(cluster, env, "rp-a", "rp-b") as group:  # rp-b starts before any trigger fires
        first = await eventually(lambda: _holder(kube), what="a leader")
        standby = next(name for name in group.tasks if name != first)
        async with watching(kube, "rp-"):
            await eventually(lambda: all_done(kube, "rp-", 1), within=60, what="the trigger's rollout")
        await eventually(
            lambda: _equals(group.metric(first, "brupop_update_window_open"), 0.0),
            what="the trigger to drain",
        )
        # Keep well clear of the next trigger, so that a start now could only be a replay.
        clear = await eventually(lambda: _clear_of(schedule, seconds=15), within=40, what="a quiet time")
        await create_fleet(kube, ["rp-late"])
        await group.stop(first)  # releases the Lease: the standby leads at once
        await eventually(lambda: _holder(kube, standby), within=10, what="the standby to lead")
        assert datetime.now(UTC) < clear, "the standby led after the next trigger: a replay would not show"
        begun = await eventually(lambda: started_at(kube, "rp-late"), within=60, what="rp-late to start")
    assert begun >= clear, f"rp-late started at {begun}, before the next trigger at {clear}: a replay"


async def _equals(value: Awaitable[float | None], wanted: float) -> bool:
    return await value == wanted


async def _clear_of(schedule: Schedule, *, seconds: float) -> datetime | None:
    """The next fire time, once it is at least `seconds` away."""
    now = datetime.now(UTC)
    fire = schedule.next_fire_after(now)
    assert fire is not None
    return fire if (fire - now).total_seconds() >= seconds else None


@pytest.mark.integration
async def test_a_new_leader_carries_on_with_the_rollout_of_a_trigger_that_fired_before_it_started(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    fire = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    yearly = f"{fire.second} {fire.minute} {fire.hour} {fire.day} {fire.month} *"  # next: a year on
    env = {"MAX_CONCURRENT_UPDATE": "1", "SCHEDULER_CRON_EXPRESSION": yearly, "SCHEDULER_TIMEZONE": "UTC"}
    await create_fleet(kube, ["ct-0", "ct-1"])
    async with replicas(cluster, env, "ct-a") as group:
        await eventually(lambda: _holder(kube, "ct-a"), what="ct-a to lead")
        # The trigger fires; ct-a starts one node. Its agent is away, so the rollout stays open.
        await eventually(lambda: _any_started(kube, "ct-"), within=30, what="the trigger to start a node")
        await group.stop("ct-a")
        group.start("ct-b")  # a replica started after the trigger fired (a restarted pod)
        await eventually(lambda: _holder(kube, "ct-b"), within=10, what="ct-b to lead")
        async with watching(kube, "ct-"):  # the agents come back: ct-b must go on to the second node
            await eventually(lambda: all_done(kube, "ct-", 2), within=60, what="both nodes updated")


async def _any_started(kube: KubeClient, prefix: str) -> bool:
    return any(s.spec.state is not S.IDLE for s in await shadows(kube, prefix))


# --- a kube-apiserver that restarts (item 7) ------------------------------------------------------------


@pytest.mark.integration
async def test_the_controller_rides_out_a_kube_apiserver_restart(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["rs-0"])
    # rs-0 failed once; its back-off ends in the middle of the outage below, so the controller's pass
    # writes while the kube-apiserver is down (and its Lease renewals fail for longer than the deadline).
    due = datetime.now(UTC) + timedelta(seconds=8)
    failure = ShadowStatus(
        current_version="1.0.0",
        target_version="1.1.0",
        current_state=S.IDLE,
        crash_count=0,
        state_transition_failure_timestamp=Timestamp.from_datetime(due - timedelta(minutes=2)),
    )
    await set_status(kube, "rs-0", failure)
    async with replicas(cluster, {"MAX_CONCURRENT_UPDATE": "1"}, "rs-a") as group:
        await eventually(lambda: _holder(kube, "rs-a"), what="rs-a to lead")
        await asyncio.to_thread(restart_component, cluster, "kube-apiserver", down_for=15)
        assert not group.tasks["rs-a"].done(), "the controller died while the kube-apiserver was down"
        begun = await eventually(lambda: started_at(kube, "rs-0"), within=60, what="rs-0 to start")
        assert begun >= due
        assert not group.tasks["rs-a"].done()


# --- SIGTERM while events stream (item 25) --------------------------------------------------------------


async def _churn(kube: KubeClient, node: str) -> None:
    """Status changes to one shadow as fast as the API takes them, each waking the controller (no update on
    offer, so there is nothing to write back)."""
    for turn in itertools.count():
        version = "1.0.0" if turn % 2 else "1.0.1"
        idle = ShadowStatus(
            current_version=version, target_version=version, current_state=S.IDLE, crash_count=0
        )
        with contextlib.suppress(ApiError):
            await set_status(kube, node, idle)


@pytest.mark.integration
async def test_sigterm_always_stops_a_controller_process_and_releases_its_lease(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    """A regression check in a real process. The race it guards against (3.11's wait_for swallowing a
    cancellation that arrives as the loop wakes up) has a window of microseconds per event, so this test
    rarely catches it; `test_cancelling_the_loop_is_never_lost_when_a_wake_up_arrives_at_the_same_moment`
    reproduces it deterministically."""
    await prepare(kube)
    await install_rbac(kube)
    nodes = [f"sig-{i}" for i in range(8)]
    await create_fleet(kube, nodes, target="1.0.0")
    token = await service_account_token(kube, CONTROLLER_SA)
    kubeconfig = token_kubeconfig(cluster, tmp_path / "controller.kubeconfig", token)
    churn = asyncio.gather(*(_churn(kube, node) for node in nodes))  # hundreds of events a second
    try:
        for attempt in range(20):
            identity = f"sig-controller-{attempt}"
            code, log = await _lead_then_sigterm(kubeconfig, identity, tmp_path)
            assert code == 0, log[-2000:]
            assert await _holder(kube) is None, f"{identity} exited without releasing the Lease"
    finally:
        churn.cancel()
        await asyncio.gather(churn, return_exceptions=True)


async def _lead_then_sigterm(kubeconfig: Path, identity: str, logs: Path) -> tuple[int, str]:
    """Start `brupop controller`, SIGTERM it once it reconciles; its exit code and log."""
    log = logs / f"{identity}.log"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "KUBECONFIG": str(kubeconfig),
        "MAX_CONCURRENT_UPDATE": "1",
        "BRUPOP_NAMESPACE": NAMESPACE,
        "POD_NAME": identity,
        "CONTROLLER_INTERNAL_PORT": str(free_port()),
        "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
        "LOGGING_FORMATTER": "json",
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "brupop", "controller", env=env, stdout=out, stderr=out
        )
    try:
        await eventually(lambda: _logged(log, "leading: reconciling"), within=60, what=f"{identity} to lead")
        process.send_signal(signal.SIGTERM)
        code = await eventually(lambda: _exited(process), within=30, what=f"{identity} to exit on SIGTERM")
    finally:
        await stop_process(process, grace=1)
    return code, log.read_text()


async def _logged(log: Path, event: str) -> bool:
    return f'"event": "{event}"' in log.read_text()


async def _exited(process: asyncio.subprocess.Process) -> int | None:
    return process.returncode


# --- shadows the controller cannot read (items 9 and 15) ------------------------------------------------


def _crd_without_timestamp_checks() -> dict[str, Any]:
    """The shadow CRD as clusters installed before it checked timestamps have it: what they stored then may
    hold a transition time brupop cannot read."""
    crd = crd_for_local_use()
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        for check in ("pattern", "x-kubernetes-validations"):
            spec["state_transition_timestamp"].pop(check, None)
    return crd


async def _busy(kube: KubeClient, node: str, *, stamp: str) -> None:
    """The shadow of a node in the middle of its reboot, with a transition time as given, stored before the
    CRD checked timestamps (then the CRD of today is back)."""
    spec = {"state": "RebootedIntoUpdate", "version": "1.1.0", "state_transition_timestamp": stamp}
    await install_crd(kube, _crd_without_timestamp_checks())

    async def stored() -> bool:  # the API server takes a moment to validate with the new schema
        try:
            await kube.merge_patch(SHADOWS, shadow_name(node), {"spec": spec}, namespace=NAMESPACE)
        except ApiError as err:
            if err.status != 422:
                raise
            return False
        return True

    try:
        await eventually(stored, what="the CRD without timestamp checks to be in effect")
    finally:
        await install_crd(kube, crd_for_local_use())
    busy = ShadowStatus(
        current_version="1.0.0",
        target_version="1.1.0",
        current_state=S.STAGED_AND_PERFORMED_UPDATE,
        crash_count=0,
    )
    await set_status(kube, node, busy)


async def _events(
    kube: KubeClient, reason: str, about: str, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Events with `reason` regarding objects named `about`*."""
    items, _ = await kube.list(EVENTS, namespace=namespace)
    return [e for e in items if e.get("reason") == reason and e["regarding"]["name"].startswith(about)]


async def _ready(port: int) -> bool:
    async with httpx.AsyncClient() as http:
        with contextlib.suppress(httpx.TransportError):
            return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    return False


@pytest.mark.integration
async def test_a_shadow_with_a_timestamp_at_the_end_of_time_only_affects_itself(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["eot-0", "eot-1", "eot-2"])
    await _busy(kube, "eot-0", stamp="9999-12-31T23:59:59-23:59")  # valid RFC 3339, in year 10000 in UTC
    async with replicas(cluster, {"MAX_CONCURRENT_UPDATE": "2"}, "eot-a") as group:
        await eventually(lambda: _ready(group.ports["eot-a"]), within=30, what="the controller to be ready")
        await eventually(
            lambda: _equals(group.metric("eot-a", "brupop_shadows_invalid"), 1.0), what="the metric"
        )
        (reported,) = await eventually(
            lambda: nonempty(_events(kube, "InvalidShadow", "brs-eot-")),
            what="an InvalidShadow Event",
        )
        assert reported["regarding"]["name"] == "brs-eot-0"
        assert reported["type"] == "Warning"
        # The unreadable shadow holds one of the two slots: exactly one other node starts.
        await eventually(lambda: _started(kube, "eot-", 1), what="one node to start")
        assert await _equals(group.metric("eot-a", "brupop_nodes_updating"), 2.0)


async def _started(kube: KubeClient, prefix: str, count: int) -> bool:
    """Whether `count` shadows brs-<prefix>* are asked to stage (read raw: some may not parse)."""
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    wanted = S.STAGED_AND_PERFORMED_UPDATE.value
    found = [
        o for o in items if o["metadata"]["name"].startswith(f"brs-{prefix}") and o["spec"]["state"] == wanted
    ]
    return len(found) == count


@pytest.mark.integration
async def test_an_unreadable_shadow_counts_as_a_node_updating(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["unr-0", "unr-1"])
    await _busy(kube, "unr-0", stamp="yesterday")  # schema-valid (a string), but not a time
    async with controller(cluster, {"MAX_CONCURRENT_UPDATE": "1"}, loop=False) as reconciler:
        await reconciler.reconcile_once()
        (waiting,) = await shadows(kube, "unr-1")
        assert waiting.spec.state is S.IDLE  # unr-0 may be rebooting: its slot is not free
        (reported,) = await eventually(
            lambda: nonempty(_events(kube, "InvalidShadow", "brs-unr-")),
            what="an InvalidShadow Event",
        )
        assert reported["regarding"]["name"] == "brs-unr-0"
        # Fixed: the node it tracks turns out to be idle; its slot goes to unr-1.
        fixed = {"state": "Idle", "version": None, "state_transition_timestamp": None}
        await kube.merge_patch(SHADOWS, shadow_name("unr-0"), {"spec": fixed}, namespace=NAMESPACE)
        idle = ShadowStatus(
            current_version="1.1.0", target_version="1.1.0", current_state=S.IDLE, crash_count=0
        )
        await set_status(kube, "unr-0", idle)
        await eventually(lambda: _pass_then(reconciler, _started(kube, "unr-1", 1)), what="unr-1 to start")


async def _pass_then(reconciler: Reconciler, check: Awaitable[bool]) -> bool:
    """One pass (once the watch has brought the latest change, the pass acts on it), then the check."""
    await reconciler.reconcile_once()
    return await check


# --- nodes stuck mid-cycle (item 18) --------------------------------------------------------------------


@pytest.mark.integration
async def test_a_node_whose_agent_never_acts_is_reported_stuck_and_keeps_its_slot(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await create_fleet(kube, ["stk-0", "stk-1"])
    env = {"MAX_CONCURRENT_UPDATE": "1", "STUCK_AFTER_STAGED_AND_PERFORMED_UPDATE": "3"}
    async with replicas(cluster, env, "stk-a") as group:  # no agents: stk-0 starts and never stages
        await eventually(lambda: _equals(group.metric("stk-a", "brupop_nodes_stuck"), 1.0), what="stuck")
        (on_shadow,) = await eventually(
            lambda: nonempty(_events(kube, "UpdateStuck", "brs-stk-")),
            what="an Event on the shadow",
        )
        (on_node,) = await eventually(
            lambda: nonempty(_events(kube, "UpdateStuck", "stk-", "default")),
            what="one on the Node",
        )
    assert on_shadow["regarding"]["name"] == "brs-stk-0"
    assert (on_node["regarding"]["kind"], on_node["regarding"]["name"]) == ("Node", "stk-0")
    assert on_node["type"] == on_shadow["type"] == "Warning"
    assert "StagedAndPerformedUpdate" in on_shadow["note"]
    (waiting,) = await shadows(kube, "stk-1")
    assert waiting.spec.state is S.IDLE  # the stuck node kept its slot


# --- nodes that leave brupop (items 4 and 26): the real DaemonSet, apiserver and agents -------------------

AGENT_TIMINGS = AgentOptions(update_check_interval=1.0, reboot_timeout=30.0)


@contextlib.asynccontextmanager
async def operator(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path, names: list[str], *, offer: bool = True
) -> AsyncIterator[Fleet]:
    """Labelled kwok nodes with the agent DaemonSet's pods, one simulated host each (offering 1.1.0 when
    `offer`; a reboot keeps a node down for two seconds), the brupop apiserver, and a real agent per node in
    this process with its pod's identity."""
    await install_rbac(kube)
    await install_agents(kube)
    await create_nodes(kube, names, labels=BRUPOP_LABELS)
    hosts = Fleet(tmp_path / "hosts", time_scale=0.1, timings=Timings(prepare=10, reboot=20))
    if offer:
        hosts.repository.offer("1.1.0", variant="aws-k8s-1.29", arch="x86_64")
    for name in names:
        await hosts.add(name, version="1.0.0")
    try:
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(brupop_apiserver(cluster, kube))
            for name in names:
                await stack.enter_async_context(
                    node_agent(
                        cluster, kube, server, node=name, socket=hosts.socket(name), options=AGENT_TIMINGS
                    )
                )
            yield hosts
    finally:
        await hosts.stop()


class LeavingMonitor:
    """Checks, on every watch event of Nodes and shadows, that while `leaving` is cordoned its shadow
    exists and `waiting` has not started (the slot is held)."""

    def __init__(self, kube: KubeClient, *, leaving: str, waiting: str) -> None:
        self._kube = kube
        self._leaving = leaving
        self._waiting = waiting
        self.cordoned = False
        self.shadows: dict[str, BottlerocketShadow] = {}
        self.violations: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _check(self) -> None:
        if not self.cordoned:
            return
        if shadow_name(self._leaving) not in self.shadows:
            self.violations.append(f"{self._leaving} is cordoned but its shadow is gone")
        other = self.shadows.get(shadow_name(self._waiting))
        if other is not None and other.spec.state is not S.IDLE:
            self.violations.append(f"{self._waiting} started while {self._leaving} is cordoned")

    async def _nodes(self) -> None:
        async for _, node in watch_events(self._kube, NODES):
            if node["metadata"]["name"] == self._leaving:
                self.cordoned = bool((node.get("spec") or {}).get("unschedulable"))
                self._check()

    async def _shadows(self) -> None:
        async for kind, obj in watch_events(self._kube, SHADOWS, NAMESPACE):
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.shadows.pop(name, None)
            else:
                self.shadows[name] = BottlerocketShadow.from_wire(obj)
            self._check()

    async def __aenter__(self) -> LeavingMonitor:
        self._tasks = [asyncio.create_task(self._nodes()), asyncio.create_task(self._shadows())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _cordoned(kube: KubeClient, node: str) -> bool:
    return bool((await kube.get(NODES, node)).get("spec", {}).get("unschedulable"))


async def _agent_pods(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    items, _ = await kube.list(
        PODS,
        namespace=NAMESPACE,
        label_selector=f"{COMPONENT_LABEL}={AGENT_COMPONENT}",
        field_selector=f"spec.nodeName={node}",
    )
    return items


async def _gone(kube: KubeClient, node: str) -> bool:
    """The node left brupop for good: schedulable, no in-cycle label, no agent pod, no shadow."""
    found = await kube.get(NODES, node)
    labels = found["metadata"].get("labels") or {}
    return (
        not found.get("spec", {}).get("unschedulable")
        and IN_CYCLE_LABEL not in labels
        and not await _agent_pods(kube, node)
        and not await shadows(kube, node)
    )


UNLABEL = {"metadata": {"labels": {UPDATER_INTERFACE_LABEL: None}}}


@pytest.mark.integration
async def test_a_node_unlabelled_mid_update_keeps_its_slot_and_agent_and_ends_uncordoned(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await prepare(kube)
    async with (
        operator(cluster, kube, tmp_path, ["lv-0", "lv-1"]) as hosts,
        LeavingMonitor(kube, leaving="lv-0", waiting="lv-1") as monitor,
        controller(cluster, {"MAX_CONCURRENT_UPDATE": "1"}),
    ):
        # lv-0 goes first (by name). Once it is cordoned for its reboot, it leaves brupop.
        await eventually(lambda: _cordoned(kube, "lv-0"), within=90, what="lv-0 to be cordoned")
        await kube.merge_patch(NODES, "lv-0", UNLABEL)
        # Its cycle is finished, not abandoned: rebooted into 1.1.0 and uncordoned; then the in-cycle label,
        # the agent pod (the DaemonSet controller deletes it) and the shadow go.
        await eventually(lambda: _gone(kube, "lv-0"), within=90, what="lv-0 to finish and leave")
        assert hosts["lv-0"].version == "1.1.0"
        await eventually(lambda: all_done(kube, "lv-1", 1), within=90, what="lv-1 to update next")
    assert monitor.violations == []


class ShadowChurn:
    """Counts the creations and deletions of one shadow, seen on a watch."""

    def __init__(self, kube: KubeClient, name: str) -> None:
        self._kube = kube
        self._name = name
        self.created = 0
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None
        self._listed = asyncio.Event()

    async def _follow(self) -> None:
        _, version = await self._kube.list(SHADOWS, namespace=NAMESPACE)
        self._listed.set()
        async for kind, obj in self._kube.watch(SHADOWS, namespace=NAMESPACE, resource_version=version):
            if obj.get("metadata", {}).get("name") == self._name:
                self.created += kind == "ADDED"
                self.deleted += kind == "DELETED"

    async def __aenter__(self) -> ShadowChurn:
        self._task = asyncio.create_task(self._follow())
        await self._listed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.integration
async def test_a_node_that_leaves_brupop_loses_its_shadow_once_without_a_fight(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await prepare(kube)
    async with (
        operator(cluster, kube, tmp_path, ["ft-0"], offer=False),
        controller(cluster, {"MAX_CONCURRENT_UPDATE": "1"}),
    ):
        await eventually(lambda: all_done(kube, "ft-0", 1, version="1.0.0"), within=60, what="ft-0 settled")
        async with ShadowChurn(kube, shadow_name("ft-0")) as churn:
            await kube.merge_patch(NODES, "ft-0", UNLABEL)
            await eventually(lambda: _gone(kube, "ft-0"), within=60, what="ft-0's agent pod and shadow to go")
            # The agent (still running here after its pod went) has seen its Node change and its shadow go.
            await eventually(lambda: _true(churn.deleted >= 1), what="the shadow's deletion on the watch")
    assert (churn.created, churn.deleted) == (0, 1)


@pytest.mark.integration
async def test_the_apiserver_creates_no_shadow_for_an_unmanaged_node_or_a_terminating_agent(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    (managed,) = await create_nodes(kube, ["cr-in"], labels=BRUPOP_LABELS)
    (unmanaged,) = await create_nodes(kube, ["cr-out"])
    async with brupop_apiserver(cluster, kube) as server, server.client() as http:
        # An agent pod on a node without the opt-in label: not managed, 403, nothing created.
        stray = await _unadoptable_agent_pod(kube, "cr-out")
        answer = await _create(http, unmanaged, await agent_token(kube, stray))
        assert answer.status_code == 403
        assert "not managed by brupop" in answer.json()["error"]
        # In a cycle (the in-cycle label), it is managed again: its agent may finish the cycle.
        await kube.merge_patch(NODES, "cr-out", {"metadata": {"labels": {IN_CYCLE_LABEL: "true"}}})
        assert (await _create(http, unmanaged, await agent_token(kube, stray))).status_code == 200
        # A terminating agent pod (a finalizer keeps it terminating) may not create.
        pod = await agent_pod(kube, "cr-in")
        token = await agent_token(kube, pod)
        finalizer = {"metadata": {"finalizers": ["brupop.test/hold"]}}
        await kube.merge_patch(PODS, pod["metadata"]["name"], finalizer, namespace=NAMESPACE)
        await kube.delete(PODS, pod["metadata"]["name"], namespace=NAMESPACE)
        try:
            refused = await eventually(
                lambda: _refused(http, managed, token), what="the create to be refused"
            )
            assert "terminating" in refused
        finally:
            await kube.merge_patch(
                PODS, pod["metadata"]["name"], {"metadata": {"finalizers": None}}, namespace=NAMESPACE
            )


CONFIG_MAPS = Resource("", "v1", "configmaps", namespaced=True)


async def _unadoptable_agent_pod(kube: KubeClient, node: str) -> dict[str, Any]:
    """A pod with the agent's labels and service account on `node`, owned by a ConfigMap so that the agent
    DaemonSet's controller does not adopt it (and delete it, the node not matching its affinity)."""
    owner = await kube.create(
        CONFIG_MAPS, {"metadata": {"name": f"owner-{node}", "namespace": NAMESPACE}}, namespace=NAMESPACE
    )
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"agent-like-{node}",
            "namespace": NAMESPACE,
            "labels": {COMPONENT_LABEL: AGENT_COMPONENT},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": AGENT_SA,
            "nodeName": node,
            "containers": [{"name": "brupop", "image": "brupop:0.1.0"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }
    return await kube.create(PODS, body, namespace=NAMESPACE)


async def _create(http: httpx.AsyncClient, node: dict[str, Any], token: str) -> httpx.Response:
    headers = {
        "BrupopNodeName": node["metadata"]["name"],
        "BrupopNodeUid": node["metadata"]["uid"],
        "BrupopK8sAuthToken": token,
    }
    return await http.post("/bottlerocket-node-resource", headers=headers)


async def _refused(http: httpx.AsyncClient, node: dict[str, Any], token: str) -> str | None:
    answer = await _create(http, node, token)
    return str(answer.json()["error"]) if answer.status_code == 403 else None
