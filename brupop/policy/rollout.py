"""One reconcile pass over the whole fleet: which specs change, which nodes start, which shadows go, what
each Node carries, what each pool's failure budget comes to, and what the controller tells people on each
shadow.

Level-based: the pass looks at every shadow and node as they are now, so it can run after any event, any
crash and any number of missed events and still reach the same decision. Who starts is decided per pool
(`brupop.policy.pools`, `brupop.policy.admission`): each pool's limit, schedule and blackouts, pause,
failure budget and holds; in-flight nodes (ErrorReset included) hold the slot of the pool they started in
(`brupop.policy.pools.kept`: the cycle record names it) until their cycle ends. With no policy in
the cluster every node is in the environment's pool: MAX_CONCURRENT_UPDATE and the schedule, as before.
Starting order is the Rust brupop's: lowest crash count first, the controller's own node last, then by name
(deterministic).

Most of a fleet at rest is settled (`_settled`): such a shadow is passed by after one check (and its
failure, if it records one, counted), as looking at it in full would decide nothing (issue 20: 15,000 nodes).

Unknown means busy: a shadow that cannot be read counts as an active node (it may be rebooting), in its
node's pool, or in every pool when its node is not known.

Nodes in a cycle carry the in-cycle label (`IN_CYCLE_LABEL`) from before their start until they are settled
and brupop's cordon is undone; the agent DaemonSet selects it as well as the opt-in label, so a node whose
opt-in label is removed mid-cycle keeps its agent. Such a node keeps its shadow and its slot until the cycle
is over (undone if it had not disrupted the node yet, else finished), then loses the label, then its shadow.
Each of these is one write per pass; the next pass takes the next step. A pool's `duringUpdate` marks
(`brupop.policy.marks`) come and go with the in-cycle label, in the same write.

A node at a checkpoint of its cycle (staged, before its cordon; updated, before its slot frees) takes the
next step as its pool's health gates and verification decide (`brupop.policy.checkpoints`, given in
`Pools.checkpoints`): held, it keeps its spec and slot, is not stuck (the controller holds it) and says why
in its waiting annotation; else the next spec goes with the verification record in one patch. A failed
verification the record tells of counts against the pool's failure budget.

Stuck nodes (see `stuck`; a pool's `stuckAfter` replaces the per-state deadlines) are reported, keep their
slot, and count against their pool's failure budget, as does every failure a shadow records: at most once
per node and cycle (`brupop.policy.progress.attributed`).

A one-shot schedule (a trigger) stays open until its pool is drained: nothing started and nobody waits
for anything but a back-off or a hold (those do not keep a rollout open, as before policies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from brupop.models.constants import (
    CYCLE_ANNOTATION,
    DURING_UPDATE_ANNOTATION,
    SHADOW_NAME_PREFIX,
    WAITING_ANNOTATION,
)
from brupop.models.policy import Failure
from brupop.models.shadow import DEFAULT_SPEC, BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import later
from brupop.policy import membership
from brupop.policy.admission import Admission, Candidate, Code, GateBlocked, Reason, admit
from brupop.policy.backoff import retry_at, waived
from brupop.policy.budget import BudgetState, account, failure_of
from brupop.policy.checkpoints import Decision, Hold, held_waiting, record_patch, recorded_failure
from brupop.policy.holds import hold_reason
from brupop.policy.marks import MarksChange, change
from brupop.policy.pools import Assignment, Pool, kept
from brupop.policy.progress import (
    Patch,
    attributed,
    cycle_begins,
    cycle_change,
    started_in,
    waiting_change,
)
from brupop.policy.statemachine import is_active, next_spec, next_spec_leaving, wants_update
from brupop.policy.stuck import DEFAULT_STUCK_AFTER, Stuck, deadline, stuck

DRAINING: Final = frozenset({Code.BACKING_OFF, Code.HELD})
"""Waiting for these does not keep a one-shot schedule open."""
NOTES: Final = frozenset({CYCLE_ANNOTATION, WAITING_ANNOTATION})
"""The controller's annotations on a shadow that a pass may have to change even when its node is settled."""


class ConcurrencyError(ValueError):
    """MAX_CONCURRENT_UPDATE is neither a non-negative integer nor `unlimited`."""


def parse_max_concurrent(text: str) -> int | None:
    """`unlimited` (any case) gives None; otherwise a non-negative integer (0 means: start nothing)."""
    value = text.strip()
    if value.lower() == "unlimited":
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    raise ConcurrencyError("expected a non-negative integer or 'unlimited'")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What decisions need of a Node: its identity, its labels (opt-in, in-cycle, what policies select),
    its annotations (hold, brupop's marks record, marks someone else set) and taints, whether brupop's
    cordon bookkeeping is still on it (the agent has not undone its cordon yet), and its health (Ready,
    unschedulable) for the health gates and verification."""

    name: str
    uid: str
    labels: Mapping[str, str]
    brupop_cordon: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False

    @property
    def opted_in(self) -> bool:
        return membership.opted_in(self.labels)

    @property
    def in_cycle(self) -> bool:
        return membership.in_cycle(self.labels)


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    controller_node: str | None = None
    stuck_after: Mapping[ShadowState, timedelta] = field(default_factory=lambda: DEFAULT_STUCK_AFTER)
    """Per state, for pools that set no `stuckAfter`."""


@dataclass(frozen=True, slots=True)
class Pools:
    """The pools of this pass, and what they carry over from the last one."""

    assignment: Assignment
    budgets: Mapping[str, BudgetState] = field(default_factory=dict)
    """Pool name -> its failure budget's state after the last pass (missing: nothing counted yet)."""
    drained_at: Mapping[str, datetime] = field(default_factory=dict)
    """Pool name -> when its one-shot schedule last drained (missing: now, so no past trigger replays)."""
    gated: Mapping[str, GateBlocked] = field(default_factory=dict)
    """Node name -> the health gate that keeps it from starting (`brupop.policy.gates.first_blocks`)."""
    checkpoints: Mapping[str, Decision] = field(default_factory=dict)
    """Shadow name -> what to do with its node at the checkpoint it waits at (missing: take the step)."""


Settled = Mapping[int, tuple[BottlerocketShadow, "NodeInfo | None", str]]
"""id(shadow) -> (the shadow, its Node, the Node's name) as a pass saw them: settled, no failure to count."""


@dataclass(frozen=True, slots=True)
class Plan:
    spec_changes: Mapping[str, ShadowSpec]
    """Shadow name -> the spec to write (only shadows whose spec changes)."""
    annotations: Mapping[str, Patch]
    """Shadow name -> its annotation patch (cycle record, history, waiting verdict), written with its spec
    change when it has one."""
    started: tuple[str, ...]
    """Shadows that begin an update in this pass (a subset of `spec_changes`)."""
    waiting: Mapping[str, Reason]
    """Shadows that want an update but may not start, and why."""
    deletions: tuple[str, ...]
    """Shadows of settled Nodes that carry neither the opt-in nor the in-cycle label."""
    in_cycle: Mapping[str, bool]
    """Node name -> whether it must carry the in-cycle label (only Nodes whose label changes); a started
    node's label comes before its spec."""
    marks: Mapping[str, MarksChange]
    """Node name -> the change to its duringUpdate marks (only Nodes whose marks change), written with its
    in-cycle label when that changes too."""
    stuck: Mapping[str, Stuck]
    """Shadow name -> its node's stuck report (still counted as active)."""
    budgets: Mapping[str, BudgetState]
    """Pool name -> its failure budget's state after this pass."""
    admission: Admission
    drained: frozenset[str]
    """Pools whose window is open and that found nothing to start (a trigger's rollout is over)."""
    active: int
    """Nodes in an update cycle after this pass (started ones and unreadable shadows included)."""
    wake_at: datetime | None
    """The next instant something time-based changes (a back-off, a deadline, a blackout or a window
    ending, a failure leaving its budget's window), when the pass should run again without events."""
    settled: Settled = field(default_factory=dict, compare=False, repr=False)
    """The shadows this pass found settled with no failure to count, for the next pass (`plan`'s
    `settled`)."""


def node_name_of(shadow: BottlerocketShadow) -> str:
    """The Node a shadow tracks: its first owner reference, else the name after `brs-`."""
    owners = shadow.metadata.get("ownerReferences") or []
    # `type(...) is dict` first: what a parsed object holds, checked without the ABC machinery (issue 20:
    # four calls per shadow per pass, 15,000 shadows).
    if owners and (type(owners[0]) is dict or isinstance(owners[0], Mapping)) and owners[0].get("name"):
        return str(owners[0]["name"])
    return shadow.name.removeprefix(SHADOW_NAME_PREFIX)


def start_order(
    shadows: Iterable[BottlerocketShadow], *, controller_node: str | None
) -> list[BottlerocketShadow]:
    def key(shadow: BottlerocketShadow) -> tuple[bool, int, str]:
        crashes = shadow.status.crash_count if shadow.status else 0
        return (node_name_of(shadow) == controller_node, crashes, shadow.name)

    return sorted(shadows, key=key)


def tracked(shadows: Iterable[BottlerocketShadow], nodes: Mapping[str, NodeInfo]) -> list[NodeInfo]:
    """The Nodes brupop looks after, which pools share out: opted in, or named by a shadow (as `kubectl
    brupop status` counts them)."""
    named: set[str] | None = None  # needed only for a node that has not opted in
    found = []
    for node in nodes.values():
        if not node.opted_in:
            named = {node_name_of(s) for s in shadows} if named is None else named
            if node.name not in named:
                continue
        found.append(node)
    return found


def wanting(shadows: Iterable[BottlerocketShadow], nodes: Mapping[str, NodeInfo]) -> list[BottlerocketShadow]:
    """The shadows of opted-in nodes that would start an update if allowed (their back-off aside)."""
    found = []
    for shadow in shadows:
        if not wants_update(shadow):
            continue  # most shadows, most passes: decided without their Node
        node = nodes.get(node_name_of(shadow))
        if node is not None and node.opted_in:
            found.append(shadow)
    return found


def _candidate(shadow: BottlerocketShadow, node: NodeInfo) -> Candidate:
    status = shadow.status
    assert status is not None  # wanting an update needs a status
    return Candidate(
        name=node.name,
        retry_at=None if waived(status, shadow.annotations) else retry_at(status),
        hold=hold_reason(node.annotations),
    )


def _budgets(
    assignment: Assignment,
    previous: Mapping[str, BudgetState],
    observed: Mapping[str, list[Failure]],
    now: datetime,
) -> dict[str, BudgetState]:
    return {
        name: account(
            pool.budget,
            pool=name,
            previous=previous.get(name, BudgetState()),
            observed=observed.get(name, ()),
            pool_size=len(assignment.members.get(name, ())),
            resumed=pool.resumed_at,
            now=now,
        )
        for name, pool in assignment.pools.items()
    }


def _expiries(assignment: Assignment, budgets: Mapping[str, BudgetState]) -> list[datetime]:
    """When each counted failure leaves its budget's window."""
    moments = []
    for name, state in budgets.items():
        budget = assignment.pools[name].budget
        if budget is not None:
            moments += [later(f.at.instant, budget.window) for f in state.failures]
    return moments


def _drained(admission: Admission, assignment: Assignment) -> frozenset[str]:
    kept_open = {assignment.pool_of.get(n) for n, r in admission.waiting.items() if r.code not in DRAINING}
    return frozenset(
        name
        for name, passed in admission.pools.items()
        if passed.window_open and not passed.started and name not in kept_open
    )


def _marks(
    nodes: Mapping[str, NodeInfo], assignment: Assignment, labels: Mapping[str, bool]
) -> dict[str, MarksChange]:
    found = {}
    marking = {name for name, pool in assignment.pools.items() if pool.marks is not None}
    for node in nodes.values():
        if DURING_UPDATE_ANNOTATION not in node.annotations and (
            not marking or assignment.pool_of.get(node.name) not in marking
        ):
            continue  # nothing asked for and nothing recorded: nothing to change (most nodes, most passes)
        pool = _pool(assignment, node.name)
        wanted = pool.marks if pool is not None else None
        marks = change(
            wanted,
            in_cycle=labels.get(node.name, node.in_cycle),
            labels=node.labels,
            annotations=node.annotations,
            taints=node.taints,
        )
        if not marks.empty:
            found[node.name] = marks
    return found


def _stuck_after(pool: Pool | None, config: RolloutConfig, state: ShadowState) -> timedelta | None:
    """How long a node may take to reach `state`: its pool's `stuckAfter`, else the controller's setting."""
    if pool is not None and pool.stuck_after is not None:
        return pool.stuck_after
    return config.stuck_after.get(state)


def _pool(assignment: Assignment, node: str) -> Pool | None:
    name = assignment.pool_of.get(node)
    return None if name is None else assignment.pools[name]


def _settled(shadow: BottlerocketShadow, node: NodeInfo | None) -> bool:
    """Nothing to decide for this shadow but its failure (which `plan` counts first): Idle and reported Idle,
    no update on offer, the default spec, no cycle record or waiting note to clear, and a Node (if any) that
    opted in and carries no in-cycle label. Most of a fleet at rest; `plan` passes it by after this one
    check (issue 20: a pass over 15,000 nodes). Its Node's marks are `_marks`' to weigh, shadow or not."""
    status = shadow.status
    return (
        status is not None
        and status.current_state is ShadowState.IDLE
        and shadow.spec == DEFAULT_SPEC
        and not status.update_available()
        and (node is None or (node.opted_in and not node.in_cycle))
        and (not shadow.metadata.get("annotations") or not NOTES & shadow.annotations.keys())
    )


def plan(
    shadows: Iterable[BottlerocketShadow],
    nodes: Mapping[str, NodeInfo],
    *,
    now: datetime,
    config: RolloutConfig,
    pools: Pools,
    unreadable: Iterable[str] = (),
    settled: Settled | None = None,
) -> Plan:
    """Decide this pass. `nodes` maps node name -> NodeInfo for every Node that exists; `pools.assignment`
    puts in a pool every node brupop tracks; `unreadable` names the nodes of the shadows that could not be
    read (each holds a slot); `settled`: the last pass's `Plan.settled` (a shadow found there, with the
    same shadow and Node objects, is passed by without a look: the models are immutable, a change is a new
    object, and the entry holds the shadow, so its id is not reused while it is there)."""
    known = settled or {}
    found_settled: dict[int, tuple[BottlerocketShadow, NodeInfo | None, str]] = {}
    looked_at = []
    for shadow in shadows:
        seen = known.get(id(shadow))
        if (
            seen is not None
            and nodes.get(seen[2]) is seen[1]
            and (not pools.checkpoints or shadow.name not in pools.checkpoints)
        ):
            found_settled[id(shadow)] = seen
            continue
        looked_at.append(shadow)
    assignment = kept(
        pools.assignment,
        {node_name_of(s): began for s in looked_at if is_active(s) and (began := started_in(s)) is not None},
    )
    changes: dict[str, ShadowSpec] = {}
    deletions: list[str] = []
    labels: dict[str, bool] = {}
    waits: list[datetime] = []
    found_stuck: dict[str, Stuck] = {}
    in_cycle = list(unreadable)
    failures: dict[str, list[Failure]] = {}
    names: dict[str, str] = {}
    considered: list[BottlerocketShadow] = []
    decisions: dict[str, Decision] = {}
    for shadow in looked_at:
        name = node_name_of(shadow)
        node = nodes.get(name)
        pool = _pool(assignment, name)
        found = (failure_of(shadow, node=name), recorded_failure(shadow, node=name))
        failed = [f for f in found if f is not None]
        if failed and pool is not None:
            failures.setdefault(pool.name, []).extend(attributed(shadow, f) for f in failed)
        if shadow.name not in pools.checkpoints and _settled(shadow, node):
            if not failed:
                found_settled[id(shadow)] = (shadow, node, name)
            continue
        names[shadow.name] = name
        considered.append(shadow)
        leaving = node is not None and not node.opted_in
        decision = None if leaving else pools.checkpoints.get(shadow.name)
        if decision is not None:
            decisions[shadow.name] = decision
        held = decision if isinstance(decision, Hold) else None
        if is_active(shadow):
            in_cycle.append(name)
            if node is not None and not node.in_cycle:
                labels[name] = True
            limit = _stuck_after(pool, config, shadow.spec.state)
            report = None if held else stuck(shadow, node=name, limit=limit, now=now)
            due = held.until if held else deadline(shadow, limit)
            if report is not None:
                found_stuck[shadow.name] = report
                if pool is not None:
                    failures.setdefault(pool.name, []).append(attributed(shadow, report.failure()))
            elif due is not None:
                waits.append(due)
        elif node is not None and node.in_cycle and not node.brupop_cordon:
            labels[name] = False
        if leaving and not is_active(shadow):
            if node is not None and not node.in_cycle:
                deletions.append(shadow.name)
            continue
        if held:
            continue
        wanted = (
            next_spec_leaving(
                shadow, now=now, gives_up=deadline(shadow, _stuck_after(pool, config, shadow.spec.state))
            )
            if leaving
            else next_spec(shadow, now=now, may_start=False)
        )
        if wanted != shadow.spec:
            changes[shadow.name] = wanted

    budgets = _budgets(assignment, pools.budgets, failures, now)
    ordered = start_order(wanting(considered, nodes), controller_node=config.controller_node)
    by_node = {node_name_of(s): s for s in ordered}
    admission = admit(
        assignment,
        candidates=[_candidate(s, nodes[n]) for n, s in by_node.items()],
        in_cycle=in_cycle,
        halts={name: state.halt for name, state in budgets.items() if state.halt is not None},
        drained_at=pools.drained_at,
        now=now,
        gated=pools.gated,
    )
    waiting = {by_node[n].name: reason for n, reason in admission.waiting.items()}
    started = tuple(by_node[n].name for n in admission.started)
    annotations: dict[str, Patch] = {}
    for shadow in considered:
        if shadow.name in deletions:
            continue  # going: nothing to tell on it (a write would only void the delete's precondition)
        patch = cycle_change(shadow, stuck=found_stuck.get(shadow.name), now=now)
        decision = decisions.get(shadow.name)
        if shadow.name in changes or isinstance(decision, Hold):
            patch |= record_patch(shadow.annotations, decision)
        patch |= waiting_change(shadow.annotations, waiting.get(shadow.name) or held_waiting(decision))
        if shadow.name in started:
            status = shadow.status
            assert status is not None
            spec = next_spec(
                shadow, now=now, may_start=True, backoff_waived=waived(status, shadow.annotations)
            )
            changes[shadow.name] = spec
            patch |= cycle_begins(shadow, spec, pool=assignment.pool_of[names[shadow.name]])
            labels[names[shadow.name]] = True
        if patch:
            annotations[shadow.name] = patch
    moments = [*waits, *_expiries(assignment, budgets)]
    if admission.wake_at is not None:
        moments.append(admission.wake_at)
    return Plan(
        spec_changes=changes,
        annotations=annotations,
        started=started,
        waiting=waiting,
        deletions=tuple(deletions),
        in_cycle=labels,
        marks=_marks(nodes, assignment, labels),
        stuck=found_stuck,
        budgets=budgets,
        admission=admission,
        drained=_drained(admission, assignment),
        active=len(in_cycle) + len(admission.started),
        wake_at=min((m for m in moments if m > now), default=None),
        settled=found_settled,
    )
