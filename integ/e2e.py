"""End to end: a whole simulated fleet updated by brupop on the local control plane.

Real: kube-apiserver, etcd, controller-manager, scheduler, the CRD with its conversion webhook, the
manifest's RBAC and agent DaemonSet, PDB-guarded workloads, two brupop apiserver replicas, the controller
(as its own service account, leader-elected) and one agent per node (each with its own pod-bound tokens).
Simulated: the Bottlerocket hosts (integ.hostsim) and the kubelets (kwok).

Monitors (integ/monitors.py) check the invariants on every watch event and fail the run at once: never
more nodes cordoned by brupop than MAX_CONCURRENT_UPDATE, no PDB below its minimum. At the end every node
must be Idle on the new version, uncordoned, and every workload back to its replica count. A timeline
closes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from brupop.kube.client import NODES, SHADOWS, KubeClient
from brupop.models.constants import NAMESPACE
from brupop.models.host import CommandType
from brupop.models.shadow import BottlerocketShadow, ShadowState
from integ.actors import Agents, Controllers, Replicas
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import SimulatedHost, Timings
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    eventually,
    install_crd,
    watch_events,
)
from integ.monitors import (
    InvariantBrokenError,
    Timeline,
    follow_shadows,
    monitor_nodes,
    monitor_pdbs,
)
from integ.operator import (
    ApiserverProcess,
    apiserver_at,
    install_agents,
    install_rbac,
)
from integ.workloads import E2E_NODES, blocking_workload, clean, workloads, workloads_ready

OLD, NEW = "1.20.3", "1.21.0"
Obj = dict[str, Any]


@dataclass
class Options:
    nodes: int = 6
    concurrency: int = 2
    time_scale: float = 0.05
    timings: Timings = field(default_factory=lambda: Timings(refresh=1, prepare=20, activate=1, reboot=30))
    live: TextIO | None = None


def ideal_seconds(options: Options) -> float:
    """Waves of `concurrency` nodes, each needing refresh + prepare + activate + reboot on its host."""
    t = options.timings
    per_node = (t.refresh + t.prepare + t.activate + t.reboot) * options.time_scale
    return math.ceil(options.nodes / max(options.concurrency, 1)) * per_node


async def fleet_done(kube: KubeClient, names: list[str], failing: set[str]) -> bool:
    """Every node settled: updated (Idle on NEW) or, if meant to fail, back in Idle with a crash count."""
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    shadows = {o["metadata"]["name"].removeprefix("brs-"): BottlerocketShadow.from_wire(o) for o in items}
    for name in names:
        shadow = shadows.get(name)
        if shadow is None or shadow.status is None or shadow.spec.state is not ShadowState.IDLE:
            return False
        status = shadow.status
        if status.current_state is not ShadowState.IDLE:
            return False
        if name in failing:
            if status.crash_count < 1:
                return False
        elif status.current_version != NEW:
            return False
    return True


@dataclass
class Run:
    """What a scenario's chaos can reach while the rollout runs."""

    cluster: ClusterState
    kube: KubeClient
    names: list[str]
    hosts: Fleet
    agents: Agents
    controllers: Controllers
    replicas: Replicas
    opens_at: datetime | None = None


Chaos = Callable[[Run], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Scenario:
    """What makes a run special; every run also checks the invariants and the end state."""

    description: str
    unlabelled: int = 0
    """Extra nodes without the brupop label: they must be left alone."""
    faults: Mapping[int, Callable[[SimulatedHost], None]] = field(default_factory=dict)
    """Host faults by node index."""
    failing: frozenset[int] = frozenset()
    """Node indexes expected to fail (end Idle, uncordoned, crash_count >= 1); the rest must update."""
    blocking_pdb_on: int | None = None
    """A node holding a pod whose PDB never allows its eviction."""
    drain_seconds: float = 60.0
    opens_after: float | None = None
    """The schedule opens (a one-shot trigger) this many seconds after the controller starts."""
    chaos: Chaos | None = None
    """Something that goes wrong mid-rollout."""


async def _any_spec(kube: KubeClient, state: ShadowState) -> bool:
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    return any((o.get("spec") or {}).get("state") == state.value for o in items)


async def restart_controller(run: Run) -> None:
    await eventually(
        lambda: _any_spec(run.kube, ShadowState.REBOOTED_INTO_UPDATE), within=300, what="a reboot"
    )
    await run.controllers.restart()


async def kill_apiserver_mid_drain(run: Run) -> None:
    """SIGKILL the replica that is draining a node; the agent's retry must reach the other replica (through
    the Service) and finish the drain there. Tried on later drains if a drain ends before the kill lands."""
    for _ in range(3):

        async def draining() -> tuple[ApiserverProcess, str] | None:
            for replica in run.replicas.live:
                for node in run.names:
                    if replica.logged("draining", node=node) and not replica.logged("drained", node=node):
                        return replica, node
            return None

        replica, node = await eventually(draining, within=300, what="a drain to start")
        await run.replicas.kill(replica)
        if replica.logged("drained", node=node):
            continue  # it finished before it died: try again on a later node

        async def carried_on(node: str = node) -> bool:
            return any(r.logged("drained", node=node) for r in run.replicas.live)

        await eventually(carried_on, within=240, what=f"another replica to finish draining {node}")
        return
    raise InvariantBrokenError("no drain lasted long enough to kill its replica in the middle")


async def kill_agent_before_reboot(run: Run) -> None:
    """The agent of the second node dies on the line that would send the reboot (node cordoned and drained,
    host not rebooted); its successor must reboot the host and finish."""
    node = run.names[1]
    dying = asyncio.Event()

    async def die() -> None:
        dying.set()
        await asyncio.Event().wait()  # never sent: the restart cancels this agent here

    run.agents[node].host.reboot = die  # type: ignore[method-assign]
    await dying.wait()
    if run.hosts[node].boots:
        raise InvariantBrokenError(f"{node} rebooted although its agent died before asking")
    await run.agents.restart(node)


async def kill_agent_after_reboot(run: Run) -> None:
    """The agent of the second node dies the moment its host goes down for the reboot; its successor starts
    while the host is away and must verify the new version, uncordon and report."""
    host = run.hosts[run.names[1]]
    went_down = asyncio.Event()
    go_down = host.on_reboot

    def down() -> None:
        go_down()
        went_down.set()

    host.on_reboot = down
    await went_down.wait()
    await run.agents.restart(run.names[1])


async def closed_until_open(run: Run) -> None:
    """No node may be sent to update before the schedule opens."""
    assert run.opens_at is not None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout((run.opens_at - datetime.now(UTC)).total_seconds()):
            async for _, obj in watch_events(run.kube, SHADOWS, NAMESPACE):
                state = (obj.get("spec") or {}).get("state")
                if state not in (None, ShadowState.IDLE.value) and datetime.now(UTC) < run.opens_at:
                    raise InvariantBrokenError(
                        f"{obj['metadata']['name']} was sent to {state} before the window"
                    )


def _rollback(host: SimulatedHost) -> None:
    host.faults.rolls_back = True


def _refuse_prepare(host: SimulatedHost) -> None:
    host.faults.failing[CommandType.PREPARE] = (1, "Failed to download the update: simulated")


SCENARIOS: Mapping[str, Scenario] = {
    "happy": Scenario("every node updates, a few at a time"),
    "window-opens": Scenario(
        "the schedule is closed at the start and opens mid-run", opens_after=8.0, chaos=closed_until_open
    ),
    "unlabelled": Scenario("a node without the brupop label is left alone", unlabelled=1),
    "rollback": Scenario(
        "one host comes back on the old version", faults={1: _rollback}, failing=frozenset({1})
    ),
    "prepare-fails": Scenario(
        "one host refuses the update", faults={2: _refuse_prepare}, failing=frozenset({2})
    ),
    "pdb-blocks": Scenario(
        "a PDB never allows one node to drain: that node fails after the drain limit, the rest update",
        blocking_pdb_on=0,
        failing=frozenset({0}),
        # Long enough for the other nodes' drains to wait out a PDB while a replacement pod starts.
        drain_seconds=15.0,
    ),
    "controller-restart": Scenario(
        "the controller is stopped mid-rollout and another takes over", chaos=restart_controller
    ),
    "apiserver-killed": Scenario(
        "an apiserver replica is killed in the middle of a drain",
        chaos=kill_apiserver_mid_drain,
        # Drains right after the kill have been seen blocked by a PDB for over 60 s: most likely a pod left
        # in its disruptedPods, which the disruption controller drops only after two minutes.
        drain_seconds=180.0,
    ),
    "agent-killed-before-reboot": Scenario(
        "an agent dies right before it reboots its host", chaos=kill_agent_before_reboot
    ),
    "agent-killed-after-reboot": Scenario(
        "an agent dies right after its host went down", chaos=kill_agent_after_reboot
    ),
}


def _suspended_at(task: asyncio.Task[Any]) -> str:
    """Where a pending task is waiting: its coroutine's function and line."""
    frames = task.get_stack(limit=1)
    if not frames:
        return "an unknown point"
    code = frames[0].f_code
    return f"{code.co_name}, line {frames[0].f_lineno}"


async def _bounded(work: Awaitable[Any], what: str, *, seconds: float = 90.0) -> None:
    """Teardown that cannot hang a test run: once (under heavy load) a run waited forever at its end."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        raise InvariantBrokenError(f"timed out after {seconds:g}s waiting for {what}") from None


def _one_shot(at: datetime) -> str:
    """A cron trigger for the second `at` (UTC), once."""
    return f"{at.second} {at.minute} {at.hour} {at.day} {at.month} * {at.year}"


async def run_scenario(
    cluster: ClusterState,
    kube: KubeClient,
    work: Path,
    options: Options,
    scenario: Scenario = SCENARIOS["happy"],
) -> str:
    """Roll NEW out to the fleet under `scenario`; returns the timeline report, or raises on a broken rule."""
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    names = [f"e2e-{i}" for i in range(options.nodes)]
    await create_nodes(kube, names, labels=BRUPOP_LABELS | E2E_NODES)
    plain = [f"e2e-plain-{i}" for i in range(scenario.unlabelled)]
    await create_nodes(kube, plain, labels=E2E_NODES)
    await workloads(kube)
    if scenario.blocking_pdb_on is not None:
        await blocking_workload(kube, names[scenario.blocking_pdb_on])
    hosts = Fleet(work / "hosts", time_scale=options.time_scale, timings=options.timings)
    hosts.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    hosts.repository.offer(OLD, variant="aws-k8s-1.29", arch="x86_64")
    for index, name in enumerate(names):
        host = await hosts.add(name, version=OLD)
        if index in scenario.faults:
            scenario.faults[index](host)
    failing = {names[i] for i in scenario.failing}
    timeline = Timeline()
    env = {"MAX_CONCURRENT_UPDATE": str(options.concurrency)}
    opens_at = None
    if scenario.opens_after is not None:
        opens_at = (datetime.now(UTC) + timedelta(seconds=scenario.opens_after)).replace(microsecond=0)
        env |= {"SCHEDULER_CRON_EXPRESSION": _one_shot(opens_at), "SCHEDULER_TIMEZONE": "UTC"}
    async with contextlib.AsyncExitStack() as stack:
        replicas = Replicas(cluster, kube, stack, drain_seconds=scenario.drain_seconds)
        service = await stack.enter_async_context(replicas.service.running())
        for _ in range(2):
            await replicas.start()
        server = apiserver_at(cluster, service.port)
        await install_crd(
            kube, crd_for_local_use(webhook_url=f"{server.url}/crdconvert", ca_pem=server.ca_pem)
        )
        monitors = [
            asyncio.create_task(monitor_nodes(kube, options.concurrency, "e2e-")),
            asyncio.create_task(monitor_pdbs(kube)),
            asyncio.create_task(follow_shadows(kube, timeline, options.live)),
        ]
        agents = Agents(cluster, kube, server, hosts)
        stack.push_async_callback(lambda: _bounded(agents.stop(), "the agents to stop"))
        for name in names:
            await agents.start(name)
        controllers = Controllers(cluster, kube, env)
        await controllers.start()
        run = Run(cluster, kube, names, hosts, agents, controllers, replicas, opens_at)
        chaos = [asyncio.create_task(scenario.chaos(run))] if scenario.chaos else []
        started = time.monotonic()
        done = asyncio.create_task(
            eventually(lambda: fleet_done(kube, names, failing), within=600, what="the rollout")
        )
        try:
            while not done.done():
                watched = [done, *controllers.running, *monitors, *[c for c in chaos if not c.done()]]
                finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # a broken invariant, a failed chaos step, the rollout timing out
                    if task in controllers.running:  # not one that a restart is retiring
                        raise InvariantBrokenError("the controller stopped on its own")
                    if task in monitors:
                        raise InvariantBrokenError("a monitor stopped on its own")
            total = time.monotonic() - started
            for task in chaos:
                if not task.done():
                    raise InvariantBrokenError(
                        "the rollout finished before the scenario's trouble happened "
                        f"(the chaos step was still at {_suspended_at(task)})"
                    )
        finally:
            for task in [done, *monitors, *chaos]:
                task.cancel()
            await _bounded(controllers.stop(), "the controllers to stop")
            await _bounded(
                asyncio.gather(done, *monitors, *chaos, return_exceptions=True), "the monitors to end"
            )
    await _bounded(hosts.stop(), "the simulated hosts to stop")
    await check_end_state(kube, names + plain, untouched=plain)
    return timeline.report(total=total, ideal=ideal_seconds(options))


async def check_end_state(kube: KubeClient, names: list[str], *, untouched: list[str]) -> None:
    for name in names:
        node = await kube.get(NODES, name)
        if node["spec"].get("unschedulable"):
            raise InvariantBrokenError(f"node {name} was left cordoned")
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    touched = {o["metadata"]["name"].removeprefix("brs-") for o in items} & set(untouched)
    if touched:
        raise InvariantBrokenError(f"nodes without the brupop label got a shadow: {sorted(touched)}")

    try:
        await eventually(
            lambda: workloads_ready(kube), within=60, what="every workload back to its replica count"
        )
    except TimeoutError as err:
        raise InvariantBrokenError(str(err)) from None


def main_run(cluster: ClusterState, work: Path, options: Options, scenario: str = "happy") -> str:
    from integ.kubetools import admin

    async def go() -> str:
        async with admin(cluster) as kube:
            await clean(kube)
            return await run_scenario(cluster, kube, work, options, SCENARIOS[scenario])

    return asyncio.run(go())
