"""End to end: a whole simulated fleet updated by brupop on the local control plane.

Real: kube-apiserver, etcd, controller-manager, scheduler, the CRD with its conversion webhook, the
manifest's RBAC and agent DaemonSet, PDB-guarded workloads, and every brupop program as its own process
(integ/actors.py): two apiserver replicas, two leader-elected controller replicas and one agent per node,
each with its own identity, each reaching the kube-apiserver through its own listener of the fault proxy
(integ/faultproxy.py). Simulated: the Bottlerocket hosts (integ.hostsim, in this process) and the kubelets
(kwok).

Monitors (integ/monitors.py) check the invariants on every watch event and fail the run at once; a brupop
process that exits on its own fails it too. At the end: no spec written outside its writer's leadership
term, every node Idle on the new version (or failed as the scenario expects), none left unschedulable
that the administrator did not cordon, every workload back to its replica count. A timeline of states
and events closes the run (and is part of the failure message when it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from brupop.controller.main import LEASE_NAME
from brupop.kube.client import LEASES, NODES, SHADOWS, ApiError, KubeClient
from brupop.models.constants import IN_CYCLE_LABEL, NAMESPACE, shadow_name
from brupop.models.shadow import BottlerocketShadow, ShadowState
from integ import audit
from integ.actors import Agents, Controllers, Pods, Replicas, World
from integ.clocks import Clocks, faketime_library
from integ.cluster import ClusterState
from integ.faultproxy import FaultProxy
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import SimulatedHost, Timings
from integ.kubetools import (
    BRUPOP_LABELS,
    crd_for_local_use,
    create_nodes,
    eventually,
    install_crd,
    transient,
    watch_events,
)
from integ.monitors import (
    Disruption,
    InvariantBrokenError,
    Timeline,
    follow_shadows,
    leadership_violations,
    monitor_pdbs,
)
from integ.operator import apiserver_at, install_agents, install_rbac
from integ.unprivileged import remove, shared_directory
from integ.workloads import E2E_NODES, blocking_workload, workloads, workloads_ready

OLD, NEW = "1.20.3", "1.21.0"
Obj = dict[str, Any]


@dataclass
class Options:
    nodes: int = 6
    concurrency: int = 2
    time_scale: float = 0.05
    timings: Timings = field(default_factory=lambda: Timings(refresh=1, prepare=20, activate=1, reboot=30))
    live: TextIO | None = None
    within: float = 240.0
    """Seconds the rollout may take before the run fails as not converged."""


def ideal_seconds(options: Options) -> float:
    """Waves of `concurrency` nodes, each needing refresh + prepare + activate + shutdown + reboot on its
    host."""
    t = options.timings
    per_node = (t.refresh + t.prepare + t.activate + t.shutdown + t.reboot) * options.time_scale
    return math.ceil(options.nodes / max(options.concurrency, 1)) * per_node


STARTUP = 5.0
"""Seconds added to a scenario's trigger for the controllers to start: on a loaded machine they took over
4 s, and a trigger that passes before a controller's first pass never fires (by design: no replays), so
the run never converged (chaos seed 207)."""


def _whole_second(moment: datetime) -> datetime:
    """`moment` rounded up to a whole second (a cron expression's resolution)."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


SETTLE = 2.0
"""Seconds a converged fleet must stay converged with every program still running and every monitor
watching, before the run stops them: a controller that starts another cycle, or a node cordoned again,
shows here rather than after the run."""


async def quietly(check: Callable[[], Awaitable[Any]]) -> Any:
    """`check()`, or None while the kube-apiserver is restarting (for polls that ride it out)."""
    try:
        return await check()
    except Exception as err:
        if transient(err):
            return None
        raise


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


async def released(kube: KubeClient, names: Collection[str]) -> bool:
    """Every node taken out of brupop mid-run is let go: its cycle finished, its in-cycle label removed and
    its shadow deleted (chaos seed 403: a node rebooting when it left was taken for settled, and the run
    ended with it cordoned)."""
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    shadows = {o["metadata"]["name"] for o in items}
    for name in names:
        labels = (await kube.get(NODES, name))["metadata"].get("labels") or {}
        if IN_CYCLE_LABEL in labels or shadow_name(name) in shadows:
            return False
    return True


async def fleet_state(kube: KubeClient, names: list[str]) -> str:
    """Where each node stands, for a run that did not converge: its shadow's spec and status, and what the
    Node carries (the opt-in and in-cycle labels, the cordon)."""
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    shadows = {o["metadata"]["name"].removeprefix("brs-"): o for o in items}
    lines = ["where the nodes stand:"]
    for name in names:
        node = await kube.get(NODES, name)
        labels = node["metadata"].get("labels") or {}
        marks = [
            *(["opted in"] if BRUPOP_LABELS.items() <= labels.items() else ["opted out"]),
            *(["in cycle"] if IN_CYCLE_LABEL in labels else []),
            *(["unschedulable"] if node["spec"].get("unschedulable") else []),
        ]
        shadow = shadows.get(name)
        if shadow is None:
            lines.append(f"  {name}: no shadow; node {', '.join(marks)}")
            continue
        spec, status = shadow.get("spec") or {}, shadow.get("status") or {}
        lines.append(
            f"  {name}: spec {spec.get('state')} {spec.get('version')}, status "
            f"{status.get('current_state')} {status.get('current_version')} "
            f"(crash count {status.get('crash_count')}); node {', '.join(marks)}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Report:
    """How a run went: the timeline as text, the rollout's makespan and its ideal."""

    text: str
    total: float
    ideal: float

    def __str__(self) -> str:
        return self.text


@dataclass
class Run:
    """What a scenario's chaos can reach while the rollout runs."""

    world: World
    options: Options
    names: list[str]
    hosts: Fleet
    agents: Agents
    controllers: Controllers
    replicas: Replicas
    disruption: Disruption
    opens_at: datetime | None = None
    left: set[str] = field(default_factory=set)
    """Nodes the scenario took out of brupop's hands (label removed): they need not update."""
    untouched: set[str] = field(default_factory=set)
    """Nodes brupop must not start (e.g. labelled after a one-shot trigger's rollout ended)."""

    @property
    def kube(self) -> KubeClient:
        return self.world.kube

    @property
    def cluster(self) -> ClusterState:
        return self.world.cluster

    @property
    def proxy(self) -> FaultProxy:
        return self.world.proxy

    @property
    def timeline(self) -> Timeline:
        return self.world.timeline

    async def add_node(self, name: str, *, labels: Mapping[str, str] = BRUPOP_LABELS) -> None:
        """A node joining mid-run, with its host on OLD and (when labelled) its agent."""
        await create_nodes(self.kube, [name], labels={**labels, **E2E_NODES})
        host = await self.hosts.add(name, version=OLD)
        self.disruption.follow_host(host)
        if labels:
            await self.agents.start(name)
        self.timeline.note(f"node {name} joined" + (" with the brupop label" if labels else ""))


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
    admin_cordoned: frozenset[int] = frozenset()
    """Nodes an administrator cordoned before the run: still cordoned at the end, updated all the same."""
    without_boot_id: frozenset[int] = frozenset()
    """Nodes whose agent cannot read its host's boot ID: it must tell a boot from the host's answers."""
    drain_seconds: float = 150.0
    """The agents' drain limit (DRAIN_TIMEOUT; brupop's default is 30 minutes). Above the disruption
    controller's two-minute DeletionTimeout: its PDB status keys disruptedPods by pod name, so when it
    misses a pod's deletion (its informer relists after kube-apiserver or etcd restarts, or after an
    apiserver replica dies mid-eviction) it counts the StatefulSet replacement of the same name as
    disrupted for two minutes, and every drain behind that PDB waits; a real cluster does the same."""
    opens_after: float | None = None
    """The schedule opens (a one-shot trigger) this many seconds after the controllers start."""
    chaos: Chaos | None = None
    """Something that goes wrong mid-rollout."""
    after_rollout: bool = False
    """The chaos step goes on once the fleet has converged (and the run waits for it)."""
    chaos_optional: bool = False
    """The chaos may not have done everything by the time the fleet converges (a random timetable): what
    is left is called off instead of failing the run."""
    concurrency: int | None = None
    time_scale: float | None = None
    """Instead of the run's options (a scenario that needs a longer rollout)."""
    clocks: Clocks = field(default_factory=Clocks)
    """The programs' wall clocks against the machine's (libfaketime is found by the run)."""


def _suspended_at(task: asyncio.Task[Any]) -> str:
    """Where a pending task is waiting: its coroutine's function and line."""
    frames = task.get_stack(limit=1)
    if not frames:
        return "an unknown point"
    code = frames[0].f_code
    return f"{code.co_name}, line {frames[0].f_lineno}"


async def _bounded(work: Awaitable[Any], what: str, *, seconds: float = 90.0) -> Any:
    """Teardown that cannot hang a test run: once (under heavy load) a run waited forever at its end."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise InvariantBrokenError(f"timed out after {seconds:g}s waiting for {what}") from None


async def settled(converged: Callable[[], Awaitable[bool]], monitors: list[asyncio.Task[None]]) -> None:
    """The fleet stays converged for SETTLE seconds after the rollout (and the scenario's trouble) ended,
    the monitors watching; a check the kube-apiserver cannot answer (a restart the chaos began) is asked
    again."""
    finished, _ = await asyncio.wait(monitors, timeout=SETTLE)
    for task in finished:
        task.result()  # a broken invariant
        raise InvariantBrokenError("a monitor stopped on its own")

    async def answer() -> list[bool] | None:  # the answer, boxed, or None while there is none
        known = await quietly(converged)
        return None if known is None else [known]

    still = await eventually(answer, within=60, what="the kube-apiserver to answer after convergence")
    if not still[0]:
        raise InvariantBrokenError(
            f"the fleet did not stay converged for {SETTLE:g}s after it converged", kind="settle"
        )


def one_shot(at: datetime) -> str:
    """A cron trigger for the second `at` (UTC), once."""
    return f"{at.second} {at.minute} {at.hour} {at.day} {at.month} * {at.year}"


async def _forget_leadership(kube: KubeClient) -> None:
    """The previous run's Lease goes, so this run's replicas start from no holder."""
    with contextlib.suppress(ApiError):
        await kube.delete(LEASES, LEASE_NAME, namespace=NAMESPACE)


async def run_scenario(
    cluster: ClusterState,
    kube: KubeClient,
    work: Path,
    options: Options,
    scenario: Scenario,
) -> Report:
    """Roll NEW out to the fleet under `scenario`; returns the timeline report, or raises
    InvariantBrokenError (with the timeline) on a broken rule. The run's files (pods' directories and
    logs, host sockets) live in a directory the programs' users may enter; it is removed after a run that
    passed and moved to `work` after one that failed."""
    timeline = Timeline()
    options = replace(
        options,
        concurrency=scenario.concurrency or options.concurrency,
        time_scale=scenario.time_scale or options.time_scale,
    )
    files = shared_directory("brupop-e2e-")
    try:
        report = await _run(cluster, kube, files, options, scenario, timeline)
    except (InvariantBrokenError, TimeoutError) as err:
        kind = err.kind if isinstance(err, InvariantBrokenError) else "scenario"
        kept = _keep(files, work)
        raise InvariantBrokenError(
            f"{err}\nthe run's files and logs: {kept}\ntimeline:\n{timeline.events_report()}", kind=kind
        ) from None
    except BaseException:
        remove(files)
        raise
    remove(files)
    return report


def _keep(files: Path, work: Path) -> Path:
    """Move a failed run's files into `work`, where its logs can be read after the run."""
    work.mkdir(parents=True, exist_ok=True)
    return Path(shutil.move(files, work / "files"))


async def _run(
    cluster: ClusterState,
    kube: KubeClient,
    files: Path,
    options: Options,
    scenario: Scenario,
    timeline: Timeline,
) -> Report:
    await prepare(kube)
    await install_rbac(kube)
    await install_agents(kube)
    await _forget_leadership(kube)
    names = [f"e2e-{i}" for i in range(options.nodes)]
    await create_nodes(kube, names, labels=BRUPOP_LABELS | E2E_NODES)
    plain = [f"e2e-plain-{i}" for i in range(scenario.unlabelled)]
    await create_nodes(kube, plain, labels=E2E_NODES)
    try:
        await workloads(kube)
        if scenario.blocking_pdb_on is not None:
            await blocking_workload(kube, names[scenario.blocking_pdb_on])
    except TimeoutError as err:  # before any brupop program runs: the test world, not brupop
        raise InvariantBrokenError(str(err), kind="setup") from None
    # An administrator cordons nodes that run pods (cordoned first, a node would never get the pinned
    # pod, and its PDB would start below desiredHealthy: chaos seed 126).
    for index in sorted(scenario.admin_cordoned):
        await kube.merge_patch(NODES, names[index], {"spec": {"unschedulable": True}})
    disruption = Disruption(kube, limit=options.concurrency, prefix="e2e-", timeline=timeline)
    disruption.admin_cordoned = {names[i] for i in scenario.admin_cordoned}
    hosts = Fleet(files / "hosts", time_scale=options.time_scale, timings=options.timings)
    hosts.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    hosts.repository.offer(OLD, variant="aws-k8s-1.29", arch="x86_64")
    for index, name in enumerate(names):
        host = await hosts.add(name, version=OLD)
        disruption.follow_host(host)
        if index in scenario.faults:
            scenario.faults[index](host)
    failing = {names[i] for i in scenario.failing}
    directory = Path(cluster.directory)
    proxy = FaultProxy(upstream=cluster.server, ca_file=directory / "ca.crt", cert_dir=directory / "proxy")
    proxy.observers.append(disruption.observe)
    pods = Pods(timeline)
    clocks = scenario.clocks
    if clocks.skewed:  # a copy in the run's directory, which every program's user may enter
        found = await asyncio.to_thread(faketime_library, log=None)
        library = Path(shutil.copy(found, files / "libfaketime.so.1"))
        clocks = replace(clocks, library=library)
        timeline.note(f"clocks off the machine's: {clocks.describe()}")
    world = World(
        cluster=cluster, kube=kube, proxy=proxy, timeline=timeline, pods=pods, directory=files, clocks=clocks
    )
    replicas = Replicas(world, drain_seconds=scenario.drain_seconds)
    monitors: list[asyncio.Task[None]] = []
    chaos: list[asyncio.Task[None]] = []
    done: asyncio.Task[bool] | None = None
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.close)
        service = await stack.enter_async_context(replicas.service.running())
        monitors.append(asyncio.create_task(pods.watch()))
        for _ in range(2):
            await replicas.start()
        server = apiserver_at(cluster, service.port)
        await install_crd(
            kube, crd_for_local_use(webhook_url=f"{server.url}/crdconvert", ca_pem=server.ca_pem)
        )
        monitors += [
            asyncio.create_task(disruption.run()),
            asyncio.create_task(
                monitor_pdbs(kube, timeline, proxy.log, audit=Path(cluster.directory) / audit.LOG_NAME)
            ),
            asyncio.create_task(follow_shadows(kube, timeline)),
        ]
        agents = Agents(
            world,
            apiserver_port=service.port,
            hosts=hosts,
            without_boot_id={names[i] for i in scenario.without_boot_id},
        )
        stack.push_async_callback(agents.close)
        for name in names:
            agents.follow_reboots(hosts[name])
            await agents.start(name)
        env = {"MAX_CONCURRENT_UPDATE": str(options.concurrency)}
        opens_at = None
        if scenario.opens_after is not None:  # counted from now: a trigger passed before a start never fires
            # Set by the controllers' clocks, as an administrator writes it by theirs: a replica whose
            # clock is ahead sees it come early, so it is set that much later; `opens_at` is when the
            # first replica's clock reaches it, on the machine's clock.
            ahead = max(clocks.controller_offset(i) for i in range(2))
            trigger = _whole_second(
                datetime.now(UTC) + timedelta(seconds=scenario.opens_after + STARTUP + max(ahead, 0))
            )
            env |= {"SCHEDULER_CRON_EXPRESSION": one_shot(trigger), "SCHEDULER_TIMEZONE": "UTC"}
            opens_at = trigger - timedelta(seconds=ahead)
            timeline.note(f"the one-shot trigger fires at {trigger:%H:%M:%S} UTC by the controllers' clocks")
        controllers = Controllers(world, env)
        for _ in range(2):
            await controllers.start()
        if opens_at is not None:
            await eventually(lambda: quietly(controllers.leader), within=60, what="a leader")
            if datetime.now(UTC) >= opens_at:  # its first pass came after the trigger: it rightly never fires
                raise InvariantBrokenError(
                    f"the controllers came up after the trigger ({opens_at:%H:%M:%S})", kind="setup"
                )
        if options.live is not None:
            monitors.append(asyncio.create_task(live_view(cluster.kubeconfig, options.live)))
        run = Run(world, options, names, hosts, agents, controllers, replicas, disruption, opens_at)
        ps = asyncio.create_task(pods.ps())  # as the rollout begins; the chaos does not wait for it
        monitors.append(asyncio.create_task(no_unplanned_failures(run, failing)))
        chaos = [asyncio.create_task(scenario.chaos(run))] if scenario.chaos else []
        started = time.monotonic()

        async def converged() -> bool:
            expected = [n for n in names if n not in run.left]
            return await fleet_done(kube, expected, failing) and await released(kube, run.left)

        done = asyncio.create_task(
            eventually(lambda: quietly(converged), within=options.within, what="the rollout")
        )
        try:
            while not done.done():
                watched = [done, *monitors, *[c for c in chaos if not c.done()]]
                finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if done in finished and isinstance(done.exception(), TimeoutError):
                    where = await quietly(lambda: fleet_state(kube, names))
                    raise InvariantBrokenError(f"{done.exception()}\n{where}", kind="convergence")
                for task in finished:
                    task.result()  # a broken invariant, a failed chaos step
                    if task in monitors:
                        raise InvariantBrokenError("a monitor stopped on its own")
            total = time.monotonic() - started
            timeline.note("the fleet converged")
            for task in chaos:
                if not task.done() and scenario.chaos_optional:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    timeline.note("the rest of the chaos called off")
                    continue
                if not task.done() and scenario.after_rollout:
                    finished, _ = await asyncio.wait([task, *monitors], return_when=asyncio.FIRST_COMPLETED)
                    for ended in finished:
                        ended.result()
                if not task.done():
                    raise InvariantBrokenError(
                        "the rollout finished before the scenario's trouble happened "
                        f"(the chaos step was still at {_suspended_at(task)})"
                    )
                task.result()
            # Nodes taken out of brupop by the chaos (a label removed) may be on their way out: the rest
            # must stay as they are.
            staying = [n for n in names if n not in run.left]
            await settled(lambda: fleet_done(kube, staying, failing), monitors)
        finally:
            for task in [done, *monitors, *chaos]:
                task.cancel()
            await _bounded(
                asyncio.gather(done, *monitors, *chaos, return_exceptions=True), "the monitors to end"
            )
            processes = await _bounded(ps, "ps")
            late = await _bounded(pods.stop(), "the brupop processes to stop")
            for problem in late:
                timeline.note(problem)
    try:
        for name in names:
            if name not in run.left:
                _check_host(hosts[name], failed=name in failing)
    finally:
        await _bounded(hosts.stop(), "the simulated hosts to stop")
    if late:
        raise InvariantBrokenError("; ".join(late), kind="shutdown")
    crashed = [(p, e) for p in pods.all.values() for e in p.unexpected()]
    if crashed:  # also the exits the watch had not taken yet when the fleet converged
        process, exit = crashed[0]
        raise InvariantBrokenError(f"{exit.describe()}; its last log lines:\n{process.tail()}", kind="exit")
    broken = leadership_violations(proxy.log, lease=LEASE_NAME, timeline=timeline)
    if broken:
        raise InvariantBrokenError(
            "spec writes outside the writer's leadership term:\n  " + "\n  ".join(broken), kind="leadership"
        )
    await check_end_state(run, plain=plain)
    timeline.note(
        f"{len(proxy.log)} requests through the fault proxy; peak {disruption.peak} nodes disrupted"
    )
    ideal = ideal_seconds(options)
    summary = timeline.report(total=total, ideal=ideal)
    text = f"the brupop processes as the rollout began:\n{processes}\n{summary}"
    return Report(text, total, ideal)


async def live_view(kubeconfig: str, out: TextIO) -> None:
    """`brupop status --watch` (the kubectl plugin's view, its own process, as an operator runs it with the
    admin's kubeconfig) drawing the rollout on `out`, the demo's terminal, until cancelled."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "KUBECONFIG": kubeconfig}
    view = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brupop", "status", "--watch", env=env, stdout=out, stderr=out
    )
    try:
        await view.wait()
        raise InvariantBrokenError(f"the live view (brupop status --watch) exited with {view.returncode}")
    finally:
        if view.returncode is None:
            view.terminate()
            await view.wait()


async def no_unplanned_failures(run: Run, failing: set[str]) -> None:
    """A node reports ErrorReset only when the scenario made its host fail: SIGKILLs, restarts and proxy
    faults are to be ridden out (retried, taken over), not recorded as failed updates."""
    async for _, obj in watch_events(run.kube, SHADOWS, NAMESPACE):
        node = obj["metadata"]["name"].removeprefix("brs-")
        state = (obj.get("status") or {}).get("current_state")
        if state == ShadowState.ERROR_RESET.value and node in run.names and node not in failing | run.left:
            failed = [e for e in run.agents[node].entries() if e.get("event") == "update step failed"]
            why = f"; its agent: {failed[-1].get('error')}" if failed else ""
            raise InvariantBrokenError(
                f"{node} reported a failed update ({ShadowState.ERROR_RESET.value}, crash count "
                f"{(obj.get('status') or {}).get('crash_count')}) that no host fault of the scenario caused"
                f"{why}",
                kind="unplanned-failure",
            )


async def check_end_state(run: Run, *, plain: list[str]) -> None:
    kube = run.kube
    admin = run.disruption.admin_cordoned
    for name in [*run.names, *plain, *run.untouched]:
        unschedulable = bool((await kube.get(NODES, name))["spec"].get("unschedulable"))
        if unschedulable and name not in admin:
            raise InvariantBrokenError(
                f"node {name} was left unschedulable (no administrator cordoned it)", kind="cordon-left"
            )
        if not unschedulable and name in admin:
            raise InvariantBrokenError(
                f"the administrator's cordon of {name} was undone", kind="cordon-undone"
            )
    items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
    shadows = {o["metadata"]["name"].removeprefix("brs-"): BottlerocketShadow.from_wire(o) for o in items}
    touched = set(shadows) & set(plain)
    if touched:
        raise InvariantBrokenError(
            f"nodes without the brupop label got a shadow: {sorted(touched)}", kind="end-state"
        )
    for name in run.untouched:
        status = shadows[name].status if name in shadows else None
        states = {state for _, state in run.timeline.states.get(name, [])}
        if status is None or status.current_version != OLD or states - {"Idle"}:
            raise InvariantBrokenError(
                f"{name} was updated although no trigger fired after it joined", kind="end-state"
            )
    try:
        await eventually(
            lambda: workloads_ready(kube), within=60, what="every workload back to its replica count"
        )
    except TimeoutError as err:
        raise InvariantBrokenError(str(err), kind="end-state") from None


def _check_host(host: SimulatedHost, *, failed: bool) -> None:
    """What the host itself says, not brupop's report of it: an updated node's host runs the new version;
    a failed one still on the old version has no update left to boot (it would boot it at the next
    unplanned reboot, never drained)."""
    if not failed and host.version != NEW:
        raise InvariantBrokenError(
            f"{host.name} is reported updated but its host runs {host.version}", kind="end-state"
        )
    status = host.update_status()
    staged = status.staging_partition if status is not None else None
    if failed and host.version == OLD and staged is not None and staged.next_to_boot:
        raise InvariantBrokenError(
            f"{host.name} failed its update but its host would boot {staged.image} next", kind="end-state"
        )


def main_run(cluster: ClusterState, work: Path, options: Options, scenario: Scenario) -> str:
    from integ.kubetools import admin
    from integ.workloads import clean

    async def go() -> str:
        async with admin(cluster) as kube:
            await clean(kube)
            return str(await run_scenario(cluster, kube, work, options, scenario))

    return asyncio.run(go())
