"""The health gates and post-update verification in a reconcile pass: which nodes that want to start a gate
blocks, and what to do with each node at a checkpoint of its cycle (`brupop.policy.checkpoints`: before
its cordon, after its update).

Everything a pass reads here is cached: the last Prometheus outcomes (`brupop.controller.queries`, asked on
tasks of their own), the Pods and workloads (`brupop.controller.workloads`, listed and watched only while
a policy needs them) and the Nodes (the reconciler's). So a pass never awaits Prometheus or the API.

Only pools with gates or verification are looked at: a pool with neither (every pool, with no policy
setting them) takes each step at once, as before, and nothing is listed, watched or asked for it. A node
leaving brupop (opt-in label removed) is not held: its cycle is undone or finished as before.

One `Health` lives for a leadership term (its caches and queries with it: `aclose`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog

from brupop.controller.gatekeeper import Began, Gatekeeper
from brupop.controller.health_metrics import HealthMetrics
from brupop.controller.queries import PrometheusQueries
from brupop.controller.verifier import Verifier
from brupop.controller.workloads import ClusterWorkloads, Lister
from brupop.models.health import NodeHealth
from brupop.models.shadow import BottlerocketShadow
from brupop.models.verifying import VerificationRecord
from brupop.policy.admission import GateBlocked
from brupop.policy.checkpoints import Checkpoint, Decision, Hold, at_checkpoint, before_cordon, read_record
from brupop.policy.pools import Assignment
from brupop.policy.rollout import NodeInfo, node_name_of
from brupop.policy.statemachine import is_active

log = structlog.get_logger("brupop.controller")
QUERY_INTERVAL: Final = timedelta(seconds=10)
"""How often a wanted Prometheus query is asked."""
VERIFYING: Final = frozenset({"Verifying", "Soaking"})
"""The hold codes of a node being verified (`brupop_nodes_verifying`)."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """This pass's health verdicts."""

    gated: Mapping[str, GateBlocked] = field(default_factory=dict)
    """Node -> the gate that keeps it from starting (for `admit(gated=...)`)."""
    checkpoints: Mapping[str, Decision] = field(default_factory=dict)
    """Shadow name -> what to do with its node at its checkpoint (only pools with health settings)."""
    began: tuple[Began, ...] = ()
    """Gates that began blocking nodes of a pool in this pass (an Event each)."""
    verifying: Mapping[str, int] = field(default_factory=dict)
    """Pool -> its nodes being verified or soaking."""


class Health:
    def __init__(
        self, *, queries: PrometheusQueries, workloads: ClusterWorkloads, metrics: HealthMetrics
    ) -> None:
        self._queries = queries
        self._workloads = workloads
        self._metrics = metrics
        self._gatekeeper = Gatekeeper(queries=queries, workloads=workloads)
        self._verifier = Verifier(queries=queries, workloads=workloads)
        self._unreadable: set[tuple[str, str]] = set()

    @classmethod
    def on(
        cls,
        kube: Lister,
        *,
        metrics: HealthMetrics,
        on_change: Callable[[], None],
        clock: Callable[[], datetime],
        interval: timedelta = QUERY_INTERVAL,
    ) -> Health:
        """The health parts of one leadership term on the cluster's API (`kube`)."""
        return cls(
            queries=PrometheusQueries(interval=interval, on_change=on_change, clock=clock),
            workloads=ClusterWorkloads(kube, on_change=on_change),
            metrics=metrics,
        )

    @property
    def metrics(self) -> HealthMetrics:
        return self._metrics

    def assess(
        self,
        assignment: Assignment,
        shadows: Sequence[BottlerocketShadow],
        nodes: Mapping[str, NodeInfo],
        *,
        candidates: Sequence[str],
        now: datetime,
    ) -> Assessment:
        """This pass's verdicts. `candidates`: the nodes that want to start an update."""
        pools = {
            name: pool
            for name, pool in assignment.pools.items()
            if pool.gates is not None or pool.verification is not None
        }
        staged: dict[str, list[BottlerocketShadow]] = {}
        updated: dict[str, list[BottlerocketShadow]] = {}
        for shadow in shadows if pools else ():  # no pool with health settings: no shadow to look at
            name = node_name_of(shadow)
            node = nodes.get(name)
            pool = assignment.pool_of.get(name)
            if node is None or not node.opted_in or pool not in pools:
                continue
            where = at_checkpoint(shadow)
            if where is Checkpoint.BEFORE_CORDON:
                staged.setdefault(pool, []).append(shadow)
            elif where is Checkpoint.AFTER_UPDATE:
                updated.setdefault(pool, []).append(shadow)
        waiting = {name: [node_name_of(s) for s in found] for name, found in staged.items()}
        for candidate in candidates:
            pool = assignment.pool_of.get(candidate)
            if pool in pools:
                waiting.setdefault(pool, []).append(candidate)
        verifying = {
            name: [node_name_of(s) for s in found]
            for name, found in updated.items()
            if pools[name].verification is not None
        }
        self._verifier.need(pools, verifying)
        health = (
            {
                n.name: NodeHealth(
                    name=n.name, ready=n.ready, unschedulable=n.unschedulable, annotations=n.annotations
                )
                for n in nodes.values()
            }
            if pools
            else {}
        )
        in_cycle = (
            frozenset(
                {node_name_of(s) for s in shadows if is_active(s)}
                | {n.name for n in nodes.values() if n.in_cycle}
            )
            if pools
            else frozenset()
        )
        report = self._gatekeeper.evaluate(
            pools,
            waiting,
            verifying=verifying.keys(),
            nodes=list(health.values()),
            in_cycle=in_cycle,
            now=now,
        )
        decisions: dict[str, Decision] = {}
        for name, found in staged.items():
            verification = pools[name].verification
            for shadow in found:
                node_name = node_name_of(shadow)
                wants_snapshot = verification is not None and verification.workloads
                decisions[shadow.name] = before_cordon(
                    verification,
                    shadow,
                    blocks=report.blocked.get(node_name, ()),
                    snapshot=self._verifier.snapshot(node_name) if wants_snapshot else None,
                    now=now,
                )
        for name, found in updated.items():
            for shadow in found:
                record = self._record(shadow)
                decisions[shadow.name] = self._verifier.after_update(
                    pools[name],
                    shadow,
                    record,
                    node=health.get(node_name_of(shadow)),
                    gates=report.pool_blocks.get(name, ()),
                    now=now,
                )
        held = Counter(
            assignment.pool_of[node_name_of(s)]
            for found in updated.values()
            for s in found
            if isinstance(d := decisions[s.name], Hold) and d.code in VERIFYING
        )
        self._metrics.observe(blocked=report.counts or {}, verifying=held)
        return Assessment(
            gated=report.first(), checkpoints=decisions, began=report.began, verifying=dict(held)
        )

    def _record(self, shadow: BottlerocketShadow) -> VerificationRecord | None:
        """The shadow's record (a problem with it is logged once)."""
        record, problem = read_record(shadow.annotations)
        if problem is not None and (shadow.name, problem) not in self._unreadable:
            self._unreadable.add((shadow.name, problem))
            log.warning("a verification record does not read", shadow=shadow.name, problem=problem)
        return record

    async def aclose(self) -> None:
        await self._queries.aclose()
        await self._workloads.aclose()
