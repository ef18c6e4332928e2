"""The controller against the real API server, with the test playing the agents (writing `status`)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from brupop.controller.cluster import ClusterFleet
from brupop.controller.main import LEASE_NAME, run
from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import EVENTS, LEASES, NODES, SHADOWS, ApiError, KubeClient
from brupop.kube.config import KubeConfig
from brupop.models.constants import NAMESPACE, shadow_name
from brupop.models.shadow import ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp
from integ.cluster import ClusterState
from integ.fleet import create_fleet, prepare, set_status, shadows, watching
from integ.kubetools import admin, eventually
from integ.operator import config_as, install_rbac, service_account_token

S = ShadowState


@contextlib.asynccontextmanager
async def controller(
    cluster: ClusterState, env: dict[str, str], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> AsyncIterator[Reconciler]:
    settings = ControllerSettings.from_env(env, now=clock())
    async with KubeClient(await controller_identity(cluster)) as kube:
        reconciler: list[Reconciler] = []
        fleet = ClusterFleet(
            kube=kube,
            namespace=NAMESPACE,
            on_change=lambda: reconciler and reconciler[0].poke(),
            instance="test",
        )
        reconciler.append(
            Reconciler(
                view=fleet,
                writer=fleet,
                settings=settings,
                metrics=FleetMetrics(CollectorRegistry()),
                clock=clock,
            )
        )
        tasks = [
            asyncio.create_task(fleet.shadow_informer.run()),
            asyncio.create_task(fleet.node_informer.run()),
        ]
        await fleet.shadow_informer.ready.wait()
        await fleet.node_informer.ready.wait()
        tasks.append(asyncio.create_task(reconciler[0].run()))
        try:
            yield reconciler[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


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
