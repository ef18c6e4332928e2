"""Admission: for each node that wants to start an update, whether it may start in this pass and, if not,
why, as a structured reason (for the node's status, Events and `kubectl brupop status`).

Per pool, in this order, the first that applies:

1. the policy cannot be followed (`InvalidPolicy`),
2. the policy is paused (`Paused`),
3. its failure budget is spent (`Halted`),
4. the node carries the hold annotation (`Held`),
5. the node is backing off after a failed update (`BackingOff`),
6. a blackout covers now (`BlackedOut`),
7. the schedule's window is closed (`WindowClosed`),
8. a health gate blocks it (`GateBlocked`: the first of its gates that blocks, from
   `brupop.policy.gates`),
9. the pool already has as many nodes in a cycle as its limit allows (`NoFreeSlot`).

Slots are counted per pool: every node in a cycle counts against its pool, ErrorReset included and a node
whose shadow cannot be read included (unknown means busy). A node in a cycle whose Node object is not known
counts against every pool, since it could be in any. Candidates come in the caller's start order (lowest
crash count first, the controller's own node last, then by name) and start while their pool has a free
slot. A candidate whose Node was not seen never starts (`NodeNotSeen`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from brupop.models.policy import GateKind, Halt
from brupop.policy.blackout import clear_from, covering, next_opening
from brupop.policy.pools import Assignment, Pool


class Code(StrEnum):
    INVALID_POLICY = "InvalidPolicy"
    PAUSED = "Paused"
    HALTED = "Halted"
    HELD = "Held"
    BACKING_OFF = "BackingOff"
    BLACKED_OUT = "BlackedOut"
    WINDOW_CLOSED = "WindowClosed"
    GATE_BLOCKED = "GateBlocked"
    NO_FREE_SLOT = "NoFreeSlot"
    NODE_NOT_SEEN = "NodeNotSeen"


def _at(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat()


@dataclass(frozen=True, slots=True)
class InvalidPolicy:
    code: ClassVar[Code] = Code.INVALID_POLICY
    pool: str
    problems: tuple[str, ...]

    def message(self) -> str:
        return f"policy {self.pool} cannot be followed: {'; '.join(self.problems)}"


@dataclass(frozen=True, slots=True)
class Paused:
    code: ClassVar[Code] = Code.PAUSED
    pool: str

    def message(self) -> str:
        return f"policy {self.pool} is paused"


@dataclass(frozen=True, slots=True)
class Halted:
    code: ClassVar[Code] = Code.HALTED
    pool: str
    since: datetime
    failed_nodes: tuple[str, ...]

    def message(self) -> str:
        return (
            f"policy {self.pool} halted at {self.since.isoformat()} after failures on "
            f"{', '.join(self.failed_nodes)}"
        )


@dataclass(frozen=True, slots=True)
class Held:
    code: ClassVar[Code] = Code.HELD
    reason: str

    def message(self) -> str:
        return f"held by annotation: {self.reason}"


@dataclass(frozen=True, slots=True)
class BackingOff:
    code: ClassVar[Code] = Code.BACKING_OFF
    until: datetime

    def message(self) -> str:
        return f"backing off after a failed update until {self.until.isoformat()}"


@dataclass(frozen=True, slots=True)
class BlackedOut:
    code: ClassVar[Code] = Code.BLACKED_OUT
    until: datetime
    reason: str | None

    def message(self) -> str:
        return f"blackout until {self.until.isoformat()}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True, slots=True)
class WindowClosed:
    code: ClassVar[Code] = Code.WINDOW_CLOSED
    opens: datetime | None
    """None: the schedule never opens again."""

    def message(self) -> str:
        return f"update window closed; opens {_at(self.opens)}"


@dataclass(frozen=True, slots=True)
class GateBlocked:
    code: ClassVar[Code] = Code.GATE_BLOCKED
    gate: GateKind
    reason: str
    """What the gate found, e.g. alert KubeNodeNotReady firing."""
    since: datetime
    """Since when this gate has blocked the node without a break."""

    def message(self) -> str:
        return f"blocked by the {self.gate} gate since {self.since.isoformat()}: {self.reason}"


@dataclass(frozen=True, slots=True)
class NoFreeSlot:
    code: ClassVar[Code] = Code.NO_FREE_SLOT
    in_cycle: int
    limit: int

    def message(self) -> str:
        return f"no free slot ({self.in_cycle}/{self.limit} updating)"


@dataclass(frozen=True, slots=True)
class NodeNotSeen:
    code: ClassVar[Code] = Code.NODE_NOT_SEEN

    def message(self) -> str:
        return "its Node object has not been seen"


Reason = (
    InvalidPolicy
    | Paused
    | Halted
    | Held
    | BackingOff
    | BlackedOut
    | WindowClosed
    | GateBlocked
    | NoFreeSlot
    | NodeNotSeen
)
PoolGate = InvalidPolicy | Paused | Halted | BlackedOut | WindowClosed


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that would start an update if allowed: idle, an update on offer."""

    name: str
    retry_at: datetime | None = None
    """When its crash back-off ends (None or past: it may start now)."""
    hold: str | None = None
    """Why it is held (`brupop.policy.holds.hold_reason`), None when it is not."""


@dataclass(frozen=True, slots=True)
class PoolPass:
    """One pool in this pass."""

    pool: str
    size: int
    limit: int | None
    """None: unlimited."""
    in_cycle: int
    """Nodes in a cycle before this pass."""
    started: tuple[str, ...]
    window_open: bool
    """The schedule's window is open and no blackout covers now."""
    blackout: BlackedOut | None
    next_opening: datetime | None
    """`now` when open; else when the window next opens outside blackouts (None: never, or unusable)."""


@dataclass(frozen=True, slots=True)
class Admission:
    started: tuple[str, ...]
    """In start order."""
    waiting: Mapping[str, Reason]
    pools: Mapping[str, PoolPass]
    wake_at: datetime | None
    """The next instant a waiting node's reason could lapse (a back-off, a blackout or a closed window
    ending), when the pass should run again even without events."""


def _gate(pool: Pool, halt: Halt | None, now: datetime, drained_at: datetime) -> tuple[PoolGate | None, bool]:
    """The pool-level reason nothing may start (None: something may), and whether the window is open."""
    if pool.schedule is None or not pool.usable:
        return InvalidPolicy(pool=pool.name, problems=pool.problems), False
    blackout = covering(pool.blackouts, now)
    blacked = None
    if blackout is not None:
        blacked = BlackedOut(until=clear_from(pool.blackouts, now), reason=blackout.reason)
    open_now = blacked is None and pool.schedule.is_open(now, drained_at=drained_at)
    if pool.paused:
        return Paused(pool=pool.name), open_now
    if halt is not None:
        return Halted(
            pool=pool.name, since=halt.since.instant, failed_nodes=tuple(halt.failed_nodes)
        ), open_now
    if blacked is not None:
        return blacked, False
    if not open_now:
        return WindowClosed(
            opens=next_opening(pool.schedule, pool.blackouts, now, drained_at=drained_at)
        ), False
    return None, True


def admit(
    assignment: Assignment,
    *,
    candidates: Sequence[Candidate],
    in_cycle: Iterable[str],
    halts: Mapping[str, Halt],
    drained_at: Mapping[str, datetime],
    now: datetime,
    gated: Mapping[str, GateBlocked] | None = None,
) -> Admission:
    """Decide who starts. `in_cycle` names every node in an update cycle (ErrorReset and unreadable
    shadows included); `halts` the pools whose failure budget is spent; `drained_at` per pool when a
    one-shot schedule's window last found nothing to start (missing: now, so no past trigger replays);
    `gated` the candidates a health gate blocks (`brupop.policy.gates.first_blocks`; none: no gates)."""
    gated = gated or {}
    pools = assignment.pools
    busy: Counter[str] = Counter()
    for node in in_cycle:
        pool_name = assignment.pool_of.get(node)
        busy.update(list(pools) if pool_name is None else [pool_name])
    gates: dict[str, tuple[PoolGate | None, bool]] = {
        name: _gate(pool, halts.get(name), now, drained_at.get(name, now)) for name, pool in pools.items()
    }
    sizes = {name: len(assignment.members.get(name, ())) for name in pools}
    limits = {name: pool.limit.of(sizes[name]) for name, pool in pools.items()}
    in_cycle_before = dict(busy)
    started: list[str] = []
    by_pool: dict[str, list[str]] = {name: [] for name in pools}
    waiting: dict[str, Reason] = {}
    for candidate in candidates:
        pool_name = assignment.pool_of.get(candidate.name)
        if pool_name is None:
            waiting[candidate.name] = NodeNotSeen()
            continue
        reason = _candidate_reason(
            candidate,
            gates[pool_name][0],
            gated.get(candidate.name),
            busy=busy[pool_name],
            limit=limits[pool_name],
            now=now,
        )
        if reason is not None:
            waiting[candidate.name] = reason
            continue
        busy[pool_name] += 1
        started.append(candidate.name)
        by_pool[pool_name].append(candidate.name)
    passes = {}
    for name, pool in pools.items():
        gate, window_open = gates[name]
        opening: datetime | None = now if window_open else None
        if isinstance(gate, WindowClosed):
            opening = gate.opens
        elif isinstance(gate, BlackedOut) and pool.schedule is not None:
            opening = next_opening(pool.schedule, pool.blackouts, now, drained_at=drained_at.get(name, now))
        passes[name] = PoolPass(
            pool=name,
            size=sizes[name],
            limit=limits[name],
            in_cycle=in_cycle_before.get(name, 0),
            started=tuple(by_pool[name]),
            window_open=window_open,
            blackout=gate if isinstance(gate, BlackedOut) else None,
            next_opening=opening,
        )
    return Admission(
        started=tuple(started), waiting=waiting, pools=passes, wake_at=_wake_at(waiting.values(), now)
    )


def _candidate_reason(
    candidate: Candidate,
    gate: PoolGate | None,
    health: GateBlocked | None,
    *,
    busy: int,
    limit: int | None,
    now: datetime,
) -> Reason | None:
    if isinstance(gate, InvalidPolicy | Paused | Halted):
        return gate
    if candidate.hold is not None:
        return Held(reason=candidate.hold)
    if candidate.retry_at is not None and candidate.retry_at > now:
        return BackingOff(until=candidate.retry_at)
    if gate is not None:
        return gate
    if health is not None:
        return health
    if limit is not None and busy >= limit:
        return NoFreeSlot(in_cycle=busy, limit=limit)
    return None


def _wake_at(reasons: Iterable[Reason], now: datetime) -> datetime | None:
    moments = []
    for reason in reasons:
        if isinstance(reason, BackingOff | BlackedOut):
            moments.append(reason.until)
        elif isinstance(reason, WindowClosed) and reason.opens is not None:
            moments.append(reason.opens)
    return min((m for m in moments if m > now), default=None)
