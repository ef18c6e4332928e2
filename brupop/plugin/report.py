"""The status report, computed from a `Snapshot` and a clock with the controller's own decisions: pools
(`brupop.policy.pools`), who may start and why not (`brupop.policy.admission`), policy status
(`brupop.policy.policy_status`), stuck steps, holds and back-off. No I/O.

Per node: its phase, its versions and, in plain words, why it waits; per pool: done / total, updating,
failed, held, the observed time per node (the median of its nodes' successful cycles in their history)
and an ETA for the rest (the remaining nodes in waves of the pool's limit, from now or the next opening).

What the cluster alone cannot tell: a gate's verdict (the controller writes it on the shadow, see
`brupop.models.progress`), and the moment a one-shot trigger's window closes (the controller keeps it in
memory; here a trigger counts as closed until its next fire time).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from brupop.models.constants import PAUSE_ALL_POLICY, UPDATER_INTERFACE_LABEL
from brupop.models.policy import (
    Halt,
    PolicyState,
    UpdatePolicy,
    UpdatePolicyStatus,
    WindowState,
    duration_text,
)
from brupop.models.progress import Cycle, Outcome, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.plugin.facts import ControllerFacts, NodeFacts, ShadowFacts, Snapshot, tracked
from brupop.plugin.words import moment, relative, span, waiting
from brupop.policy.admission import Admission, Candidate, Reason, admit
from brupop.policy.backoff import retry_at
from brupop.policy.budget import BudgetState
from brupop.policy.drain import CORDONED_BY_ADMIN, CORDONED_BY_BRUPOP
from brupop.policy.holds import hold_reason
from brupop.policy.limits import UNLIMITED
from brupop.policy.policy_status import member_state, policy_status
from brupop.policy.pools import ENV_POOL, Assignment, Defaults, Pool, pools_for, read_policy
from brupop.policy.rollout import ConcurrencyError, parse_max_concurrent, start_order
from brupop.policy.schedule import ScheduleError, schedule_from_settings
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import Stuck, stuck

CHART_DEFAULTS = {"MAX_CONCURRENT_UPDATE": "1", "SCHEDULER_TIMEZONE": "UTC"}


class Phase(StrEnum):
    UP_TO_DATE = "UpToDate"
    NO_UPDATE_OFFERED = "NoUpdateOffered"
    """Idle on an older version than other nodes: its host offers nothing yet (update waves)."""
    WAITING = "Waiting"
    STARTING = "Starting"
    """Nothing holds it back: the controller starts it on its next pass."""
    UPDATING = "Updating"
    VERIFYING = "Verifying"
    """Updated and held by the controller while it verifies the node and soaks it (the health gates)."""
    STUCK = "Stuck"
    FAILED = "Failed"
    UNKNOWN = "Unknown"
    LEAVING = "Leaving"
    """Its Node is gone or no longer opted in: the controller deletes its shadow."""


@dataclass(frozen=True, slots=True)
class NodeLine:
    node: str
    pool: str | None
    phase: Phase
    why: str
    state: ShadowState | None = None
    """Where the agent reports the node is."""
    target_state: ShadowState | None = None
    """Where the controller wants it."""
    version: str | None = None
    target: str | None = None
    reason: Reason | None = None
    """The admission reason behind `why`, when the node waits for one."""
    controller: Waiting | None = None
    """The controller's own verdict, when `why` comes from it."""
    stuck: Stuck | None = None
    step_since: datetime | None = None
    """When the node's current step began (the spec's transition time)."""
    cordoned_by: str | None = None
    held: str | None = None
    retry_requested: bool = False
    last_cycle: Cycle | None = None


@dataclass(frozen=True, slots=True)
class PoolLine:
    name: str
    status: UpdatePolicyStatus
    """As the controller would write it now."""
    zone: ZoneInfo
    per_node: timedelta | None
    """Median duration of the pool's successful cycles in the nodes' history."""
    observed: int
    """How many cycles `per_node` comes from."""
    eta: datetime | None
    eta_note: str
    """Why there is no ETA, or what it assumes."""


@dataclass(frozen=True, slots=True)
class Report:
    at: datetime
    namespace: str
    nodes: tuple[NodeLine, ...]
    pools: tuple[PoolLine, ...]
    notes: tuple[str, ...]


def controller_defaults(controller: ControllerFacts, *, now: datetime) -> tuple[Defaults, list[str]]:
    """The default pool's rules from the controller's settings (the chart's defaults when unknown), and
    what is worth saying about them."""
    notes = [controller.note] if controller.note else []
    env = dict(CHART_DEFAULTS if controller.env is None else controller.env)
    raw = env.get("MAX_CONCURRENT_UPDATE", "")
    try:
        limit = parse_max_concurrent(raw)
    except ConcurrencyError:
        notes.append(f"the controller's MAX_CONCURRENT_UPDATE={raw!r} is not valid; it cannot run")
        limit = 1
    try:
        schedule, warnings = schedule_from_settings(
            cron_expression=env.get("SCHEDULER_CRON_EXPRESSION") or None,
            window_start=env.get("UPDATE_WINDOW_START") or None,
            window_stop=env.get("UPDATE_WINDOW_STOP") or None,
            timezone=env.get("SCHEDULER_TIMEZONE") or None,
            now=now,
        )
    except ScheduleError as err:
        notes.append(f"the controller's schedule is not valid ({err}); it cannot run")
        schedule, warnings = schedule_from_settings(
            cron_expression=None, window_start=None, window_stop=None, timezone=None, now=now
        )
    del warnings  # the controller logs them; they change nothing here
    return Defaults(max_concurrent=limit, schedule=schedule), notes


def retry_waived(facts: ShadowFacts) -> bool:
    """Someone asked (`kubectl brupop retry`) to skip the back-off of the node's last failure: the retry
    annotation names that failure's exact time. A later failure backs off again."""
    status = facts.shadow.status if facts.shadow is not None else None
    failed = status.state_transition_failure_timestamp if status is not None else None
    return failed is not None and facts.retry == failed.text


_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def _version_key(version: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(version)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def newest_version(shadows: Iterable[ShadowFacts]) -> str | None:
    """The newest version any node runs or is offered."""
    seen = []
    for facts in shadows:
        status = facts.shadow.status if facts.shadow is not None else None
        if status is not None:
            seen += [v for v in (status.current_version, status.target_version) if _version_key(v)]
    return max(seen, key=lambda v: _version_key(v) or (0, 0, 0), default=None)


def _halts(assignment: Assignment, policies: Iterable[UpdatePolicy]) -> dict[str, Halt]:
    """The halts the policies' status records and the controller has not cleared yet: a resumed-at at or
    after the halt, or a policy without a failure budget, clears it."""
    halts = {}
    for policy in policies:
        halt = policy.status.halted if policy.status is not None else None
        pool = assignment.pools.get(policy.name)
        if halt is None or pool is None or pool.budget is None:
            continue
        if pool.resumed_at is None or pool.resumed_at < halt.since.instant:
            halts[policy.name] = halt
    return halts


def _candidates(
    shadows: Sequence[ShadowFacts], nodes: Mapping[str, NodeFacts], *, now: datetime
) -> list[Candidate]:
    """Idle nodes with an update on offer, in the controller's start order."""
    by_name = {s.name: s for s in shadows}
    wanting = [
        s.shadow
        for s in shadows
        if s.shadow is not None
        and s.shadow.status is not None
        and not is_active(s.shadow)
        and s.shadow.status.update_available()
    ]
    candidates = []
    for shadow in start_order(wanting, controller_node=None):
        facts = by_name[shadow.name]
        assert shadow.status is not None
        node = nodes.get(facts.node)
        candidates.append(
            Candidate(
                name=facts.node,
                retry_at=None if retry_waived(facts) else retry_at(shadow.status),
                hold=hold_reason(node.annotations) if node is not None else None,
            )
        )
    return candidates


@dataclass(frozen=True, slots=True)
class _Context:
    now: datetime
    assignment: Assignment
    admission: Admission
    defaults: Defaults
    newest: str | None

    def pool(self, node: str) -> Pool | None:
        name = self.assignment.pool_of.get(node)
        return None if name is None else self.assignment.pools[name]

    def zone(self, pool: Pool | None) -> ZoneInfo:
        schedule = pool.schedule if pool is not None and pool.schedule is not None else None
        return (schedule or self.defaults.schedule).zone


def _cordon_note(node: NodeFacts | None, *, in_cycle: bool) -> str:
    who = node.cordoned_by if node is not None else None
    if who is None or (in_cycle and who == CORDONED_BY_BRUPOP):
        return ""
    if who == CORDONED_BY_BRUPOP:
        return "; still cordoned by brupop (its agent uncordons an idle node)"
    if who == CORDONED_BY_ADMIN:
        return "; cordoned by an administrator (brupop leaves that cordon in place)"
    return "; cordoned, not by brupop"


def _node_line(name: str, facts: ShadowFacts | None, node: NodeFacts | None, context: _Context) -> NodeLine:
    pool = context.pool(name)
    line = NodeLine(
        node=name,
        pool=pool.name if pool is not None else None,
        phase=Phase.UNKNOWN,
        why="",
        cordoned_by=node.cordoned_by if node is not None else None,
        held=hold_reason(node.annotations) if node is not None else None,
        last_cycle=facts.last_cycle if facts is not None else None,
    )
    if facts is None:
        why = "no shadow yet: its agent has not registered (is the agent pod running on it?)"
        return replace(line, why=why + _cordon_note(node, in_cycle=False))
    if node is None:
        return replace(line, phase=Phase.LEAVING, why="its Node is gone; the controller deletes this shadow")
    if not node.opted_in:
        why = f"no longer opted in (label {UPDATER_INTERFACE_LABEL}); the controller deletes its shadow"
        return replace(line, phase=Phase.LEAVING, why=why)
    shadow = facts.shadow
    if shadow is None:
        return replace(line, why=f"its shadow does not read: {facts.problem}")
    status = shadow.status
    if status is None:
        return replace(line, why="its agent has not reported yet")
    line = replace(
        line,
        state=status.current_state,
        target_state=shadow.spec.state,
        version=status.current_version,
        target=status.target_version,
        retry_requested=retry_waived(facts),
    )
    if is_active(shadow):
        return _in_cycle(line, shadow, node, pool, context, said=facts.waiting)
    cordon = _cordon_note(node, in_cycle=False)
    if not status.update_available():
        newest = context.newest
        if (
            newest is not None
            and newest != status.current_version
            and _behind(status.current_version, newest)
        ):
            why = f"host offers no update yet (Bottlerocket update waves; {newest} is out)"
            return replace(line, phase=Phase.NO_UPDATE_OFFERED, why=why + cordon)
        return replace(line, phase=Phase.UP_TO_DATE, why="up to date" + cordon)
    reason = context.admission.waiting.get(name)
    if reason is not None:
        words = waiting(
            reason, node=name, zone=context.zone(pool), now=context.now, crash_count=status.crash_count
        )
        return replace(line, phase=Phase.WAITING, why=words + cordon, reason=reason)
    if facts.waiting is not None:
        said = f"{facts.waiting.message} (since {relative(facts.waiting.since.instant, context.now)})"
        return replace(line, phase=Phase.WAITING, why=said + cordon, controller=facts.waiting)
    why = "starts on the controller's next pass"
    if line.retry_requested:
        why += " (back-off waived by kubectl brupop retry)"
    return replace(line, phase=Phase.STARTING, why=why + cordon)


def _behind(version: str, newest: str) -> bool:
    mine, theirs = _version_key(version), _version_key(newest)
    return mine is not None and theirs is not None and mine < theirs


def _in_cycle(
    line: NodeLine,
    shadow: BottlerocketShadow,
    node: NodeFacts,
    pool: Pool | None,
    context: _Context,
    *,
    said: Waiting | None,
) -> NodeLine:
    """`said`: the controller's waiting annotation; on a node in its cycle, a hold at a checkpoint."""
    assert shadow.status is not None
    status, spec = shadow.status, shadow.spec
    since = spec.state_transition_timestamp.instant if spec.state_transition_timestamp else None
    held = "; held: it finishes this cycle, then waits" if line.held is not None else ""
    cordon = _cordon_note(node, in_cycle=True)
    line = replace(line, step_since=since)
    if status.current_state is ShadowState.ERROR_RESET:
        why = f"update to {spec.version or status.target_version} failed (crash count {status.crash_count})"
        after = retry_at(status)
        if after is not None and not line.retry_requested:
            why += f"; back to Idle, then back-off until {moment(after, context.zone(pool), context.now)}"
        return replace(line, phase=Phase.FAILED, why=why + held + cordon)
    if said is not None and status.current_state is spec.state:
        # Held at a checkpoint (a gate before the cordon; verification and soak after the update): the
        # controller does not time a held step, so neither does this.
        phase = Phase.VERIFYING if spec.state is ShadowState.MONITORING_UPDATE else Phase.WAITING
        why = f"{said.message} (since {relative(said.since.instant, context.now)})"
        return replace(line, phase=phase, why=why + held + cordon, controller=said)
    limit = pool.stuck_after if pool is not None else None
    found = stuck(shadow, node=line.node, limit=limit, now=context.now)
    step = f"{status.current_state.value} -> {spec.state.value}"
    began = f", step began {relative(since, context.now)}" if since is not None else ""
    if found is not None and limit is not None:
        why = (
            f"stuck: not {found.heading_to.value} after {span(context.now - found.since)} "
            f"(stuckAfter {duration_text(limit)}): {step}"
        )
        return replace(line, phase=Phase.STUCK, why=why + held + cordon, stuck=found)
    why = f"updating to {spec.version or status.target_version}: {step}{began}"
    return replace(line, phase=Phase.UPDATING, why=why + held + cordon)


def _per_node(cycles: Iterable[Cycle]) -> tuple[timedelta | None, int]:
    took = [c.end.instant - c.start.instant for c in cycles if c.outcome is Outcome.SUCCEEDED]
    took = [t for t in took if t >= timedelta(0)]
    if not took:
        return None, 0
    return timedelta(seconds=statistics.median(t.total_seconds() for t in took)), len(took)


def _eta(
    status: UpdatePolicyStatus, per_node: timedelta | None, *, now: datetime
) -> tuple[datetime | None, str]:
    """When the pool should be done: its remaining nodes in waves of its limit, each taking the observed
    time per node, from now or the window's next opening."""
    remaining = status.selected - status.up_to_date
    if remaining <= 0:
        return None, "done"
    if status.state is not None and status.state is not PolicyState.ACTIVE:
        return None, f"none while {status.state.value.lower()}"
    if per_node is None:
        return None, "no completed update observed yet"
    limit = None if status.limit in (None, UNLIMITED) else int(status.limit or 0)
    if limit == 0:
        return None, "its limit is 0: nothing starts"
    start = now
    if status.window is not WindowState.OPEN:
        if status.next_opening is None:
            return None, "its window never opens again"
        start = status.next_opening.instant
    waves = 1 if limit is None else math.ceil(remaining / limit)
    note = f"{remaining} left, {waves} at a time" if waves == 1 else f"{remaining} left in {waves} waves"
    return start + waves * per_node, note


def _pool_line(
    pool: Pool,
    snapshot: Snapshot,
    context: _Context,
    previous: UpdatePolicyStatus | None,
    halts: Mapping[str, Halt],
) -> PoolLine:
    members = context.assignment.members.get(pool.name, ())
    shadows = {s.node: s for s in snapshot.shadows}
    models = {n: shadows[n].shadow if n in shadows else None for n in members}
    held = [n for n in members if n in snapshot.nodes and hold_reason(snapshot.nodes[n].annotations)]
    found = [
        report
        for n, shadow in models.items()
        if shadow is not None
        and (report := stuck(shadow, node=n, limit=pool.stuck_after, now=context.now)) is not None
    ]
    status = policy_status(
        pool,
        passed=context.admission.pools[pool.name],
        members={n: member_state(shadow) for n, shadow in models.items()},
        held=held,
        budget=BudgetState(
            failures=tuple(previous.failures) if previous is not None else (), halt=halts.get(pool.name)
        ),
        overlaps=context.assignment.overlaps.get(pool.name, ()),
        stuck=found,
        previous=previous,
        now=context.now,
    )
    per_node, observed = _per_node(c for n in members if n in shadows for c in shadows[n].history)
    eta, note = _eta(status, per_node, now=context.now)
    return PoolLine(
        name=pool.name,
        status=status,
        zone=context.zone(pool),
        per_node=per_node,
        observed=observed,
        eta=eta,
        eta_note=note,
    )


def _notes(snapshot: Snapshot, assignment: Assignment, policies: Sequence[UpdatePolicy]) -> list[str]:
    notes = [note for s in snapshot.shadows for note in s.notes]
    if not snapshot.policies_served:
        notes.append(
            "the UpdatePolicy CRD is not installed: only the controller's settings apply "
            "(upgrade the CRD chart, charts/bottlerocket-shadow, to use policies)"
        )
    for pool in assignment.pools.values():
        notes += [f"policy {pool.name}: {text}" for text in (*pool.problems, *pool.notices)]
    if any(p.name == PAUSE_ALL_POLICY for p in policies):
        running = sorted(p.name for p in policies if p.name != PAUSE_ALL_POLICY and not p.spec.paused)
        if running:
            notes.append(
                f"{PAUSE_ALL_POLICY} is in place but {', '.join(running)} not paused (created after "
                "`kubectl brupop pause`?); `kubectl brupop pause` pauses them too"
            )
    return notes


def report(snapshot: Snapshot, *, now: datetime) -> Report:
    defaults, notes = controller_defaults(snapshot.controller, now=now)
    shadows = snapshot.shadows
    assignment = pools_for(snapshot.policies, tracked(snapshot.nodes, shadows), defaults, now=now)
    policies = [p for p in map(read_policy, snapshot.policies) if isinstance(p, UpdatePolicy)]
    halts = _halts(assignment, policies)
    admission = admit(
        assignment,
        candidates=_candidates(shadows, snapshot.nodes, now=now),
        in_cycle=[s.node for s in shadows if s.shadow is None or is_active(s.shadow)],
        halts=halts,
        drained_at={},
        now=now,
    )
    context = _Context(
        now=now, assignment=assignment, admission=admission, defaults=defaults, newest=newest_version(shadows)
    )
    by_node = {s.node: s for s in shadows}
    names = sorted({n.name for n in tracked(snapshot.nodes, shadows)} | set(by_node))
    lines = tuple(_node_line(n, by_node.get(n), snapshot.nodes.get(n), context) for n in names)
    previous = {p.name: p.status for p in policies}
    shown = [
        pool
        for name, pool in assignment.pools.items()
        if name != ENV_POOL or assignment.members.get(name) or not snapshot.policies
    ]
    pools = tuple(_pool_line(p, snapshot, context, previous.get(p.name), halts) for p in shown)
    return Report(
        at=now,
        namespace=snapshot.namespace,
        nodes=lines,
        pools=pools,
        notes=tuple(notes + _notes(snapshot, assignment, policies)),
    )
