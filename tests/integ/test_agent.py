"""The agent on the real control plane, with the brupop apiserver and simulated hosts as strict as
Bottlerocket's (socket root:274 mode 0660, a shutdown that takes time, a boot ID per boot). Each agent is
`brupop agent` in a process of its own, run as its DaemonSet pod would be (the image's user, the pod's
groups, environment and tokens: `integ.agent_process`); a restart is SIGKILL. The test plays the
controller (writing `spec`)."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brupop.agent.settings import AgentSettings
from brupop.deploy import AGENT_SA
from brupop.kube.client import CORE_EVENTS, NODES, PODS, SHADOWS, ApiError, KubeClient
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE, shadow_name
from brupop.models.shadow import BottlerocketShadow, ShadowState
from integ.agent_process import AgentProcess, agent_process
from integ.build import build
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.helm import chart_objects
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.kubetools import BRUPOP_LABELS, create_nodes, create_service_account, ensure_namespace, eventually
from integ.operator import KINDS, RunningApiserver, apply, brupop_apiserver, install_agents, install_rbac
from integ.podenv import container_env
from integ.unprivileged import remove, shared_directory

S = ShadowState
Obj = dict[str, Any]
OLD, NEW = "1.0.0", "1.1.0"
FAST = {"UPDATE_CHECK_INTERVAL_SECONDS": "1"}
MISCONFIGURED = "cannot use the host API: fix the agent's configuration"


@contextlib.asynccontextmanager
async def hosts(*names: str, shutdown: float = 100) -> AsyncIterator[Fleet]:
    """Simulated hosts (a 20 s download takes 0.2 s; by default the API answers 1 s after accepting a
    reboot), in a directory the agent's user may enter."""
    directory = shared_directory("brupop-hosts-")
    fleet = Fleet(directory, time_scale=0.01, timings=Timings(prepare=20, reboot=20, shutdown=shutdown))
    fleet.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    for name in names:
        await fleet.add(name, version=OLD)
    try:
        yield fleet
    finally:
        await fleet.stop()
        remove(directory)


@contextlib.asynccontextmanager
async def agent(
    cluster: ClusterState,
    kube: KubeClient,
    server: RunningApiserver,
    fleet: Fleet,
    node: str,
    **options: Any,
) -> AsyncIterator[AgentProcess]:
    env = {**FAST, **options.pop("env", {})}
    async with agent_process(
        cluster,
        kube,
        server,
        node=node,
        socket=fleet.socket(node),
        boot_id_file=fleet.boot_id_file(node),
        env=env,
        **options,
    ) as process:
        yield process


async def installed(kube: KubeClient, *nodes: str) -> None:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    await create_nodes(kube, list(nodes), labels=BRUPOP_LABELS)


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


async def idle_offering_new(kube: KubeClient, node: str) -> BottlerocketShadow | None:
    shadow = await shadow_of(kube, node)
    status = shadow.status if shadow is not None else None
    if status is None or (status.current_state, status.current_version, status.target_version) != (
        S.IDLE,
        OLD,
        NEW,
    ):
        return None
    return shadow


async def want(kube: KubeClient, node: str, state: ShadowState) -> None:
    spec = {"state": state.value, "version": NEW if state is not S.IDLE else None}
    await kube.merge_patch(SHADOWS, shadow_name(node), {"spec": spec}, namespace=NAMESPACE)


@pytest.mark.integration
async def test_one_agent_walks_the_whole_update_surviving_sigkills(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await installed(kube, "ag-0")
    cordons: list[tuple[bool, ShadowState | None]] = []

    async def watch_node() -> None:
        _, version = await kube.list(NODES, field_selector="metadata.name=ag-0")
        async for _, node in kube.watch(NODES, resource_version=version, field_selector="metadata.name=ag-0"):
            shadow = await shadow_of(kube, "ag-0")
            cordons.append((bool(node["spec"].get("unschedulable")), shadow.spec.state if shadow else None))

    watcher = asyncio.create_task(watch_node())
    async with brupop_apiserver(cluster, kube) as server, hosts("ag-0") as fleet:
        # A fresh agent creates its shadow and reports Idle with the version the host offers.
        async with agent(cluster, kube, server, fleet, "ag-0") as process:
            await eventually(lambda: idle_offering_new(kube, "ag-0"), within=60, what="Idle offering 1.1.0")
            process.kill()
        for state in (S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE, S.IDLE):
            await want(kube, "ag-0", state)
            async with agent(cluster, kube, server, fleet, "ag-0") as process:
                version = NEW if state is not S.STAGED_AND_PERFORMED_UPDATE else OLD
                await eventually(
                    lambda s=state, v=version: reached(kube, "ag-0", s, v),  # type: ignore[misc]
                    within=60,
                    what=f"{state.value}",
                )
                process.kill()
        assert (fleet["ag-0"].version, fleet["ag-0"].boots) == (NEW, 1)
    watcher.cancel()
    final = await kube.get(NODES, "ag-0")
    assert not final["spec"].get("unschedulable")
    assert any(cordoned for cordoned, _ in cordons)
    assert all(state is S.REBOOTED_INTO_UPDATE for cordoned, state in cordons if cordoned)
    shadow = await shadow_of(kube, "ag-0")
    assert shadow is not None
    assert shadow.status is not None
    assert (shadow.status.crash_count, shadow.status.target_version) == (0, NEW)


async def described_events(cluster: ClusterState, *what: str) -> list[tuple[str, str, str]]:
    """The Events brupop recorded as `kubectl describe` shows them, oldest first: type, reason, message."""
    kubectl = await asyncio.create_subprocess_exec(
        str(build() / "kubectl"),
        "--kubeconfig",
        cluster.kubeconfig,
        "describe",
        *what,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await kubectl.communicate()
    assert kubectl.returncode == 0, what
    table = out.decode().partition("\nEvents:\n")[2]
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=4) for line in table.splitlines()[2:]]
    return [(row[0], row[1], row[4]) for row in rows if len(row) == 5 and row[3].startswith("brupop")]


async def recorded_events(kube: KubeClient, namespace: str, name: str) -> list[Obj]:
    """brupop's Events about the object `name` in `namespace`, by their `eventTime`."""
    items, _ = await kube.list(CORE_EVENTS, namespace=namespace, field_selector=f"involvedObject.name={name}")
    ours = [e for e in items if str(e.get("reportingComponent", "")).startswith("brupop")]
    return sorted(ours, key=lambda e: str(e["eventTime"]))


STORY = [
    (
        "Normal",
        "UpdateStaged",
        f"Bottlerocket {NEW} is staged and activated: the node boots it at its next reboot",
    ),
    ("Normal", "Cordoned", "brupop cordoned the node to update it"),
    ("Normal", "Drained", "brupop evicted 0 pod(s) from the node"),
    ("Normal", "Rebooting", f"brupop reboots the node into Bottlerocket {NEW}"),
    ("Normal", "Rebooted", f"the node is back, running Bottlerocket {NEW}"),
    ("Normal", "Uncordoned", "brupop made the node schedulable again after its update"),
    ("Normal", "UpdateSucceeded", f"the node's update to Bottlerocket {NEW} is complete"),
]


@pytest.mark.integration
async def test_kubectl_describe_node_and_brs_tell_the_story_of_one_update(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Issue 18: the agent (with the DaemonSet's RBAC) and the apiserver record each step as an Event on the
    Node and on its shadow."""
    await installed(kube, "ag-story")
    async with (
        brupop_apiserver(cluster, kube) as server,
        hosts("ag-story") as fleet,
        agent(cluster, kube, server, fleet, "ag-story"),
    ):
        await eventually(lambda: idle_offering_new(kube, "ag-story"), within=60, what="Idle offering")
        for state in (S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE, S.IDLE):
            await want(kube, "ag-story", state)
            await eventually(
                lambda s=state: reached(kube, "ag-story", s),  # type: ignore[misc]
                within=60,
                what=state.value,
            )

        for namespace, name, what in (
            ("default", "ag-story", ("node", "ag-story")),
            (NAMESPACE, shadow_name("ag-story"), ("-n", NAMESPACE, "brs", shadow_name("ag-story"))),
        ):

            async def told(w: tuple[str, ...] = what) -> list[tuple[str, str, str]] | None:
                events = await described_events(cluster, *w)
                return events if len(events) >= len(STORY) else None

            shown = await eventually(told, within=30, what=f"the story in kubectl describe {' '.join(what)}")
            assert sorted(shown) == sorted(STORY)
            recorded = await recorded_events(kube, namespace, name)
            assert [(e["type"], e["reason"], e["message"]) for e in recorded] == STORY
            # describe lists them by lastTimestamp (whole seconds; the reboot alone takes more than one)
            second = {e["reason"]: e["lastTimestamp"] for e in recorded}
            order = [second[reason] for _, reason, _ in shown]
            assert order == sorted(order), shown
            assert second["Rebooting"] < second["Rebooted"]


@pytest.mark.integration
async def test_a_rolled_back_reboot_is_reported_as_an_error(cluster: ClusterState, kube: KubeClient) -> None:
    await installed(kube, "ag-rb")
    async with brupop_apiserver(cluster, kube) as server, hosts("ag-rb") as fleet:
        fleet["ag-rb"].faults.rolls_back = True
        async with agent(cluster, kube, server, fleet, "ag-rb"):
            await eventually(lambda: idle_offering_new(kube, "ag-rb"), within=60, what="Idle offering 1.1.0")
            await want(kube, "ag-rb", S.STAGED_AND_PERFORMED_UPDATE)
            await eventually(lambda: reached(kube, "ag-rb", S.STAGED_AND_PERFORMED_UPDATE), within=30)
            await want(kube, "ag-rb", S.REBOOTED_INTO_UPDATE)
            await eventually(lambda: reached(kube, "ag-rb", S.ERROR_RESET, OLD), within=60, what="ErrorReset")
            shadow = await shadow_of(kube, "ag-rb")
            assert shadow is not None
            assert shadow.status is not None
            assert shadow.status.crash_count == 1
            assert shadow.status.state_transition_failure_timestamp is not None
            assert fleet["ag-rb"].boots == 1
            failure = (
                "Warning",
                "UpdateFailed",
                f"the update to Bottlerocket {NEW} failed at RebootedIntoUpdate (failure 1): the host "
                f"came back on {OLD} after rebooting into {NEW}: rolled back",
            )

            async def told() -> bool:
                return failure in await described_events(cluster, "node", "ag-rb")

            await eventually(told, within=30, what="why, in kubectl describe node")
            # The controller sends it back to Idle; the agent uncordons and reports Idle.
            await want(kube, "ag-rb", S.IDLE)
            await eventually(lambda: reached(kube, "ag-rb", S.IDLE, OLD), within=30, what="recovered to Idle")
        node = await kube.get(NODES, "ag-rb")
        assert not node["spec"].get("unschedulable")


@pytest.mark.integration
async def test_a_host_answering_65_seconds_after_accepting_the_reboot_is_not_a_rollback(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await installed(kube, "ag-slow")
    async with brupop_apiserver(cluster, kube) as server, hosts("ag-slow", shutdown=6500) as fleet:
        async with agent(cluster, kube, server, fleet, "ag-slow"):
            await eventually(lambda: idle_offering_new(kube, "ag-slow"), within=60, what="Idle offering")
            await want(kube, "ag-slow", S.STAGED_AND_PERFORMED_UPDATE)
            await eventually(lambda: reached(kube, "ag-slow", S.STAGED_AND_PERFORMED_UPDATE), within=30)
            await want(kube, "ag-slow", S.REBOOTED_INTO_UPDATE)

            async def settled() -> bool:
                return await reached(kube, "ag-slow", S.REBOOTED_INTO_UPDATE, NEW) or await reached(
                    kube, "ag-slow", S.ERROR_RESET
                )

            await eventually(settled, within=120, what="the reboot to end one way or the other")
        assert await reached(kube, "ag-slow", S.REBOOTED_INTO_UPDATE, NEW)
        assert (fleet["ag-slow"].version, fleet["ag-slow"].boots) == (NEW, 1)


@pytest.mark.integration
async def test_without_group_274_the_agent_says_what_to_fix_and_stays_not_ready(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await installed(kube, "ag-perm")
    async with brupop_apiserver(cluster, kube) as server, hosts("ag-perm") as fleet:
        async with agent(cluster, kube, server, fleet, "ag-perm", groups=[]) as process:

            async def told() -> list[dict[str, Any]] | None:
                process.alive()
                return process.logged(MISCONFIGURED) or None

            entry = (await eventually(told, within=60, what="the configuration error"))[0]
            assert "Permission denied" in entry["error"]
            assert "supplementalGroups: [274]" in entry["error"]
            assert not process.logged("will retry")  # not taken for a rebooting host
            readiness = await process.readiness()
            assert readiness is not None
            assert readiness[0] == 503
            assert "supplementalGroups: [274]" in readiness[1]
            shadow = await shadow_of(kube, "ag-perm")  # it could create its shadow, but reports nothing
            assert shadow is not None
            assert shadow.status is None
        # With the DaemonSet's groups (274), the same agent works.
        async with agent(cluster, kube, server, fleet, "ag-perm") as process:
            assert list(process.groups) == [274]
            await eventually(lambda: idle_offering_new(kube, "ag-perm"), within=60, what="Idle offering")
            assert await process.readiness() == (200, "ready\n")
            assert not process.logged(MISCONFIGURED)


@pytest.mark.integration
async def test_a_deleted_shadow_is_created_again_and_gets_a_status(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await installed(kube, "ag-del")
    async with (
        brupop_apiserver(cluster, kube) as server,
        hosts("ag-del") as fleet,
        agent(cluster, kube, server, fleet, "ag-del"),
    ):
        first = await eventually(lambda: idle_offering_new(kube, "ag-del"), within=60, what="Idle offering")
        await kube.delete(SHADOWS, shadow_name("ag-del"), namespace=NAMESPACE)  # kubectl delete brs

        async def recreated() -> BottlerocketShadow | None:
            shadow = await idle_offering_new(kube, "ag-del")
            return shadow if shadow is not None and shadow.metadata["uid"] != first.metadata["uid"] else None

        await eventually(recreated, within=60, what="a new shadow with a status")


@pytest.mark.integration
async def test_an_agent_pod_in_another_namespace_finds_the_apiserver_there(
    cluster: ClusterState, kube: KubeClient
) -> None:
    elsewhere = "brupop-elsewhere"
    await ensure_namespace(kube, elsewhere)
    await create_service_account(kube, elsewhere, AGENT_SA)
    await apply(kube, [o for o in chart_objects(elsewhere) if o["kind"] == "DaemonSet"])
    await create_nodes(kube, ["ag-ns"], labels=BRUPOP_LABELS)

    async def pod() -> dict[str, Any] | None:
        items, _ = await kube.list(
            PODS,
            namespace=elsewhere,
            label_selector=f"{COMPONENT_LABEL}={AGENT_COMPONENT}",
            field_selector="spec.nodeName=ag-ns",
        )
        return items[0] if items else None

    try:
        found = await eventually(pod, within=60, what=f"the agent pod in {elsewhere}")
        directory = shared_directory("brupop-no-sa-")  # no service-account namespace file here
        try:
            settings = AgentSettings.from_env(container_env(found), namespace_file=directory / "namespace")
        finally:
            remove(directory)
        assert settings.namespace == elsewhere
        assert settings.apiserver_url_in(elsewhere) == (
            f"https://brupop-apiserver.{elsewhere}.svc.cluster.local:443"
        )
    finally:
        with contextlib.suppress(ApiError):
            await kube.delete(KINDS["DaemonSet"], "brupop-agent", namespace=elsewhere)


@pytest.mark.integration
async def test_sigterm_stops_the_agent_promptly_while_events_stream(
    cluster: ClusterState, kube: KubeClient
) -> None:
    await installed(kube, "ag-term")
    async with brupop_apiserver(cluster, kube) as server, hosts("ag-term") as fleet:
        async with agent(cluster, kube, server, fleet, "ag-term") as process:
            await eventually(lambda: idle_offering_new(kube, "ag-term"), within=60, what="Idle offering")
            process.kill()
        ticks = 0

        async def stream() -> None:  # label edits of its shadow: each one wakes the agent
            nonlocal ticks
            while True:
                ticks += 1
                patch = {"metadata": {"labels": {"tick": str(ticks)}}}
                await kube.merge_patch(SHADOWS, shadow_name("ag-term"), patch, namespace=NAMESPACE)

        streams = [asyncio.create_task(stream()) for _ in range(3)]
        try:
            for trial in range(30):
                async with agent(cluster, kube, server, fleet, "ag-term") as process:

                    async def watching(p: AgentProcess = process) -> bool:
                        return await p.readiness() == (200, "ready\n")

                    await eventually(watching, within=60, what="the agent to watch its shadow")
                    before = ticks

                    async def streaming(b: int = before) -> bool:
                        return ticks > b + 10

                    await eventually(streaming, within=10, what="events to stream")
                    process.terminate()
                    try:
                        await asyncio.wait_for(process.process.wait(), 10)  # kubelet-like grace period
                    except TimeoutError:
                        pytest.fail(f"trial {trial}: the agent did not exit within 10 s of SIGTERM")
                    assert process.process.returncode == 0, process.log.read_text()[-2000:]
        finally:
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
