"""A policy's status, computed from the pass: how many of its nodes are selected, up to date, updating,
failed or held; whether its window is open or when it next opens; whether it is halted or paused and why;
which health gates block its nodes and how many it verifies; and Kubernetes-style conditions.

Conditions follow `meta.SetStatusCondition`: `lastTransitionTime` changes only when a condition's status
changes (a new reason or message alone keeps it), and each carries the generation it was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from brupop.models.policy import (
    BlockedGate,
    Condition,
    ConditionStatus,
    PolicyState,
    UpdatePolicyStatus,
    WindowState,
    duration_text,
)
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.admission import GateBlocked, PoolPass
from brupop.policy.budget import BudgetState
from brupop.policy.limits import describe
from brupop.policy.pools import Overlap, Pool
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import Stuck

SHOWN: Final = 5
"""How many node names a condition message lists before it says "and N more"."""


BLOCKED_NODES: Final = 20
"""How many node names a blocking gate lists in the status, at most."""


class Member(StrEnum):
    """Where one node of the pool stands."""

    UP_TO_DATE = "UpToDate"
    WAITING = "Waiting"
    UPDATING = "Updating"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


def member_state(shadow: BottlerocketShadow | None) -> Member:
    """A node without a readable shadow or status is Unknown; ErrorReset, or waiting to retry after a
    failure, is Failed."""
    if shadow is None or shadow.status is None:
        return Member.UNKNOWN
    status = shadow.status
    if status.current_state is ShadowState.ERROR_RESET:
        return Member.FAILED
    if is_active(shadow):
        return Member.UPDATING
    if not status.update_available():
        return Member.UP_TO_DATE
    return Member.FAILED if status.crash_count > 0 else Member.WAITING


@dataclass(frozen=True, slots=True)
class Wanted:
    """A condition as this pass sees it."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def set_conditions(
    previous: Sequence[Condition], wanted: Iterable[Wanted], *, generation: int | None, now: datetime
) -> list[Condition]:
    """The new conditions, in `wanted`'s order, keeping each one's transition time unless its status
    changed."""
    before = {c.type: c for c in previous}
    stamp = Timestamp.from_datetime(now)
    result = []
    for want in wanted:
        old = before.get(want.type)
        result.append(
            Condition(
                type=want.type,
                status=want.status,
                reason=want.reason,
                message=want.message,
                last_transition_time=old.last_transition_time
                if old is not None and old.status is want.status
                else stamp,
                observed_generation=generation,
            )
        )
    return result


def _names(nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:SHOWN])
    return shown + (f" and {len(nodes) - SHOWN} more" if len(nodes) > SHOWN else "")


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _conditions(
    pool: Pool, *, size: int, budget: BudgetState, overlaps: Sequence[Overlap], stuck: Sequence[Stuck]
) -> list[Wanted]:
    true, false = ConditionStatus.TRUE, ConditionStatus.FALSE
    if pool.problems:
        valid = Wanted("Valid", false, "Invalid", "; ".join(pool.problems))
        paused = Wanted(
            "Paused", true, "InvalidPolicy", "the policy cannot be followed, so nothing new starts"
        )
    else:
        valid = Wanted("Valid", true, "Valid", "the policy can be followed")
        paused = (
            Wanted(
                "Paused",
                true,
                "PausedBySpec",
                "spec.paused is true: nothing new starts; nodes in a cycle finish",
            )
            if pool.paused
            else Wanted("Paused", false, "NotPaused", "")
        )
    notes = "; ".join((*pool.notices, *budget.notices()))
    if budget.halt is not None:
        halted = Wanted("Halted", true, "FailureBudgetSpent", _joined(budget.halt.message, notes))
    elif pool.budget is not None:
        window = duration_text(pool.budget.window)
        counted = f"{len(budget.failures)} of {pool.budget.threshold(size)} failures within {window}"
        halted = Wanted("Halted", false, "WithinBudget", _joined(counted, notes))
    else:
        halted = Wanted("Halted", false, "NoFailureBudget", _joined("no failure budget", notes))
    overlapping = (
        Wanted(
            "Overlapping",
            true,
            "NodesSelectedElsewhere",
            f"{len(overlaps)} selected nodes follow another policy: "
            + _names([f"{o.node} ({o.winner})" for o in overlaps]),
        )
        if overlaps
        else Wanted("Overlapping", false, "NoOverlap", "")
    )
    stuck_nodes = (
        Wanted(
            "Stuck",
            true,
            "NodesStuck",
            f"{len(stuck)} nodes stuck in their update cycle: " + _names([s.message() for s in stuck]),
        )
        if stuck
        else Wanted("Stuck", false, "NoneStuck", "")
    )
    return [valid, paused, halted, overlapping, stuck_nodes]


def _state(pool: Pool, budget: BudgetState) -> PolicyState:
    if pool.problems:
        return PolicyState.INVALID
    if pool.paused:
        return PolicyState.PAUSED
    if budget.halt is not None:
        return PolicyState.HALTED
    return PolicyState.ACTIVE


def _window(passed: PoolPass) -> WindowState:
    if passed.blackout is not None:
        return WindowState.BLACKOUT
    return WindowState.OPEN if passed.window_open else WindowState.CLOSED


def policy_status(
    pool: Pool,
    *,
    passed: PoolPass,
    members: Mapping[str, Member],
    held: Iterable[str],
    budget: BudgetState,
    overlaps: Sequence[Overlap],
    stuck: Sequence[Stuck],
    previous: UpdatePolicyStatus | None,
    now: datetime,
    blocked: Sequence[BlockedGate] = (),
    verifying: int = 0,
) -> UpdatePolicyStatus:
    """The status to write. `members` maps each node of the pool to where it stands, `held` names the
    pool's held nodes, `blocked` the gates blocking its nodes (`blocked_gates`), `verifying` how many of its
    updated nodes are being verified or soak."""
    counts = {state: 0 for state in Member}
    for state in members.values():
        counts[state] += 1
    window = _window(passed)
    return UpdatePolicyStatus(
        observed_generation=pool.generation,
        state=_state(pool, budget),
        selected=len(members),
        up_to_date=counts[Member.UP_TO_DATE],
        updating=counts[Member.UPDATING],
        failed=counts[Member.FAILED],
        held=len(set(held) & members.keys()),
        limit=describe(passed.limit),
        window=window,
        next_opening=None
        if window is WindowState.OPEN or passed.next_opening is None
        else Timestamp.from_datetime(passed.next_opening),
        halted=budget.halt,
        failures=list(budget.failures),
        overlapped=len(overlaps),
        blocked_by=list(blocked),
        verifying=verifying,
        conditions=set_conditions(
            previous.conditions if previous is not None else [],
            _conditions(pool, size=len(members), budget=budget, overlaps=overlaps, stuck=stuck),
            generation=pool.generation,
            now=now,
        ),
    )


def blocked_gates(gated: Mapping[str, GateBlocked], members: Iterable[str]) -> list[BlockedGate]:
    """Each gate blocking nodes among `members` (node -> its first blocking gate): the first node's reason,
    since its earliest block, and the nodes it blocks (at most `BLOCKED_NODES`), in the gates' order."""
    found: dict[str, list[tuple[str, GateBlocked]]] = {}
    for node in sorted(set(members) & gated.keys()):
        found.setdefault(str(gated[node].gate), []).append((node, gated[node]))
    return [
        BlockedGate(
            gate=blocks[0][1].gate,
            message=blocks[0][1].reason,
            since=Timestamp.from_datetime(min(b.since for _, b in blocks)),
            nodes=[node for node, _ in blocks][:BLOCKED_NODES],
        )
        for _, blocks in sorted(found.items())
    ]
