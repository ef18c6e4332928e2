"""The agent on the real control plane, with the brupop apiserver and a simulated host; the test plays
the controller (writing `spec`). The agent is killed and started afresh at every step."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brupop.agent.agent import AgentOptions
from brupop.kube.client import NODES, SHADOWS, KubeClient
from brupop.models.constants import NAMESPACE, shadow_name
from brupop.models.shadow import BottlerocketShadow, ShadowState
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.kubetools import BRUPOP_LABELS, create_nodes, eventually
from integ.operator import brupop_apiserver, install_agents, install_rbac, node_agent

S = ShadowState
OLD, NEW = "1.0.0", "1.1.0"
FAST = AgentOptions(update_check_interval=1.0, reboot_timeout=30.0)


@contextlib.asynccontextmanager
async def hosts(tmp_path: Path, *names: str) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path / "hosts", time_scale=0.01, timings=Timings(prepare=20, reboot=20))
    fleet.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    for name in names:
        await fleet.add(name, version=OLD)
    try:
        yield fleet
    finally:
        await fleet.stop()


async def shadow_of(kube: KubeClient, node: str) -> BottlerocketShadow | None:
    items, _ = await kube.list(
        SHADOWS, namespace=NAMESPACE, field_selector=f"metadata.name={shadow_name(node)}"
    )
    return BottlerocketShadow.from_wire(items[0]) if items else None


async def reached(kube: KubeClient, node: str, state: ShadowState, version: str | None = None) -> bool:
    shadow = await shadow_of(kube, node)
    return (
        shadow is not None
        and shadow.status is not None
        and shadow.status.current_state is state
        and (version is None or shadow.status.current_version == version)
    )


async def want(kube: KubeClient, node: str, state: ShadowState) -> None:
    spec = {"state": state.value, "version": NEW if state is not S.IDLE else None}
    await kube.merge_patch(SHADOWS, shadow_name(node), {"spec": spec}, namespace=NAMESPACE)


@pytest.mark.integration
async def test_one_agent_walks_the_whole_update_surviving_restarts(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    await create_nodes(kube, ["ag-0"], labels=BRUPOP_LABELS)
    cordons: list[tuple[bool, ShadowState | None]] = []

    async def watch_node() -> None:
        _, version = await kube.list(NODES, field_selector="metadata.name=ag-0")
        async for _, node in kube.watch(NODES, resource_version=version, field_selector="metadata.name=ag-0"):
            shadow = await shadow_of(kube, "ag-0")
            cordons.append((bool(node["spec"].get("unschedulable")), shadow.spec.state if shadow else None))

    watcher = asyncio.create_task(watch_node())
    async with brupop_apiserver(cluster, kube) as server, hosts(tmp_path, "ag-0") as fleet:
        socket = fleet.socket("ag-0")
        # A fresh agent creates its shadow and reports Idle with the version the host offers.
        async with node_agent(cluster, kube, server, node="ag-0", socket=socket, options=FAST):
            await eventually(lambda: _target(kube, "ag-0", NEW), within=30, what="Idle with target 1.1.0")
        for state in (S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE, S.IDLE):
            await want(kube, "ag-0", state)
            async with node_agent(cluster, kube, server, node="ag-0", socket=socket, options=FAST):
                version = NEW if state is not S.STAGED_AND_PERFORMED_UPDATE else OLD
                await eventually(
                    lambda s=state, v=version: reached(kube, "ag-0", s, v),  # type: ignore[misc]
                    within=60,
                    what=f"{state.value}",
                )
        assert fleet["ag-0"].version == NEW
        assert fleet["ag-0"].boots == 1
    watcher.cancel()
    final = await kube.get(NODES, "ag-0")
    assert not final["spec"].get("unschedulable")
    assert any(cordoned for cordoned, _ in cordons)
    assert all(state is S.REBOOTED_INTO_UPDATE for cordoned, state in cordons if cordoned)
    shadow = await shadow_of(kube, "ag-0")
    assert shadow is not None
    assert shadow.status is not None
    assert (shadow.status.crash_count, shadow.status.target_version) == (0, NEW)


async def _target(kube: KubeClient, node: str, target: str) -> bool:
    shadow = await shadow_of(kube, node)
    return (
        shadow is not None
        and shadow.status is not None
        and shadow.status.current_state is S.IDLE
        and shadow.status.target_version == target
        and shadow.status.current_version == OLD
    )


@pytest.mark.integration
async def test_a_rolled_back_reboot_is_reported_as_an_error(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    await create_nodes(kube, ["ag-rb"], labels=BRUPOP_LABELS)
    async with brupop_apiserver(cluster, kube) as server, hosts(tmp_path, "ag-rb") as fleet:
        fleet["ag-rb"].faults.rolls_back = True
        async with node_agent(
            cluster, kube, server, node="ag-rb", socket=fleet.socket("ag-rb"), options=FAST
        ):
            await eventually(lambda: _target(kube, "ag-rb", NEW), within=30, what="Idle with target")
            await want(kube, "ag-rb", S.STAGED_AND_PERFORMED_UPDATE)
            await eventually(lambda: reached(kube, "ag-rb", S.STAGED_AND_PERFORMED_UPDATE), within=30)
            await want(kube, "ag-rb", S.REBOOTED_INTO_UPDATE)
            await eventually(lambda: reached(kube, "ag-rb", S.ERROR_RESET, OLD), within=60, what="ErrorReset")
            shadow = await shadow_of(kube, "ag-rb")
            assert shadow is not None
            assert shadow.status is not None
            assert shadow.status.crash_count == 1
            assert shadow.status.state_transition_failure_timestamp is not None
            # The controller sends it back to Idle; the agent uncordons and reports Idle.
            await want(kube, "ag-rb", S.IDLE)
            await eventually(lambda: reached(kube, "ag-rb", S.IDLE, OLD), within=30, what="recovered to Idle")
        node = await kube.get(NODES, "ag-rb")
        assert not node["spec"].get("unschedulable")
