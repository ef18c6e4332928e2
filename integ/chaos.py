"""The chaos campaign: randomized end-to-end runs that hunt for what no named scenario covers.

`plan(seed)` draws everything about a run from the seed alone: the fleet (3-6 nodes), the concurrency, the
schedule (open, or a one-shot trigger a few seconds in), PDB-guarded workloads (always) and a PDB that never
allows a drain (sometimes), administrators' cordons, failing hosts (a rollback, a refused download), and a
timetable of trouble: SIGKILLs of any brupop process (an agent, the leader, the standby, an apiserver
replica), kube-apiserver and etcd restarts, the fault proxy's 429s, 503s, stalled Lease renewals, delays
and cut watches, and the opt-in label removed from a node mid-run. Each run is checked by the monitors of
every end-to-end run (integ/e2e.py) and prints one line; a failing run prints its seed and timeline, and
`python -m integ chaos --runs 1 --seed S` replays it (the same plan; the timing of the real processes
around it is the machine's).

Runs share one cluster and clean up after themselves (integ.workloads.clean).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from brupop.kube.client import NODES, PODS, KubeClient
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE, UPDATER_INTERFACE_LABEL
from brupop.models.host import CommandType
from integ.actors import GRACE
from integ.clocks import Clocks
from integ.cluster import ClusterState, caught_up, restart_component
from integ.e2e import Chaos, Options, Run, Scenario, ideal_seconds, quietly, run_scenario
from integ.faultproxy import Fault, Match
from integ.hostsim.host import SimulatedHost
from integ.kubetools import eventually
from integ.monitors import InvariantBrokenError
from integ.workloads import clean

KINDS = (
    "kill-agent",
    "kill-leader",
    "kill-standby",
    "kill-apiserver",
    "restart-kube-apiserver",
    "restart-etcd",
    "proxy-429",
    "proxy-503",
    "stall-lease",
    "proxy-delay",
    "cut-watches",
    "remove-label",
)


@dataclass(frozen=True)
class Step:
    at: float
    """Seconds after the controllers started."""
    kind: str
    node: int = 0
    """The node it concerns (an agent, a label), by index."""
    seconds: float = 0.0
    """How long a proxy fault lasts, or a component stays down, or a killed pod waits to be replaced."""

    def describe(self) -> str:
        target = (
            f" e2e-{self.node}"
            if self.kind in ("kill-agent", "remove-label", "proxy-429", "proxy-503")
            else ""
        )
        length = f" {self.seconds:.1f}s" if self.seconds else ""
        return f"{self.kind}{target}{length} at {self.at:.1f}s"


@dataclass(frozen=True)
class Plan:
    seed: int
    nodes: int
    concurrency: int
    opens_after: float | None
    admin_cordoned: frozenset[int]
    host_faults: tuple[tuple[int, str], ...] = ()
    blocking_pdb_on: int | None = None
    steps: tuple[Step, ...] = ()
    clocks: Clocks = field(default_factory=Clocks)

    def describe(self) -> str:
        parts = [f"{self.nodes} nodes, {self.concurrency} at a time"]
        if self.opens_after is not None:
            parts.append(f"trigger at +{self.opens_after:.0f}s")
        if self.admin_cordoned:
            parts.append(f"admin cordons {sorted(self.admin_cordoned)}")
        if self.host_faults:
            parts.append("hosts " + ", ".join(f"{i}:{f}" for i, f in self.host_faults))
        if self.blocking_pdb_on is not None:
            parts.append(f"blocking PDB on {self.blocking_pdb_on}")
        if self.clocks.skewed:
            parts.append(f"clocks {self.clocks.describe()}")
        return "; ".join(parts)


def plan(seed: int, *, time_scale: float) -> Plan:
    """Everything about run `seed`, from the seed alone."""
    rng = random.Random(seed)
    nodes = rng.randint(3, 6)
    concurrency = rng.randint(1, 3)
    opens_after = rng.choice([None, None, rng.uniform(3, 8)])
    admin = frozenset(rng.sample(range(nodes), k=rng.choice([0, 0, 1])))
    faulty = rng.sample(range(nodes), k=rng.choice([0, 0, 0, 1]))
    host_faults = tuple((i, rng.choice(["rollback", "prepare-fails"])) for i in sorted(faulty))
    blocking = rng.choice([None] * 5 + [rng.randrange(nodes)])
    per_node = 52 * time_scale + 2.0  # host time plus brupop's own, roughly
    span = (opens_after or 0) + per_node * -(-nodes // concurrency)
    steps = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(KINDS)
        seconds = {
            "restart-kube-apiserver": rng.uniform(0.5, 3),
            "restart-etcd": rng.uniform(0.5, 3),
            "proxy-429": rng.uniform(1, 6),
            "proxy-503": rng.uniform(1, 6),
            "stall-lease": rng.uniform(3, 20),
            "proxy-delay": rng.uniform(1, 6),
            "kill-leader": rng.uniform(0, 5),
            "kill-standby": rng.uniform(0, 5),
            "kill-agent": rng.uniform(0, 3),
        }.get(kind, 0.0)
        steps.append(
            Step(at=rng.uniform(1, max(span, 2)), kind=kind, node=rng.randrange(nodes), seconds=seconds)
        )
    steps.sort(key=lambda s: s.at)
    # Room to drain: with every node of a wave cordoned and the administrator's cordons, some node must
    # stay schedulable for the evicted pods, or the PDBs block every drain until it times out (seed 14
    # drew 3 nodes, 3 at a time and one admin cordon). Taken last, so the rest of a seed's plan is as drawn.
    concurrency = min(concurrency, nodes - len(admin) - 1)
    return Plan(
        seed, nodes, concurrency, opens_after, admin, host_faults, blocking, tuple(steps), _clocks(rng, nodes)
    )


def _clocks(rng: random.Random, nodes: int) -> Clocks:
    """Wall clocks off the machine's, drawn after the rest of the plan (an older seed's plan stays as it
    was drawn, with clocks added): up to two nodes' agents by up to two minutes either way (a node whose
    NTP failed), sometimes the controller replicas by up to 10 s each and the apiserver replicas by up to
    a minute. The controllers' stay small: the one-shot trigger is set by their clocks."""
    skewed = rng.sample(range(nodes), k=rng.choice([0, 1, 2]))
    return Clocks(
        nodes=tuple((f"e2e-{i}", rng.choice([-1, 1]) * rng.uniform(5, 120)) for i in sorted(skewed)),
        controllers=tuple(rng.uniform(-10, 10) for _ in range(2)) if rng.random() < 0.5 else (),
        apiservers=tuple(rng.uniform(-60, 60) for _ in range(2)) if rng.random() < 0.3 else (),
    )


def _host_fault(kind: str) -> Callable[[SimulatedHost], None]:
    def apply(host: SimulatedHost) -> None:
        if kind == "rollback":
            host.faults.rolls_back = True
        else:
            host.faults.failing[CommandType.PREPARE] = (1, "Failed to download the update: simulated")

    return apply


async def _remove_label(run: Run, node: str) -> None:
    """The administrator takes the node out of brupop; the DaemonSet's pod goes, so its agent is stopped
    as the kubelet stops it (SIGTERM)."""
    run.left.add(node)
    await run.kube.merge_patch(NODES, node, {"metadata": {"labels": {UPDATER_INTERFACE_LABEL: None}}})

    async def pod_gone() -> bool:
        items, _ = await run.kube.list(
            PODS,
            namespace=NAMESPACE,
            label_selector=f"{COMPONENT_LABEL}={AGENT_COMPONENT}",
            field_selector=f"spec.nodeName={node}",
        )
        return all(p["metadata"].get("deletionTimestamp") for p in items)

    await eventually(lambda: quietly(pod_gone), within=60, what=f"the agent pod of {node} to go")
    if not await run.agents[node].terminate(grace=GRACE):
        raise InvariantBrokenError(
            f"the agent of {node} did not stop within {GRACE:g}s of SIGTERM", kind="shutdown"
        )
    run.timeline.note(f"SIGTERM the agent of {node} (its pod is gone)")


async def _after(seconds: float, work: Callable[[], object]) -> None:
    await asyncio.sleep(seconds)
    result = work()
    if asyncio.iscoroutine(result):
        await result


async def _step(run: Run, step: Step, background: set[asyncio.Task[None]], missed: list[Step]) -> None:
    """Take one step; one that finds nothing to act on (no live agent, no leader yet, a fault that no
    request met) goes into `missed`, so the summary counts only the faults that happened."""
    node = run.names[step.node]
    proxy = run.proxy

    def later(seconds: float, work: Callable[[], object]) -> None:
        task = asyncio.create_task(_after(seconds, work))
        background.add(task)

    def fault_for(fault: Fault) -> None:
        injected = proxy.inject(fault)

        def lift() -> None:
            injected.lift()
            if not injected.used:
                missed.append(step)

        later(step.seconds, lift)

    if step.kind == "kill-agent":
        if node in run.left or not run.agents[node].running:
            missed.append(step)
            return
        await run.agents.kill(node)

        async def restart() -> None:
            if node not in run.left and not run.agents[node].running:
                await run.agents.start(node)

        later(step.seconds, restart)
    elif step.kind in ("kill-leader", "kill-standby"):
        leader = await quietly(run.controllers.leader)
        pick = [p for p in run.controllers.live if (p is leader) == (step.kind == "kill-leader")]
        if leader is None or not pick:
            missed.append(
                step
            )  # no leader yet: it would kill a replica mid-election, not a leader or standby
            return
        await run.controllers.kill(pick[0])
        later(step.seconds, run.controllers.start)
    elif step.kind == "kill-apiserver":
        await run.replicas.kill(run.replicas.live[0])
    elif step.kind in ("restart-kube-apiserver", "restart-etcd"):
        component = step.kind.removeprefix("restart-")
        await asyncio.to_thread(restart_component, run.cluster, component, down_for=step.seconds)
        run.timeline.note(f"{component} serves again")
    elif step.kind in ("proxy-429", "proxy-503"):
        agent = re.escape(run.agents[node].pod)
        status = int(step.kind.removeprefix("proxy-"))
        fault_for(
            Fault(Match(client=agent), "answer", status=status, retry_after=1 if status == 429 else None)
        )
    elif step.kind == "stall-lease":
        leader = await quietly(run.controllers.leader)
        if leader is None:
            missed.append(step)
            return
        fault_for(Fault(Match(client=re.escape(leader.pod), path="/leases"), "stall"))
    elif step.kind == "proxy-delay":
        fault_for(Fault(Match(client="brupop-.*"), "delay", seconds=0.5))
    elif step.kind == "cut-watches":
        cut = proxy.cut(Match(watch=True))
        run.timeline.note(f"cut {cut} watches")
        if not cut:
            missed.append(step)
    elif step.kind == "remove-label":
        if node in run.left:
            missed.append(step)
            return
        await _remove_label(run, node)


def chaos_of(p: Plan, done: list[Step], missed: list[Step]) -> Chaos:
    """The plan's timetable; each step taken is appended to `done`, and also to `missed` when it found
    nothing to act on."""

    async def chaos(run: Run) -> None:
        background: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        try:
            for step in p.steps:
                await asyncio.sleep(max(started + step.at - time.monotonic(), 0))
                run.timeline.note(f"chaos: {step.describe()}")
                done.append(step)
                await _step(run, step, background, missed)
            await asyncio.gather(*background)
        finally:
            for task in background:
                task.cancel()
            run.proxy.lift_all()

    return chaos


# Steps after which the disruption controller may miss a pod's deletion and hold a PDB for two minutes
# (see Scenario.drain_seconds): a plan with any of them keeps the default drain limit.
_MISSED_DELETIONS = frozenset({"restart-kube-apiserver", "restart-etcd", "kill-apiserver"})


def scenario_of(p: Plan, done: list[Step], missed: list[Step]) -> Scenario:
    # A blocking PDB fails its node after the drain limit: short, unless a step may hold the other PDBs.
    short_drains = p.blocking_pdb_on is not None and not any(s.kind in _MISSED_DELETIONS for s in p.steps)
    return Scenario(
        f"chaos seed {p.seed}",
        faults={i: _host_fault(kind) for i, kind in p.host_faults},
        failing=frozenset(i for i, _ in p.host_faults)
        | ({p.blocking_pdb_on} if p.blocking_pdb_on is not None else set()),
        blocking_pdb_on=p.blocking_pdb_on,
        admin_cordoned=p.admin_cordoned,
        drain_seconds=15.0 if short_drains else Scenario.drain_seconds,
        opens_after=p.opens_after,
        clocks=p.clocks,
        chaos=chaos_of(p, done, missed),
        chaos_optional=True,
    )


@dataclass
class Outcome:
    plan: Plan
    verdict: str
    """"ok", or the kind of rule broken."""
    seconds: float
    ideal: float
    message: str = ""
    done: tuple[Step, ...] = ()
    """The steps the run reached before the fleet converged (the rest were called off)."""
    missed: tuple[Step, ...] = ()
    """The steps among them that found nothing to act on."""

    def injected(self) -> list[Step]:
        """The faults that happened."""
        return [s for s in self.done if s not in self.missed]


async def one_run(
    cluster: ClusterState, kube: KubeClient, work: Path, seed: int, *, time_scale: float
) -> Outcome:
    p = plan(seed, time_scale=time_scale)
    options = Options(nodes=p.nodes, concurrency=p.concurrency, time_scale=time_scale, within=300)
    await clean(kube)
    started = time.monotonic()
    done: list[Step] = []
    missed: list[Step] = []
    scenario = scenario_of(p, done, missed)

    def ended(verdict: str, seconds: float, ideal: float, message: str = "") -> Outcome:
        return Outcome(p, verdict, seconds, ideal, message, tuple(done), tuple(missed))

    try:
        report = await run_scenario(cluster, kube, work / f"run-{seed}", options, scenario)
    except InvariantBrokenError as err:
        return ended(err.kind, time.monotonic() - started, ideal_seconds(options), str(err))
    except Exception:  # the test world itself failed: this run's failure, not the campaign's end
        return ended("harness", time.monotonic() - started, ideal_seconds(options), traceback.format_exc())
    outcome = ended("ok", report.total, report.ideal)
    try:
        await clean(kube)  # a run is over once what it made is gone: what lingers is its failure
    except TimeoutError as err:
        return replace(outcome, verdict="cleanup", message=str(err))
    return outcome


def line(outcome: Outcome) -> str:
    p = outcome.plan
    faults = ", ".join(
        s.describe()
        + ("" if s in outcome.injected() else " (no effect)" if s in outcome.done else " (not reached)")
        for s in p.steps
    )
    ratio = outcome.seconds / outcome.ideal
    return (
        f"seed {p.seed:>6}  {outcome.verdict:<13} {outcome.seconds:6.1f}s / ideal {outcome.ideal:5.1f}s "
        f"= {ratio:5.2f}  [{p.describe()}]  faults: {faults}"
    )


async def campaign(
    cluster: ClusterState,
    kube: KubeClient,
    work: Path,
    *,
    runs: int,
    seed: int,
    time_scale: float,
    out: TextIO,
) -> list[Outcome]:
    outcomes = []
    for n in range(runs):
        stops = cluster.stops
        outcome = await one_run(cluster, kube, work, seed + n, time_scale=time_scale)
        if cluster.stops != stops:  # the next run starts as its replay would: on a caught-up cluster
            try:
                await asyncio.to_thread(caught_up, cluster)
            except Exception:  # a cluster left unusable is this run's failure, told with its seed
                outcome = replace(outcome, verdict="harness", message=traceback.format_exc())
        outcomes.append(outcome)
        print(line(outcome), file=out, flush=True)
        if outcome.verdict != "ok":
            print(
                f"  replay: python -m integ chaos --runs 1 --seed {seed + n}\n"
                + "\n".join("  " + text for text in outcome.message.splitlines()),
                file=out,
                flush=True,
            )
    print(summary(outcomes), file=out, flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    verdicts = Counter(o.verdict for o in outcomes)
    faults = Counter(s.kind for o in outcomes for s in o.injected())
    missed = Counter(s.kind for o in outcomes for s in o.missed)
    ok = [o for o in outcomes if o.verdict == "ok"]
    ratios = sorted(o.seconds / o.ideal for o in ok)
    median = f"{ratios[len(ratios) // 2]:.2f}" if ratios else "-"
    return "\n".join(
        [
            f"{len(outcomes)} runs: {verdicts['ok']} passed, {len(outcomes) - verdicts['ok']} failed",
            "verdicts: " + ", ".join(f"{k} {v}" for k, v in verdicts.most_common()),
            "faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())),
            "steps with no effect (not counted above): "
            + (", ".join(f"{k} {v}" for k, v in sorted(missed.items())) or "none"),
            f"nodes left cordoned: {verdicts['cordon-left']} runs; PDB breaches: {verdicts['pdb']} runs; "
            f"not converged: {verdicts['convergence']} runs; "
            f"median makespan / ideal of the passed runs {median}",
            "failed seeds: " + (" ".join(str(o.plan.seed) for o in outcomes if o.verdict != "ok") or "none"),
        ]
    )
