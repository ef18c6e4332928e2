"""The monitors of an end-to-end run, each made to fail by a real violation and shown to pass its nearest
legal case.

- The leadership monitor, judged on hand-made request logs (no cluster needed): a spec write counts
  against its writer when another replica's acquisition or its own release was answered before the write
  arrived or was in flight while it was, or when it was answered more than a lease duration after its
  writer's last renewal was sent.
- `Disruption`, on kwok nodes of the local cluster and simulated hosts: cordons and accepted reboots
  counted against the limit (an administrator's cordon not), a reboot of a schedulable or undrained node,
  an eviction asked for on a schedulable node.
- The end of a run (`check_end_state`): a node left cordoned that no administrator cordoned, an
  administrator's cordon undone.
- `monitor_pdbs`: a PodDisruptionBudget of the workloads' namespace below its desiredHealthy.
- `Pods.watch`: a brupop process that exited when nobody asked.

Every node, pod, namespace and budget these tests make is named `mon-...` and removed at the end; the
tests that need the e2e runs' `workloads` namespace (`monitor_pdbs` watches that one only, the end state
asks for its workloads) clean it first and after, as each e2e run does (`integ.workloads.clean`).
"""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from brupop.kube.client import NAMESPACES, NODES, PDBS, PODS, ApiError, KubeClient, Resource
from brupop.kube.config import KubeConfig
from integ.actors import Pods
from integ.cluster import ClusterState
from integ.e2e import Run, check_end_state
from integ.faultproxy import Exchange
from integ.hostsim.host import SimulatedHost
from integ.hostsim.repository import Repository
from integ.kubetools import (
    crd_for_local_use,
    create_nodes,
    ensure_namespace,
    eventually,
    install_crd,
    pod_ready,
    until,
)
from integ.monitors import Disruption, InvariantBrokenError, Timeline, leadership_violations, monitor_pdbs
from integ.processes import BrupopProcess
from integ.workloads import E2E_NODES, WORKLOADS, clean, workloads
from tests.integ.test_processes import unreachable_kubeconfig

Obj = dict[str, Any]

LEASE = "/apis/coordination.k8s.io/v1/namespaces/brupop/leases/leader"
SPEC = "/apis/brupop.bottlerocket.aws/v2/namespaces/brupop/bottlerocketshadows/brs-a"


def lease(client: str, holder: str | None, at: float, *, duration: int = 15, status: int = 200) -> Exchange:
    body = {
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration},
    }
    return Exchange(client, "PUT", LEASE, {}, json.dumps(body).encode(), at, at + 0.01, status)


def write(client: str, at: float, *, status: int = 200, path: str = SPEC) -> Exchange:
    return Exchange(client, "PATCH", path, {}, b"{}", at, at + 0.01, status)


def judge(*log: Exchange) -> list[str]:
    return leadership_violations(log, lease="leader", timeline=Timeline(started=0.0))


def test_writes_within_the_holders_term_pass() -> None:
    assert (
        judge(
            lease("brupop-controller-0", "brupop-controller-0", 1.0),
            write("brupop-controller-0", 2.0),
            lease("brupop-controller-0", "brupop-controller-0", 10.0),
            write("brupop-controller-0", 24.0),
        )
        == []
    )


def test_a_write_after_another_replica_took_the_lease_is_caught() -> None:
    [found] = judge(
        lease("brupop-controller-0", "brupop-controller-0", 1.0),
        lease("brupop-controller-1", "brupop-controller-1", 17.0),
        write("brupop-controller-0", 15.5),  # in its own term: fine
        write("brupop-controller-0", 17.5),
    )
    assert found.startswith(
        "brupop-controller-0 PATCH brs-a at 17.50s while the Lease was held by brupop-controller-1"
    )


def test_a_write_after_the_own_lease_ran_out_is_caught() -> None:
    [found] = judge(
        lease("brupop-controller-0", "brupop-controller-0", 1.0), write("brupop-controller-0", 16.5)
    )
    assert "answered 0.51s after its lease ran out" in found


def test_a_write_after_releasing_is_caught_and_refused_writes_do_not_count() -> None:
    log = [
        lease("brupop-controller-0", "brupop-controller-0", 1.0),
        lease("brupop-controller-0", None, 5.0),
        write("brupop-controller-0", 6.0),
        write("brupop-controller-0", 7.0, status=409),
        lease("brupop-controller-1", "brupop-controller-1", 8.0, status=409),  # lost the race: not a term
    ]
    [found] = judge(*log)
    assert "while the Lease was released by brupop-controller-0" in found


def test_status_writes_and_agents_are_not_spec_writes() -> None:
    assert judge(write("brupop-controller-0", 1.0, path=SPEC + "/status"), write("brupop-agent-x", 1.0)) == []


# The cluster's monitors: helpers.


@contextlib.asynccontextmanager
async def kwok_nodes(
    kube: KubeClient, names: list[str], *, labels: dict[str, str] | None = None
) -> AsyncIterator[list[str]]:
    """kwok nodes (Ready), deleted at the end."""
    try:
        await create_nodes(kube, names, labels=labels)
        yield names
    finally:
        for name in names:
            await remove(kube, NODES, name)


@contextlib.asynccontextmanager
async def namespace(kube: KubeClient, name: str) -> AsyncIterator[str]:
    await ensure_namespace(kube, name)
    try:
        yield name
    finally:
        with contextlib.suppress(ApiError):
            await kube.delete(NAMESPACES, name)


@contextlib.asynccontextmanager
async def bound_pod(
    kube: KubeClient, namespace: str, name: str, node: str, *, labels: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """A pod bound to `node` (kwok runs it there), removed at the end."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
    }
    await kube.create(PODS, body, namespace=namespace)
    try:
        yield name
    finally:
        await remove(kube, PODS, name, namespace=namespace)


async def remove(kube: KubeClient, resource: Resource, name: str, *, namespace: str | None = None) -> None:
    """Delete at once (no grace period) and wait until it is gone."""
    with contextlib.suppress(ApiError):  # gone already
        await kube.delete(resource, name, namespace=namespace, options={"gracePeriodSeconds": 0})

    async def gone() -> bool:
        try:
            await kube.get(resource, name, namespace=namespace)
        except ApiError as err:
            if err.not_found:
                return True
            raise
        return False

    await eventually(gone, within=30, what=f"{resource.plural} {name} to be gone")


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """A monitor as a task for the length of the block."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def broken(task: asyncio.Task[None], *, within: float = 30.0) -> InvariantBrokenError:
    """What the monitor's task fails with, within `within` seconds."""
    with pytest.raises(InvariantBrokenError) as caught:
        async with asyncio.timeout(within):
            await task
    return caught.value


async def cordon(kube: KubeClient, node: str, *, on: bool = True) -> None:
    await kube.merge_patch(NODES, node, {"spec": {"unschedulable": on}})


@contextlib.asynccontextmanager
async def disruption(
    kube: KubeClient, prefix: str, *, limit: int, admin: Iterable[str] = ()
) -> AsyncIterator[tuple[Disruption, asyncio.Task[None]]]:
    """A running Disruption monitor of the nodes named `prefix...`, `admin` the administrator's cordons."""
    monitor = Disruption(kube, limit=limit, prefix=prefix, timeline=Timeline())
    monitor.admin_cordoned = set(admin)
    async with running(monitor.run()) as task:
        yield monitor, task


async def judged(monitor: Disruption) -> None:
    """Every check the monitor started (an eviction's, a reboot's) has ended: it has judged."""
    await until(lambda: not monitor._checks, within=30, what="the monitor's checks to end")


def followed_host(monitor: Disruption, node: str) -> SimulatedHost:
    """A simulated host for `node`, followed by the monitor (as `run_scenario` follows each)."""
    host = SimulatedHost(node, version="1.0.0", repository=Repository())
    monitor.follow_host(host)
    return host


def reboot(host: SimulatedHost) -> None:
    """The host accepts a reboot through its API, as brupop's agent asks for it; its server then runs the
    response's `after` (the shutdown begins)."""
    answer = host.handle("POST", "/actions/reboot")
    assert answer.status == 204
    assert answer.after is not None
    answer.after()


def eviction(client: str, namespace: str, pod: str) -> Exchange:
    """An eviction as the fault proxy hands it to its observers when it arrives."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
    body = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}})
    return Exchange(client, "POST", path, {}, body.encode(), time.monotonic())


# Disruption.


@pytest.mark.integration
async def test_disruption_a_cordon_over_the_limit_fails_naming_the_nodes(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Limit 1: one node unschedulable is allowed (the monitor has seen it and goes on), the second fails
    the run, naming both nodes, what took each out, and the limit. A monitor that failed at the limit
    would have named one node only."""
    async with (
        kwok_nodes(kube, ["mon-over-a", "mon-over-b"]) as (a, b),
        disruption(kube, "mon-over-", limit=1) as (monitor, task),
    ):
        await cordon(kube, a)
        await until(lambda: monitor.unschedulable == {a}, what=f"the monitor to see {a} unschedulable")
        await cordon(kube, b)
        error = await broken(task)
    assert error.kind == "disruption"
    assert str(error) == (
        "2 nodes disrupted at once (mon-over-a (unschedulable), mon-over-b (unschedulable)), limit 1"
    )


@pytest.mark.integration
async def test_disruption_a_rebooting_host_counts_and_an_admins_cordon_does_not(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Limit 1: an administrator's cordon of b and brupop's of a are one disruption (a); when b's host
    accepts a reboot, b is out of service too, and the run fails naming a as unschedulable and b as
    rebooting. Had the admin's cordon counted, the failure would have come at a's cordon, naming b
    unschedulable."""
    async with (
        kwok_nodes(kube, ["mon-boot-a", "mon-boot-b"]) as (a, b),
        disruption(kube, "mon-boot-", limit=1, admin={"mon-boot-b"}) as (monitor, task),
    ):
        host = followed_host(monitor, b)
        await cordon(kube, b)
        await cordon(kube, a)
        await until(lambda: monitor.unschedulable == {a, b}, what="the monitor to see both unschedulable")
        reboot(host)
        error = await broken(task)
    assert error.kind == "disruption"
    assert str(error) == (
        "2 nodes disrupted at once (mon-boot-a (unschedulable), mon-boot-b (host rebooting)), limit 1"
    )


@pytest.mark.integration
async def test_disruption_a_reboot_of_a_schedulable_node_fails(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """A host that accepts a reboot while its node is schedulable (no cordon first) fails the run, within
    the limit all the same."""
    async with (
        kwok_nodes(kube, ["mon-sched-a"]) as (a,),
        disruption(kube, "mon-sched-", limit=2) as (monitor, task),
    ):
        reboot(followed_host(monitor, a))
        error = await broken(task)
    assert error.kind == "disruption"
    assert str(error) == "the host of mon-sched-a accepted a reboot while mon-sched-a was schedulable"


@pytest.mark.integration
async def test_disruption_a_reboot_with_a_pod_never_evicted_fails(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """A host that accepts a reboot while a pod (not a DaemonSet's) still runs on its node, cordoned but
    never drained, fails the run naming the pod."""
    async with (
        kwok_nodes(kube, ["mon-drain-a"]) as (a,),
        namespace(kube, "mon-drain") as ns,
        bound_pod(kube, ns, "mon-drain-pod", a),
        disruption(kube, "mon-drain-", limit=2) as (monitor, task),
    ):
        await cordon(kube, a)
        reboot(followed_host(monitor, a))
        error = await broken(task)
    assert error.kind == "disruption"
    assert str(error) == (
        "the host of mon-drain-a accepted a reboot with pods never evicted: mon-drain/mon-drain-pod"
    )


@pytest.mark.integration
async def test_disruption_an_eviction_from_a_schedulable_node_fails(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """An eviction asked for (as the fault proxy sees it arrive) of a pod on a schedulable node fails the
    run, naming who asked, the pod and the node."""
    async with (
        kwok_nodes(kube, ["mon-evict-a"]) as (a,),
        namespace(kube, "mon-evict") as ns,
        bound_pod(kube, ns, "mon-evict-pod", a) as pod,
        disruption(kube, "mon-evict-", limit=2) as (monitor, task),
    ):
        monitor.observe(eviction("brupop-apiserver-0", ns, pod))
        error = await broken(task)
    assert error.kind == "disruption"
    assert str(error) == (
        "brupop-apiserver-0 asked to evict mon-evict/mon-evict-pod from mon-evict-a while mon-evict-a was "
        "schedulable"
    )


@pytest.mark.integration
async def test_disruption_at_the_limit_cordoned_drained_and_rebooted_in_order_passes(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """Limit 2, everything in order: an administrator's cordon of c; brupop cordons a, evicts its pod and
    its host reboots once the pod is gone; c's host reboots (an admin-cordoned node may be updated). Two
    nodes out at the peak (a, and c rebooting), exactly the limit: the monitor judged every step (its
    checks all ended) and is still running."""
    async with (
        kwok_nodes(kube, ["mon-fine-a", "mon-fine-b", "mon-fine-c"]) as (a, b, c),
        namespace(kube, "mon-fine") as ns,
        disruption(kube, "mon-fine-", limit=2, admin={"mon-fine-c"}) as (monitor, task),
    ):
        hosts = {a: followed_host(monitor, a), c: followed_host(monitor, c)}
        async with bound_pod(kube, ns, "mon-fine-pod", a) as pod:
            await cordon(kube, c)
            await cordon(kube, a)
            await until(lambda: monitor.unschedulable == {a, c}, what="the monitor to see a and c cordoned")
            monitor.observe(eviction("brupop-apiserver-0", ns, pod))
            await judged(monitor)  # while the pod is still there to be judged
        reboot(hosts[a])
        reboot(hosts[c])
        await judged(monitor)
        assert monitor.disrupted() == {a, c}
        for host in hosts.values():
            host.go_down()
            host.come_back()
        await cordon(kube, a, on=False)
        await until(lambda: monitor.unschedulable == {c}, what=f"the monitor to see {a} schedulable again")
        assert monitor.disrupted() == set()
        assert monitor.peak == 2
        assert not task.done(), task.exception()
        assert b not in monitor.unschedulable


# The end of a run: nodes left cordoned, administrators' cordons undone.


@dataclass
class Ended:
    """What `check_end_state` reads of a run: its client, its nodes and its Disruption monitor, which
    knows the administrator's cordons."""

    kube: KubeClient
    disruption: Disruption
    names: list[str]
    timeline: Timeline = field(default_factory=Timeline)
    untouched: set[str] = field(default_factory=set)


async def check_end(kube: KubeClient, names: list[str], *, admin: Iterable[str]) -> None:
    monitor = Disruption(kube, limit=1, prefix="mon-", timeline=Timeline())
    monitor.admin_cordoned = set(admin)
    await check_end_state(cast(Run, Ended(kube, monitor, names)), plain=[])


@pytest.mark.integration
async def test_end_state_a_node_left_cordoned_fails(cluster: ClusterState, kube: KubeClient) -> None:
    """A node still unschedulable at the end that no administrator cordoned fails the run, naming it; the
    administrator's own cordon beside it is not blamed."""
    async with kwok_nodes(kube, ["mon-left-a", "mon-left-b"]) as (a, b):
        await cordon(kube, b)  # the administrator's
        await cordon(kube, a)  # brupop's, never undone
        with pytest.raises(InvariantBrokenError) as caught:
            await check_end(kube, [b, a], admin={b})
    assert caught.value.kind == "cordon-left"
    assert str(caught.value) == "node mon-left-a was left unschedulable (no administrator cordoned it)"


@pytest.mark.integration
async def test_end_state_an_admins_cordon_undone_fails(cluster: ClusterState, kube: KubeClient) -> None:
    """An administrator's cordon gone at the end fails the run, naming the node."""
    async with kwok_nodes(kube, ["mon-undone-a", "mon-undone-b"]) as (a, b):
        with pytest.raises(InvariantBrokenError) as caught:
            await check_end(kube, [a, b], admin={b})
    assert caught.value.kind == "cordon-undone"
    assert str(caught.value) == "the administrator's cordon of mon-undone-b was undone"


@pytest.mark.integration
async def test_end_state_an_admins_cordon_left_passes(cluster: ClusterState, kube: KubeClient) -> None:
    """The end of a good run: brupop's nodes schedulable, the administrator's cordon still there, the
    workloads back (the rest of what `check_end_state` asks, on the e2e runs' workloads, which need nodes
    labelled as theirs): nothing to report."""
    await clean(kube)  # the workloads' namespace is the e2e runs': an earlier run's objects go first
    await install_crd(kube, crd_for_local_use())  # the end state also lists the shadows
    async with kwok_nodes(kube, ["mon-end-a", "mon-end-b"], labels=E2E_NODES) as (a, b):
        try:
            await workloads(kube)
            await cordon(kube, b)  # the administrator's
            await check_end(kube, [a, b], admin={b})
        finally:
            await clean(kube)  # the workloads, before their nodes go


# PodDisruptionBudgets.


class Listing(KubeClient):
    """A client that tells when a watch starts: `watch_events` starts one only after its consumer has taken
    every object of the list before, so by then a monitor has judged them all and gone on."""

    def __init__(self, config: KubeConfig) -> None:
        super().__init__(config)
        self.watching = asyncio.Event()

    async def watch(self, resource: Resource, **options: Any) -> AsyncIterator[tuple[str, Obj]]:
        self.watching.set()
        async for event in super().watch(resource, **options):
            yield event


@contextlib.asynccontextmanager
async def budget(kube: KubeClient, name: str, *, pods: int, min_available: int) -> AsyncIterator[list[str]]:
    """In the namespace `monitor_pdbs` watches: `pods` pods on a node of their own, all ready, and a PDB
    over them whose status the disruption controller has written; the pods' names. All removed at the
    end (after what an earlier e2e run left there)."""
    await clean(kube)
    await ensure_namespace(kube, WORKLOADS)
    labels = {"app": name}
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}},
    }
    names = [f"{name}-{i}" for i in range(pods)]
    async with kwok_nodes(kube, [f"{name}-node"]) as (node,), contextlib.AsyncExitStack() as stack:
        for pod in names:
            await stack.enter_async_context(bound_pod(kube, WORKLOADS, pod, node, labels=labels))
        await kube.create(PDBS, body, namespace=WORKLOADS)
        stack.push_async_callback(remove, kube, PDBS, name, namespace=WORKLOADS)

        async def ready() -> bool:
            found = [await kube.get(PODS, pod, namespace=WORKLOADS) for pod in names]
            return all(map(pod_ready, found))

        async def counted() -> bool:
            pdb = await kube.get(PDBS, name, namespace=WORKLOADS)
            status = pdb.get("status") or {}
            return (
                status.get("observedGeneration") == pdb["metadata"]["generation"]
                and status.get("currentHealthy") == pods
                and status.get("desiredHealthy") == min_available
            )

        await eventually(ready, within=60, what=f"the pods of {name} to be ready")
        await eventually(counted, within=60, what=f"the disruption controller to count {name}'s pods")
        yield names


@pytest.mark.integration
async def test_pdbs_a_budget_below_its_desired_healthy_fails_naming_it_and_its_pods(
    cluster: ClusterState, kube: KubeClient
) -> None:
    """A budget at its minimum (2 of 2 healthy) passes; one of its pods deleted (not evicted: the budget
    never allowed it) takes it below, and the run fails naming the budget, its counts, and the pod left
    with its node."""
    listing = Listing(KubeConfig.from_kubeconfig(Path(cluster.kubeconfig)))
    async with (
        budget(kube, "mon-pdb-low", pods=2, min_available=2) as pods,
        listing,
        running(monitor_pdbs(listing, Timeline())) as task,
    ):
        await until(
            lambda: listing.watching.is_set() or task.done(), what="the monitor to judge the budget as listed"
        )
        assert not task.done(), task.exception()
        await kube.delete(PODS, pods[1], namespace=WORKLOADS, options={"gracePeriodSeconds": 0})
        error = await broken(task, within=60)
    assert error.kind == "pdb"
    first, status, *rest = str(error).splitlines()
    assert first == "PDB mon-pdb-low: 1 healthy, desiredHealthy 2"
    assert status.startswith("  status: disruptionsAllowed 0, ")
    [pod] = [line for line in rest if line.startswith("  pod mon-pdb-low-0 ")]  # the one left, told as is
    assert pod.startswith("  pod mon-pdb-low-0 on mon-pdb-low-node (node Ready: True")
    assert "): ready, created " in pod


@pytest.mark.integration
async def test_pdbs_a_budget_at_its_desired_healthy_passes(cluster: ClusterState, kube: KubeClient) -> None:
    """A budget exactly at its minimum (2 of 2 healthy, nothing more allowed) is judged (the monitor took
    it and went on to watch) and does not fail the run."""
    listing = Listing(KubeConfig.from_kubeconfig(Path(cluster.kubeconfig)))
    async with (
        budget(kube, "mon-pdb-edge", pods=2, min_available=2),
        listing,
        running(monitor_pdbs(listing, Timeline())) as task,
    ):
        await until(
            lambda: listing.watching.is_set() or task.done(), what="the monitor to judge the budget as listed"
        )
        assert not task.done(), task.exception()
        pdb = await kube.get(PDBS, "mon-pdb-edge", namespace=WORKLOADS)
        assert (pdb["status"]["currentHealthy"], pdb["status"]["disruptionsAllowed"]) == (2, 0)


# Pods.watch: brupop processes that exit.


async def test_pods_watch_fails_on_an_exit_on_its_own(tmp_path: Path) -> None:
    """A controller that exits by itself (no MAX_CONCURRENT_UPDATE: code 2) fails the run, naming the pod,
    how it ended, and its last log lines."""
    timeline = Timeline()
    pods = Pods(timeline)
    process = pods.add(
        BrupopProcess(pod="brupop-controller-mon", program="controller", env={}, directory=tmp_path / "pod")
    )
    async with running(pods.watch()) as task:
        await process.start()
        error = await broken(task, within=60)
    assert error.kind == "exit"
    first, *log = str(error).splitlines()
    assert first == "brupop-controller-mon exited with code 2 on its own; its last log lines:"
    assert any("MAX_CONCURRENT_UPDATE" in line for line in log)
    assert [text for _, text in timeline.events] == ["brupop-controller-mon exited with code 2 on its own"]


def agent(pods: Pods, directory: Path) -> BrupopProcess:
    """An agent that runs (retrying an API server nobody serves) until it is stopped."""
    env = {
        "KUBECONFIG": str(unreachable_kubeconfig(directory)),
        "MY_NODE_NAME": "n",
        "APISERVER_SERVICE_PORT": "443",
    }
    return pods.add(
        BrupopProcess(pod="brupop-agent-mon", program="agent", env=env, directory=directory / "pod")
    )


async def test_pods_watch_fails_on_a_signal_the_harness_did_not_send(tmp_path: Path) -> None:
    """An agent killed by someone else (a SIGKILL the harness did not send, as the kernel's OOM killer
    would) fails the run, naming the pod and the signal."""
    pods = Pods(Timeline())
    process = agent(pods, tmp_path)
    async with running(pods.watch()) as task:
        await process.start()
        os.kill(process.pid, signal.SIGKILL)
        error = await broken(task, within=60)
    assert error.kind == "exit"
    assert str(error).startswith(
        "brupop-agent-mon exited with signal SIGKILL on its own; its last log lines:"
    )


async def test_pods_watch_passes_the_exits_the_harness_asked_for(tmp_path: Path) -> None:
    """A crash the harness made (SIGKILL) and a graceful stop (SIGTERM) of a restarted agent: both exits
    are taken and noted on the timeline, and the run goes on."""
    timeline = Timeline()
    pods = Pods(timeline)
    process = agent(pods, tmp_path)
    async with running(pods.watch()) as task:
        await process.start()
        await process.kill()
        await process.start()
        assert await process.terminate(grace=30)
        await until(lambda: len(timeline.events) == 2, within=30, what="the watch to take both exits")
        assert not task.done(), task.exception()
    assert [text for _, text in timeline.events] == [e.describe() for e in process.exits]
    assert timeline.events[0][1] == "brupop-agent-mon exited with signal SIGKILL"
    assert all(e.asked for e in process.exits)


def test_a_write_in_flight_while_another_replica_took_the_lease_is_caught() -> None:
    """A write sent within its writer's term but answered after another replica's acquisition was sent
    may have taken effect after it: judged by its arrival alone, it passed."""
    slow = Exchange("brupop-controller-0", "PATCH", SPEC, {}, b"{}", 15.9, 17.5, 200)
    [found] = judge(
        lease("brupop-controller-0", "brupop-controller-0", 1.0),
        lease("brupop-controller-1", "brupop-controller-1", 17.0),
        slow,
    )
    assert "answered at 17.50s, while the Lease was being taken by brupop-controller-1" in found
