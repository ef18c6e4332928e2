"""Pools: which policy each node follows, and what each policy comes to once the controller's settings fill
in what it leaves out.

Every opted-in node is in exactly one pool. A node that several policies select belongs to the one with the
highest `priority`, then a paused one (so a "stop everything" policy wins a tie), then the first name in
alphabetical order; the others record the overlap (their status shows it). A node no policy selects is in the
default pool, `ENV_POOL`, whose rules are the controller's environment variables (MAX_CONCURRENT_UPDATE,
SCHEDULER_CRON_EXPRESSION, ...): with no policy in the cluster, every node is there and brupop behaves exactly
as it did before policies existed. A field a policy leaves out takes the environment's value too
(`maxConcurrent`, `schedule.cron`, `schedule.timeZone`, `stuckAfter`).

A policy the API server accepted can still be unusable: a time zone this controller does not know, a cron
expression that does not parse or never fires again. Its pool keeps its nodes (an operator who wrote a
policy for them did not mean them to follow the environment instead) but starts nothing, and the problems
are reported in its status. A policy object the reader cannot read at all (only possible when the CRD's
validation was bypassed, or a policy stored before a check was added) is treated the same way, keeping the
nodes its selector still selects; so is one whose reading or resolving fails in any other way (`pool_of`).

A node in a cycle stays in the pool it started in until the cycle ends (`kept`), whatever happens to its
labels or the policies meanwhile; the cycle record on its shadow names that pool.

Build pools when policies change, not on every pass: whether a cron expression is a window or a trigger is
decided when its schedule is built (`brupop.policy.schedule`), as it is once for the environment's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from brupop.models.policy import (
    DuringUpdate,
    Gates,
    LabelSelector,
    PolicySchedule,
    UpdatePolicy,
    Verification,
    duration,
)
from brupop.models.wire import WireError
from brupop.policy.blackout import Period, periods
from brupop.policy.budget import Budget, resumed_at
from brupop.policy.cron import CronError, CronExpression
from brupop.policy.limits import Count, Limit, Percent, from_env, parse_limit
from brupop.policy.schedule import Schedule
from brupop.policy.selector import matches

ENV_POOL: Final = "(environment)"
"""The default pool's name; never a policy's (object names cannot contain parentheses)."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """The controller's environment: the default pool's rules, and what a policy leaves out."""

    max_concurrent: int | None
    """None: unlimited."""
    schedule: Schedule
    stuck_after: timedelta | None = None
    """None: the controller's own per-state deadlines apply."""


@dataclass(frozen=True, slots=True)
class Pool:
    """One policy's rules, complete (or the default pool's)."""

    name: str
    limit: Limit
    schedule: Schedule | None
    """None only when the policy's schedule is unusable (then `problems` says why)."""
    blackouts: tuple[Period, ...] = ()
    paused: bool = False
    budget: Budget | None = None
    stuck_after: timedelta | None = None
    marks: DuringUpdate | None = None
    selector: LabelSelector | None = None
    """None for the default pool and for a policy whose selector cannot be read (it selects nothing)."""
    priority: int = 0
    generation: int | None = None
    problems: tuple[str, ...] = ()
    """Why the policy cannot be followed; its pool then starts nothing."""
    notices: tuple[str, ...] = ()
    """What is wrong without stopping the pool (e.g. an unusable resumed-at annotation)."""
    resumed_at: datetime | None = None
    gates: Gates | None = None
    """The health gates checked before a node starts and before it is cordoned (None: none)."""
    verification: Verification | None = None
    """What an updated node must show before its slot frees (None: nothing, as before policies)."""

    @property
    def usable(self) -> bool:
        return not self.problems


def default_pool(defaults: Defaults) -> Pool:
    return Pool(
        name=ENV_POOL,
        limit=from_env(defaults.max_concurrent),
        schedule=defaults.schedule,
        stuck_after=defaults.stuck_after,
    )


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A policy object the reader refused: what could still be read of it, and why."""

    name: str
    error: str
    selector: LabelSelector | None = None
    priority: int = 0


def read_policy(obj: Mapping[str, Any]) -> UpdatePolicy | Unreadable:
    try:
        return UpdatePolicy.from_wire(obj)
    except WireError as err:
        return _unreadable(obj, str(err))


def _unreadable(obj: Mapping[str, Any], error: str) -> Unreadable:
    metadata = obj.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    try:
        selector: LabelSelector | None = LabelSelector.from_wire(spec.get("nodeSelector"))
    except WireError:
        selector = None
    priority = spec.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        priority = 0
    return Unreadable(name=name, error=error, selector=selector, priority=priority)


def pool_of(obj: Mapping[str, Any], defaults: Defaults, *, now: datetime) -> Pool:
    """The pool a policy object (as the cluster sends it) describes. Whatever goes wrong reading or resolving
    it (a reader or resolver defect, e.g. a date the checks let through that overflows) makes this one
    policy Invalid, its nodes starting nothing and its status saying why: never the whole pass."""
    try:
        return resolve(read_policy(obj), defaults, now=now)
    except Exception as err:  # one policy must never stop every pool
        return resolve(_unreadable(obj, f"{type(err).__name__}: {err}"), defaults, now=now)


def _zone(name: str | None, defaults: Defaults) -> ZoneInfo | str:
    """The policy's time zone, or the problem with it."""
    if name is None:
        return defaults.schedule.zone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return (
            f"spec.schedule.timeZone: {name!r} is not a time zone this controller knows "
            "(an IANA name, e.g. Europe/Berlin)"
        )


def _schedule(
    wanted: PolicySchedule | None, defaults: Defaults, *, now: datetime
) -> tuple[Schedule | None, tuple[Period, ...], list[str]]:
    if wanted is None:
        return defaults.schedule, (), []
    problems: list[str] = []
    zone = _zone(wanted.time_zone, defaults)
    if isinstance(zone, str):
        return None, (), [zone]
    if wanted.cron is None:
        expression = defaults.schedule.expression
    else:
        try:
            expression = CronExpression.parse(wanted.cron)
        except CronError as err:
            return None, (), [f"spec.schedule.cron: {wanted.cron!r}: {err}"]
    if wanted.cron is None and wanted.time_zone is None:
        schedule = defaults.schedule
    else:
        schedule = Schedule.create(expression, zone, now=now)
    blacked = periods(wanted.blackouts, zone)
    if schedule.next_opening(now, drained_at=now) is None:
        problems.append(f"spec.schedule.cron: {expression.text!r} never fires again")
    return schedule, blacked, problems


def resolve(policy: UpdatePolicy | Unreadable, defaults: Defaults, *, now: datetime) -> Pool:
    """The pool a policy describes, its gaps filled from `defaults`."""
    if isinstance(policy, Unreadable):
        return Pool(
            name=policy.name,
            limit=from_env(defaults.max_concurrent),
            schedule=None,
            selector=policy.selector,
            priority=policy.priority,
            problems=(f"the policy cannot be read: {policy.error}",),
        )
    spec = policy.spec
    schedule, blacked, problems = _schedule(spec.schedule, defaults, now=now)
    limit = (
        from_env(defaults.max_concurrent) if spec.max_concurrent is None else parse_limit(spec.max_concurrent)
    )
    budget = None
    if spec.failure_budget is not None:
        max_failures = parse_limit(spec.failure_budget.max_failures)
        assert isinstance(max_failures, Count | Percent)  # the schema allows no "unlimited" here
        budget = Budget(max_failures=max_failures, window=duration(spec.failure_budget.window))
    resumed, notice = resumed_at(policy.annotations, now=now)
    return Pool(
        name=policy.name,
        limit=limit,
        schedule=schedule,
        blackouts=blacked,
        paused=spec.paused,
        budget=budget,
        stuck_after=defaults.stuck_after if spec.stuck_after is None else duration(spec.stuck_after),
        marks=spec.during_update,
        selector=spec.node_selector,
        priority=spec.priority,
        generation=policy.generation,
        problems=tuple(problems),
        notices=() if notice is None else (notice,),
        resumed_at=resumed,
        gates=spec.gates,
        verification=spec.verification,
    )


class Labelled(Protocol):
    """What pools need of a node (brupop.policy.rollout.NodeInfo is one)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Overlap:
    node: str
    winner: str
    """The pool the node belongs to instead."""


@dataclass(frozen=True, slots=True)
class Assignment:
    pools: Mapping[str, Pool]
    """Every pool by name, the default pool included."""
    pool_of: Mapping[str, str]
    """Node name -> its pool's name, for every node given."""
    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Pool name -> its nodes, sorted (pools without nodes included)."""
    overlaps: Mapping[str, tuple[Overlap, ...]] = field(default_factory=dict)
    """Pool name -> the nodes it selects that another pool won."""


def assign(policy_pools: Sequence[Pool], default: Pool, nodes: Iterable[Labelled]) -> Assignment:
    """Put each node in its pool. `nodes` are the nodes brupop tracks (opted in, or still in a cycle)."""
    ranked = sorted(policy_pools, key=lambda p: (-p.priority, not p.paused, p.name))
    pool_of: dict[str, str] = {}
    members: dict[str, list[str]] = {p.name: [] for p in [*ranked, default]}
    overlaps: dict[str, list[Overlap]] = {p.name: [] for p in ranked}
    for node in nodes:
        chosen = [p.name for p in ranked if p.selector is not None and matches(p.selector, node.labels)]
        winner = chosen[0] if chosen else default.name
        pool_of[node.name] = winner
        members[winner].append(node.name)
        for loser in chosen[1:]:
            overlaps[loser].append(Overlap(node=node.name, winner=winner))
    return Assignment(
        pools={p.name: p for p in [*ranked, default]},
        pool_of=pool_of,
        members={name: tuple(sorted(nodes)) for name, nodes in members.items()},
        overlaps={name: tuple(sorted(found, key=lambda o: o.node)) for name, found in overlaps.items()},
    )


def pools_for(
    policies: Iterable[Mapping[str, Any]], nodes: Iterable[Labelled], defaults: Defaults, *, now: datetime
) -> Assignment:
    """Policies (as the cluster sends them) + nodes + the environment -> pools and who is in which."""
    resolved = [pool_of(obj, defaults, now=now) for obj in policies]
    return assign(resolved, default_pool(defaults), nodes)


def kept(assignment: Assignment, started_in: Mapping[str, str]) -> Assignment:
    """`assignment` with each node in a cycle back in the pool it started in (`started_in`: node -> pool),
    while that pool exists: a node relabelled, or a policy edited, mid-cycle keeps its slot (and its
    pool's rules) where it took it, so the pool it moves to never goes over its limit for it. A node whose
    pool is gone (the policy deleted) is counted in the pool it is in now, as if that pool's limit had
    been lowered: over it, nothing new starts there until enough nodes finish."""
    moved = {
        node: pool
        for node, pool in started_in.items()
        if pool in assignment.pools and assignment.pool_of.get(node) not in (None, pool)
    }
    if not moved:
        return assignment
    pool_of = {**assignment.pool_of, **moved}
    members: dict[str, list[str]] = {name: [] for name in assignment.pools}
    for node, pool in pool_of.items():
        members[pool].append(node)
    return replace(
        assignment,
        pool_of=pool_of,
        members={name: tuple(sorted(nodes)) for name, nodes in members.items()},
    )
