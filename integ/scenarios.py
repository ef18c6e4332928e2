"""The named end-to-end scenarios: what goes wrong in each, done from outside the programs as it happens
in a cluster (a SIGKILL at a moment seen on the host simulator or on the fault proxy, a kube-apiserver or
etcd restart, a Lease renewal that hangs), and what must hold besides the invariants every run checks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from brupop.kube.client import PODS, SHADOWS
from brupop.kube.leader import LeaseTiming
from brupop.models.constants import NAMESPACE
from brupop.models.host import CommandType
from brupop.models.shadow import ShadowState
from integ.cluster import restart_component
from integ.e2e import Chaos, Run, Scenario, fleet_done, quietly
from integ.faultproxy import Exchange, Fault, Match
from integ.hostsim.host import Response, SimulatedHost
from integ.kubetools import eventually, until, watch_events
from integ.monitors import InvariantBrokenError
from integ.operator import ApiserverProcess

LEASE_SECONDS = LeaseTiming().duration.total_seconds()
RETRY_SECONDS = LeaseTiming().retry_period.total_seconds()
"""The controllers' Lease timings (their defaults): a standby takes over an expired Lease on its next try,
so within LEASE_SECONDS + RETRY_SECONDS of the holder's last renewal."""


async def _any_spec(run: Run, state: ShadowState) -> bool:
    items, _ = await run.kube.list(SHADOWS, namespace=NAMESPACE)
    return any((o.get("spec") or {}).get("state") == state.value for o in items)


async def _mid_wave(run: Run) -> None:
    """Until some node is cordoned for its update (a wave is under way)."""
    await until(
        lambda: bool(run.disruption.unschedulable - run.disruption.admin_cordoned),
        within=300,
        what="a node to be cordoned",
    )


async def restart_controller(run: Run) -> None:
    """The leader's pod is deleted mid-rollout (SIGTERM: it releases the Lease) and replaced."""
    await eventually(
        lambda: quietly(lambda: _any_spec(run, ShadowState.REBOOTED_INTO_UPDATE)), within=300, what="a reboot"
    )
    leader = await eventually(run.controllers.leader, what="a leader")
    await run.controllers.stop(leader)
    await run.controllers.start()


async def _taken_over(run: Run, old: str, *, since: float, within: float) -> str:
    async def other() -> str | None:
        holder = await quietly(run.controllers.holder)
        return holder if holder and holder != old else None

    try:
        holder: str = await eventually(other, within=within, what="another replica to take the Lease")
    except TimeoutError:
        raise InvariantBrokenError(f"no replica took over from {old} within {within:g}s") from None
    run.timeline.note(f"{holder} took over {asyncio.get_running_loop().time() - since:.1f}s after {old} went")
    return holder


async def kill_leader_mid_wave(run: Run) -> None:
    """After the one-shot trigger fired, the standby is replaced (its successor starts after the trigger),
    then the leader is SIGKILLed while a node is cordoned. A replica must take over within the lease
    duration, keep to the limit (the monitors), and carry the trigger's rollout on to the end."""
    assert run.opens_at is not None
    opens_at = run.opens_at
    await until(lambda: datetime.now(UTC) >= opens_at, within=120, what="the trigger")
    leader = await eventually(run.controllers.leader, what="a leader")
    standby = next(p for p in run.controllers.live if p is not leader)
    await run.controllers.kill(standby)
    await run.controllers.start()
    await _mid_wave(run)
    killed = asyncio.get_running_loop().time()
    await run.controllers.kill(leader)
    await _taken_over(run, leader.pod, since=killed, within=LEASE_SECONDS + RETRY_SECONDS + 1)
    await run.controllers.start()  # the Deployment replaces the pod


async def trigger_not_replayed(run: Run) -> None:
    """A one-shot trigger's rollout ends; then a node joins. The leader is SIGKILLed and the standby, which
    started before the trigger fired, takes over: it must not fire that trigger again for the newcomer."""
    await eventually(
        lambda: quietly(lambda: fleet_done(run.kube, run.names, set())),
        within=300,
        what="the trigger's rollout",
    )
    late = "e2e-late"
    run.untouched.add(late)
    await run.add_node(late)

    async def reported() -> bool:
        items, _ = await run.kube.list(SHADOWS, namespace=NAMESPACE)
        return any(o["metadata"]["name"] == f"brs-{late}" and o.get("status") for o in items)

    await eventually(reported, within=60, what=f"the agent of {late} to report")
    leader = await eventually(run.controllers.leader, what="a leader")
    killed = asyncio.get_running_loop().time()
    await run.controllers.kill(leader)
    holder = await _taken_over(run, leader.pod, since=killed, within=LEASE_SECONDS + RETRY_SECONDS + 1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3 * RETRY_SECONDS + 4):  # the new leader's first passes
            async for _, obj in watch_events(run.kube, SHADOWS, NAMESPACE):
                state = (obj.get("spec") or {}).get("state")
                if obj["metadata"]["name"] == f"brs-{late}" and state not in (None, ShadowState.IDLE.value):
                    raise InvariantBrokenError(
                        f"{holder} sent {late} to {state} after taking over: it replayed the one-shot "
                        f"trigger of {run.opens_at} that had fired and ended before {late} joined"
                    )


async def stall_leader_lease(run: Run) -> None:
    """Mid-wave, every Lease request of the leader hangs at the proxy (its other calls go through). It
    must stop writing specs before its lease can be taken (the leadership monitor judges that from the
    proxy's log), and a standby must take over once the lease runs out. Then the stall is lifted."""
    await _mid_wave(run)
    leader = await eventually(run.controllers.leader, what="a leader")
    stalled = run.proxy.inject(Fault(Match(client=re.escape(leader.pod), path=r"/leases"), "stall"))
    since = asyncio.get_running_loop().time()
    run.timeline.note(f"stalling the Lease requests of {leader.pod}")
    await _taken_over(run, leader.pod, since=since, within=LEASE_SECONDS + 2 * RETRY_SECONDS + 1)
    stalled.lift()
    run.timeline.note(f"lifted the stall of {leader.pod} ({stalled.used} requests held)")


def _restart(component: str) -> Chaos:
    async def restart(run: Run) -> None:
        await _mid_wave(run)
        run.timeline.note(f"restarting {component}")
        await asyncio.to_thread(restart_component, run.cluster, component, down_for=2.0)
        run.timeline.note(f"{component} serves again")

    restart.__doc__ = f"{component} is SIGKILLed while a node is cordoned, down 2 s, then started again."
    return restart


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


async def _kill_on_request(run: Run, pick: Callable[[Exchange], str | None]) -> None:
    """SIGKILL the agent of the node `pick` names for the first request the proxy sees that it names one
    for (before the request goes on to the kube-apiserver), then start its successor."""
    killed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def observe(exchange: Exchange) -> None:
        node = None if killed.done() else pick(exchange)
        if node is not None:
            run.agents[node].kill_now()
            run.timeline.note(
                f"SIGKILL the agent of {node} at {exchange.method} {exchange.path} by {exchange.client}"
            )
            killed.set_result(node)

    run.proxy.observers.append(observe)
    await until(killed.done, within=300, what="the moment to kill an agent")
    node = killed.result()
    await run.agents[node].wait()
    await run.agents.start(node)


async def _successor(run: Run, node: str, hit: asyncio.Event) -> None:
    await until(hit.is_set, within=300, what=f"the moment to kill the agent of {node}")
    await run.agents[node].wait()
    await run.agents.start(node)


async def kill_agent_while_cordoned(run: Run) -> None:
    """The agent of the second node is SIGKILLed as its node's cordon goes to the kube-apiserver; its
    successor must drain, reboot and finish."""
    node = run.names[1]

    def cordon(exchange: Exchange) -> bool:
        body = exchange.json()
        return (
            exchange.method == "PATCH"
            and exchange.path == f"/api/v1/nodes/{node}"
            and isinstance(body, dict)
            and (body.get("spec") or {}).get("unschedulable") is True
        )

    await _kill_on_request(run, lambda exchange: node if cordon(exchange) else None)


async def kill_agent_while_draining(run: Run) -> None:
    """The agent of the first node whose drain evicts a pod is SIGKILLed at that eviction (which nodes
    have pods to evict is the scheduler's choice: a fixed node may have none and never drain)."""
    node_of: dict[str, str] = {}

    async def pods_on_nodes() -> None:
        async for _, pod in watch_events(run.kube, PODS, None):
            node = (pod.get("spec") or {}).get("nodeName")
            if node in run.names:
                node_of[pod["metadata"]["name"]] = node

    follow = asyncio.create_task(pods_on_nodes())

    def evicted(exchange: Exchange) -> str | None:
        match = re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)/eviction", exchange.path)
        return node_of.get(match[1]) if exchange.method == "POST" and match is not None else None

    try:
        await _kill_on_request(run, evicted)
    finally:
        follow.cancel()


async def kill_agent_before_reboot(run: Run) -> None:
    """The agent of the second node is SIGKILLed the moment its reboot request reaches the host, which
    then does not reboot (the request never arrived, as far as the host knows); its successor must
    reboot the host and finish."""
    node = run.names[1]
    host = run.hosts[node]
    hit = asyncio.Event()
    handle = host.handle

    def intercept(method: str, target: str) -> Response:
        if method == "POST" and target.startswith("/actions/reboot") and not hit.is_set():
            run.agents[node].kill_now()
            run.timeline.note(f"SIGKILL the agent of {node} as its reboot request arrived")
            hit.set()
            return Response(500, b"never read: its sender is dead")
        return handle(method, target)

    host.handle = intercept  # type: ignore[method-assign]
    await _successor(run, node, hit)
    if host.boots:
        raise InvariantBrokenError(f"{node} rebooted although its agent died before asking")


async def kill_agent_while_rebooting(run: Run) -> None:
    """The agent of the second node is SIGKILLed the moment its host goes down for the reboot (its
    shutdown over); its successor starts while the host is away and must verify the new version,
    uncordon and report."""
    node = run.names[1]
    host = run.hosts[node]
    hit = asyncio.Event()
    go_down = host.go_down

    def down() -> None:
        go_down()
        if not hit.is_set():
            run.agents[node].kill_now()
            run.timeline.note(f"SIGKILL the agent of {node} as its host went down")
            hit.set()

    host.go_down = down  # type: ignore[method-assign]
    await _successor(run, node, hit)


SLOW_SHUTDOWN = 90.0
"""Real seconds the slow host's API keeps answering after it accepted a reboot: unscaled, since the
agent's own limits (its reboot and retry budgets) are real seconds too."""


def _slow_shutdown(host: SimulatedHost) -> None:
    host.faults.slow_shutdown = SLOW_SHUTDOWN / host.time_scale  # host seconds, scaled back to real ones


async def slow_shutdown_is_not_a_rollback(run: Run) -> None:
    """The second node's host keeps answering (the old version, the update Ready and next to boot, the
    same boot ID) for SLOW_SHUTDOWN seconds after it accepted the reboot. Its agent cannot read the
    boot ID (with it, the kernel's word decides and the host's answers are never asked), so it must ask
    the host meanwhile and wait: no deactivate-update, no failure (the unplanned-failure monitor), the node
    updated in the end. The step checks that the shutdown did last and that the agent saw the host
    answering."""
    node = run.names[1]
    host = run.hosts[node]
    loop = asyncio.get_running_loop()
    asked: list[tuple[float, str, str, int]] = []
    accepted: list[float] = []
    down = asyncio.Event()
    handle, accept, go_down = host.handle, host.on_reboot, host.go_down

    def record(method: str, target: str) -> Response:
        answer = handle(method, target)
        asked.append((loop.time(), method, target, answer.status))
        return answer

    def rebooting() -> None:
        accept()
        accepted.append(loop.time())

    def gone() -> None:
        go_down()
        down.set()

    host.handle = record  # type: ignore[method-assign]
    host.on_reboot = rebooting
    host.go_down = gone  # type: ignore[method-assign]
    await until(down.is_set, within=300, what=f"the host of {node} to go down")
    shutdown = loop.time() - accepted[0]
    expected = SLOW_SHUTDOWN
    run.timeline.note(f"the host of {node} answered for {shutdown:.1f}s after accepting the reboot")
    if shutdown < 0.9 * expected:
        raise InvariantBrokenError(f"the host of {node} went down after {shutdown:.1f}s, not {expected:.1f}s")
    during = [a for a in asked if a[0] > accepted[0]]
    if not any(status == 200 for _, _, _, status in during):
        raise InvariantBrokenError(f"the agent of {node} never heard its host answer during the shutdown")
    sent = [f"{method} {target}" for _, method, target, _ in during if method == "POST"]
    if sent:
        raise InvariantBrokenError(f"the agent of {node} sent {sent} to a host that was shutting down")


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
    "admin-cordon": Scenario(
        "a node an administrator cordoned before the run updates and stays cordoned",
        admin_cordoned=frozenset({1}),
    ),
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
        "the leader's pod is deleted mid-rollout (SIGTERM) and replaced", chaos=restart_controller
    ),
    "leader-killed-mid-wave": Scenario(
        "the leader is SIGKILLed while a node is cordoned, after a one-shot trigger fired",
        opens_after=6.0,
        chaos=kill_leader_mid_wave,
    ),
    "trigger-not-replayed": Scenario(
        "after a one-shot trigger's rollout a node joins and the leader is SIGKILLed: the standby must not "
        "fire the old trigger again",
        opens_after=6.0,
        chaos=trigger_not_replayed,
        after_rollout=True,
    ),
    "lease-stalled": Scenario(
        "the leader's Lease renewals hang mid-wave: it must step down before its lease can be taken",
        chaos=stall_leader_lease,
        # One node at a time, slower hosts: the rollout outlasts the lease by far, so writes after it
        # would show.
        concurrency=1,
        time_scale=0.1,
    ),
    "kube-apiserver-restart": Scenario(
        "kube-apiserver is killed and started again mid-rollout", chaos=_restart("kube-apiserver")
    ),
    "etcd-restart": Scenario("etcd is killed and started again mid-rollout", chaos=_restart("etcd")),
    "apiserver-killed": Scenario(
        "an apiserver replica is killed in the middle of a drain",
        chaos=kill_apiserver_mid_drain,
    ),
    "agent-killed-while-cordoned": Scenario(
        "an agent is SIGKILLed as its node is cordoned", chaos=kill_agent_while_cordoned
    ),
    "agent-killed-while-draining": Scenario(
        "an agent is SIGKILLed at the first eviction from its node", chaos=kill_agent_while_draining
    ),
    "agent-killed-before-reboot": Scenario(
        "an agent is SIGKILLed as its reboot request reaches the host", chaos=kill_agent_before_reboot
    ),
    "slow-shutdown": Scenario(
        f"a host keeps answering for {SLOW_SHUTDOWN:g} s after accepting the reboot: it is "
        "shutting down, not rolled back",
        faults={1: _slow_shutdown},
        without_boot_id=frozenset({1}),
        chaos=slow_shutdown_is_not_a_rollback,
    ),
    "agent-killed-while-rebooting": Scenario(
        "an agent is SIGKILLed as its host goes down for the reboot", chaos=kill_agent_while_rebooting
    ),
}
