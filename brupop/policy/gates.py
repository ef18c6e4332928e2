"""Pre-disruption health gates: from observed facts, whether each gate of a pool blocks new starts, and why
in words a person can act on. Checked before a node is cordoned and again on every pass while it waits; a
node already in its cycle is never stopped by a gate.

- **prometheus**: blocks while its query returns any series ("alert KubeNodeNotReady firing"). A
  Prometheus that is *unavailable* (unreachable, too slow, HTTP 5xx or 429, or its own timeout, cancel,
  unavailable or internal error) blocks unless the gate says `failOpen`. A gate that cannot work as
  written (a PromQL error, a 4xx such as a refused token, an answer that is not Prometheus's, a token or
  CA file that cannot be read, a scalar or string result) always blocks: failing open there would let a
  typo disable the gate silently.
- **pods**: blocks while a pod its selector matches exists and has not finished (Succeeded or Failed do
  not count): anywhere (scope Cluster) or on the node about to start (scope Node). While the cluster's
  pods are not known yet (the controller's Pod cache is listing them), it blocks as unknown.
- **cluster**: blocks while more of the cluster's nodes than `maxUnhealthyNodes` allows are unhealthy:
  not Ready, or unschedulable with no brupop cordon. Nodes in brupop's own update cycle never count
  (brupop made them so), nor does a node brupop cordoned.

A block says whether its gate found the cluster unhealthy or could not find out (`unknown`): verification
during a soak fails the node only on the first kind (`brupop.policy.verification`).

"Since when" is carried from one pass to the next by `track`: a gate that kept blocking a node keeps its
first time, a gate that let go and blocks again starts afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from brupop.models.health import (
    Answer,
    HttpError,
    Matrix,
    NodeHealth,
    Outcome,
    PodFact,
    QueryError,
    QueryFailure,
    Sample,
    Scalar,
    TimedOut,
    Unreachable,
    Vector,
)
from brupop.models.policy import ClusterGate, GateKind, Gates, PodGate, PodScope, PrometheusSource
from brupop.policy.admission import GateBlocked
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_BRUPOP
from brupop.policy.limits import tolerance
from brupop.policy.selector import matches, selector_text

SHOWN: Final = 5
"""Names shown in a reason before "and N more"."""
PODS_UNKNOWN: Final = "the controller has not listed the cluster's pods yet"
UNAVAILABLE_ERRORS: Final = frozenset({"timeout", "canceled", "unavailable", "internal"})
"""Prometheus errorTypes that say the server could not answer now, not that the query is wrong."""


@dataclass(frozen=True, slots=True)
class Block:
    """One gate blocking one node (or every node of the pool)."""

    gate: GateKind
    reason: str
    unknown: bool = False
    """The gate could not learn the facts (Prometheus unavailable, fail closed; a query it refuses)."""


@dataclass(frozen=True, slots=True)
class GateFacts:
    """What the gates of one pool judge, observed in one pass."""

    prometheus: Outcome | None = None
    """The prometheus gate's query outcome (None when the pool has no prometheus gate)."""
    nodes: Sequence[NodeHealth] = ()
    """Every Node of the cluster."""
    in_cycle: frozenset[str] = frozenset()
    """The nodes in brupop's update cycle (their state is brupop's doing)."""
    pods: Sequence[PodFact] | None = ()
    """The pods of the cluster (only those a pod gate could match are needed); None while they are not
    known (the controller's Pod cache is still listing them): a pod gate then blocks, as unknown."""


def listed(names: Sequence[str], unit: str) -> str:
    """`a, b, c` or `a, b, c, d, e and 3 more <unit>`."""
    if len(names) <= SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN])} and {len(names) - SHOWN} more {unit}"


def series_text(labels: Mapping[str, str]) -> str:
    """A series as PromQL writes it: `up{job="api"}`."""
    name = labels.get("__name__", "")
    rest = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()) if key != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def unavailable(failure: QueryFailure) -> bool:
    """Prometheus could not answer now (what `failOpen` is about), as opposed to a gate that is wrong."""
    if isinstance(failure, Unreachable | TimedOut):
        return True
    if isinstance(failure, HttpError):
        return failure.status >= 500 or failure.status == 429
    return isinstance(failure, QueryError) and failure.error_type in UNAVAILABLE_ERRORS


def failure_reason(source: PrometheusSource, failure: QueryFailure) -> str | None:
    """Why a query on `source` that got no answer holds things up (None: it does not, failing open)."""
    if not unavailable(failure):
        return f"{failure.describe()} (blocks until the query can be answered)"
    if source.fail_open:
        return None
    return f"{failure.describe()} (fail closed)"


def _alerts(samples: Sequence[Sample]) -> str | None:
    """`alert KubeNodeNotReady firing`, when the series are alerts (ALERTS or ALERTS_FOR_STATE)."""
    by_state: dict[str, set[str]] = {}
    for sample in samples:
        name = sample.labels.get("alertname")
        if name is None:
            return None
        by_state.setdefault(sample.labels.get("alertstate", "firing"), set()).add(name)
    parts = []
    for state, names in sorted(by_state.items()):
        ordered = sorted(names)
        noun = "alert" if len(ordered) == 1 else "alerts"
        parts.append(f"{noun} {listed(ordered, 'alerts')} {state}")
    return "; ".join(parts)


def _value_text(value: float | None) -> str:
    return "a native histogram" if value is None else f"{value:g}"


def result_text(samples: Sequence[Sample]) -> str:
    """What a non-empty instant vector holds, for a reason."""
    alerts = _alerts(samples)
    if alerts is not None:
        return alerts
    first = samples[0]
    series = "1 series" if len(samples) == 1 else f"{len(samples)} series, e.g."
    return f"{series} {series_text(first.labels)} = {_value_text(first.value)}"


def prometheus_block(source: PrometheusSource, query: str, outcome: Outcome) -> Block | None:
    """The prometheus gate: blocks while `query` returns any series."""
    if not isinstance(outcome, Answer):
        reason = failure_reason(source, outcome)
        return None if reason is None else Block(GateKind.PROMETHEUS, reason, unknown=True)
    result = outcome.result
    if isinstance(result, Vector):
        if not result.samples:
            return None
        return Block(GateKind.PROMETHEUS, f"{result_text(result.samples)} (query {query})")
    if isinstance(result, Matrix):
        if not any(series.points for series in result.series):
            return None
        return Block(GateKind.PROMETHEUS, f"{len(result.series)} series returned (query {query})")
    kind = "a scalar" if isinstance(result, Scalar) else "a string"
    return Block(
        GateKind.PROMETHEUS,
        f"the gate query {query} returns {kind}, which is never empty: write one that returns series "
        'only while something is wrong, e.g. ALERTS{alertstate="firing",severity="critical"}',
        unknown=True,
    )


def unhealthy_reason(node: NodeHealth) -> str | None:
    """Why a node counts as unhealthy for the cluster gate (None: it does not)."""
    if not node.ready:
        return "NotReady"
    if node.unschedulable and node.annotations.get(CORDON_ANNOTATION) != CORDONED_BY_BRUPOP:
        return "unschedulable"
    return None


def cluster_block(gate: ClusterGate, nodes: Sequence[NodeHealth], in_cycle: frozenset[str]) -> Block | None:
    """The cluster gate: blocks while more nodes are unhealthy than it tolerates."""
    unhealthy = []
    for node in sorted(nodes, key=lambda n: n.name):
        why = None if node.name in in_cycle else unhealthy_reason(node)
        if why is not None:
            unhealthy.append(f"{node.name} ({why})")
    allowed = tolerance(gate.max_unhealthy_nodes, len(nodes))
    if len(unhealthy) <= allowed:
        return None
    return Block(
        GateKind.CLUSTER,
        f"{len(unhealthy)} of {len(nodes)} nodes unhealthy, at most {allowed} allowed "
        f"(maxUnhealthyNodes {gate.max_unhealthy_nodes}): {listed(unhealthy, 'nodes')}",
    )


def _pod_reason(gate: PodGate, found: Sequence[PodFact], *, here: bool) -> str:
    names = sorted(f"{pod.namespace}/{pod.name}" for pod in found)
    noun = "pod" if len(names) == 1 else "pods"
    verb = "matches" if len(names) == 1 else "match"
    where = " on this node" if here else ""
    selector = selector_text(gate.selector)
    return f"{noun} {listed(names, 'pods')}{where} {verb} the blocking selector {selector}"


def pod_blocks(gate: PodGate, pods: Iterable[PodFact], candidates: Iterable[str]) -> dict[str, Block]:
    """One pod gate: the candidates it blocks."""
    found = [pod for pod in pods if not pod.finished and matches(gate.selector, pod.labels)]
    if gate.scope is PodScope.CLUSTER:
        if not found:
            return {}
        block = Block(GateKind.PODS, _pod_reason(gate, found, here=False))
        return dict.fromkeys(candidates, block)
    blocks = {}
    for node in candidates:
        here = [pod for pod in found if pod.node == node]
        if here:
            blocks[node] = Block(GateKind.PODS, _pod_reason(gate, here, here=True))
    return blocks


def pool_blocks(gates: Gates | None, facts: GateFacts) -> tuple[Block, ...]:
    """The blocks of the gates that judge the whole cluster (prometheus, then cluster): what every node of
    the pool waits for, and what a soak keeps checking. A prometheus gate whose outcome is missing blocks:
    not asked is not known."""
    if gates is None:
        return ()
    found: list[Block | None] = []
    if gates.prometheus is not None:
        if facts.prometheus is None:
            found.append(Block(GateKind.PROMETHEUS, "Prometheus has not been asked yet", unknown=True))
        else:
            found.append(prometheus_block(gates.prometheus, gates.prometheus.query, facts.prometheus))
    if gates.cluster is not None:
        found.append(cluster_block(gates.cluster, facts.nodes, facts.in_cycle))
    return tuple(block for block in found if block is not None)


def gate_blocks(
    gates: Gates | None, facts: GateFacts, candidates: Sequence[str]
) -> dict[str, tuple[Block, ...]]:
    """Every candidate a gate blocks, with all its blocks (`pool_blocks`, then pods, the pod gates joined
    into one)."""
    if gates is None:
        return {}
    pool_wide = pool_blocks(gates, facts)
    pod_reasons: dict[str, list[str]] = {}
    pods = facts.pods
    for pod_gate in gates.pods:
        for node, block in pod_blocks(pod_gate, pods or (), candidates).items():
            pod_reasons.setdefault(node, []).append(block.reason)
    found = {}
    for node in candidates:
        blocks = list(pool_wide)
        if gates.pods and pods is None:
            blocks.append(Block(GateKind.PODS, PODS_UNKNOWN, unknown=True))
        elif node in pod_reasons:
            blocks.append(Block(GateKind.PODS, "; ".join(pod_reasons[node])))
        if blocks:
            found[node] = tuple(blocks)
    return found


def track(
    previous: Mapping[str, Sequence[GateBlocked]], current: Mapping[str, Sequence[Block]], *, now: datetime
) -> dict[str, tuple[GateBlocked, ...]]:
    """The blocks of this pass with their times: a gate that also blocked the node in the previous pass
    keeps its `since` (with this pass's reason); any other starts now."""
    tracked = {}
    for node, blocks in current.items():
        before = {b.gate: b for b in previous.get(node, ())}
        tracked[node] = tuple(
            replace(before[b.gate], reason=b.reason)
            if b.gate in before
            else GateBlocked(gate=b.gate, reason=b.reason, since=now)
            for b in blocks
        )
    return tracked


def first_blocks(tracked: Mapping[str, Sequence[GateBlocked]]) -> dict[str, GateBlocked]:
    """The reason admission shows per node: its first blocking gate."""
    return {node: blocks[0] for node, blocks in tracked.items() if blocks}
