"""The gatekeeper: which nodes waiting at a health gate the pool's gates block now, and since when.

A node waits at a gate when it wants to start an update (admission) or has staged one and is about to be
cordoned (`brupop.policy.checkpoints`); the reconciler names them per pool, and the nodes of pools soaking
a node (`verifying`), whose prometheus and cluster gates the soak keeps checking. The verdicts are the
pure gates' (`brupop.policy.gates`) over what the caches hold now: the last Prometheus outcome
(`brupop.controller.queries`, asked on its own task), the cluster's Pods (`brupop.controller.workloads`)
and Nodes (the reconciler's). Nothing here waits for I/O: a pass reads caches.

What is asked for and watched follows what the policies need:
- a pool's prometheus gate query is asked only while one of its nodes waits at a gate or soaks, at the
  queries' modest cadence; until it is answered it blocks (not asked is not known: fail closed);
- the Pod cache runs while some policy has a pod gate, whether or not a node waits (a node arriving at a
  gate then finds the pods known); while it lists, a pod gate blocks as unknown.

A gate that keeps blocking a node keeps its first `since` (`brupop.policy.gates.track`); one that let go
and blocks again starts afresh. Each gate that begins blocking nodes of a pool is reported once
(`Began`, an Event's worth), until it stops blocking there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from brupop.controller.queries import PrometheusQueries, Query
from brupop.controller.workloads import ClusterWorkloads
from brupop.models.health import NodeHealth
from brupop.models.policy import GateKind
from brupop.policy.admission import GateBlocked
from brupop.policy.gates import Block, GateFacts, first_blocks, gate_blocks, listed, pool_blocks, track
from brupop.policy.pools import Pool

OWNER = "gates"


@dataclass(frozen=True, slots=True)
class Began:
    """A gate that began blocking nodes of a pool in this pass."""

    pool: str
    gate: GateKind
    reason: str
    """Its reason for the first of the nodes."""
    nodes: tuple[str, ...]

    def message(self) -> str:
        noun = "node" if len(self.nodes) == 1 else "nodes"
        return f"the {self.gate} gate blocks {noun} {listed(self.nodes, 'nodes')}: {self.reason}"


@dataclass(frozen=True, slots=True)
class GateReport:
    blocked: Mapping[str, tuple[GateBlocked, ...]]
    """Node -> every gate blocking it (in the order the pure gates give), with since when."""
    pool_blocks: Mapping[str, tuple[Block, ...]]
    """Pool -> its prometheus and cluster gates' blocks now, for each pool waiting or soaking."""
    began: tuple[Began, ...] = ()
    counts: Mapping[tuple[str, GateKind], int] | None = None
    """(pool, gate) -> how many waiting nodes it blocks."""

    def first(self) -> dict[str, GateBlocked]:
        """What admission shows per node (`admit(gated=...)`)."""
        return first_blocks(self.blocked)


class Gatekeeper:
    def __init__(self, *, queries: PrometheusQueries, workloads: ClusterWorkloads) -> None:
        self._queries = queries
        self._workloads = workloads
        self._tracked: dict[str, tuple[GateBlocked, ...]] = {}
        self._blocking: set[tuple[str, GateKind]] = set()

    def evaluate(
        self,
        pools: Mapping[str, Pool],
        waiting: Mapping[str, Sequence[str]],
        *,
        verifying: Collection[str] = (),
        nodes: Sequence[NodeHealth],
        in_cycle: frozenset[str],
        now: datetime,
    ) -> GateReport:
        """This pass's verdicts. `waiting`: pool -> its nodes waiting at a gate; `verifying`: the pools
        soaking or verifying a node; `nodes`: every Node; `in_cycle`: the nodes in brupop's cycle."""
        gated = {name: pool.gates for name, pool in pools.items() if pool.gates is not None}
        self._workloads.need(OWNER, pods=any(gates.pods for gates in gated.values()), workloads=False)
        asked = {
            name: Query.of(gates.prometheus)
            for name, gates in gated.items()
            if gates.prometheus is not None and (waiting.get(name) or name in verifying)
        }
        self._queries.want(OWNER, asked.values())
        pods = self._workloads.pods() if any(gates.pods for gates in gated.values()) else ()
        current: dict[str, tuple[Block, ...]] = {}
        pool_wide: dict[str, tuple[Block, ...]] = {}
        pool_of: dict[str, str] = {}
        for name, gates in gated.items():
            facts = GateFacts(
                prometheus=self._queries.outcome(asked[name]) if name in asked else None,
                nodes=nodes,
                in_cycle=in_cycle,
                pods=pods,
            )
            if name in verifying or waiting.get(name):
                pool_wide[name] = pool_blocks(gates, facts)
            for node, blocks in gate_blocks(gates, facts, waiting.get(name, ())).items():
                current[node] = blocks
                pool_of[node] = name
        self._tracked = track(self._tracked, current, now=now)
        counts = Counter((pool_of[node], b.gate) for node, blocks in self._tracked.items() for b in blocks)
        return GateReport(
            blocked=dict(self._tracked),
            pool_blocks=pool_wide,
            began=self._began(pool_of),
            counts=dict(counts),
        )

    def _began(self, pool_of: Mapping[str, str]) -> tuple[Began, ...]:
        """The (pool, gate) pairs blocking now that did not in the last pass."""
        blocking: dict[tuple[str, GateKind], list[tuple[str, GateBlocked]]] = {}
        for node in sorted(self._tracked):
            for block in self._tracked[node]:
                blocking.setdefault((pool_of[node], block.gate), []).append((node, block))
        began = tuple(
            Began(pool=pool, gate=gate, reason=found[0][1].reason, nodes=tuple(node for node, _ in found))
            for (pool, gate), found in sorted(blocking.items())
            if (pool, gate) not in self._blocking
        )
        self._blocking = set(blocking)
        return began
