"""What the controller keeps of the UpdatePolicies over one leadership term, and what each pass makes of
them: the pools, the failure budgets carried from pass to pass, and the status of each policy.

- Pools: a policy is resolved (`brupop.policy.pools.resolve`) once per generation and resume time, so
  whether its cron expression is a window or a trigger is decided once, as the environment's is at start-up;
  nodes are shared out on every pass, as their labels change.
- Failure budgets: after each pass the controller keeps each pool's state (failures counted, halt). At a
  term's start, and for a policy it has not seen yet, the state comes from the policy's status, so a new
  leader forgets no failure and no halt. A policy deleted and created again under the same name starts
  afresh (the memory is keyed by the object's UID).
- Status: computed on every pass with the pure `policy_status` for every pool (the environment's too, for
  the metrics); a policy's is written only when it differs from what the object shows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brupop.models.constants import HOLD_ANNOTATION
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow
from brupop.models.wire import WireError, annotations_of
from brupop.policy.admission import GateBlocked
from brupop.policy.budget import BudgetState, resumed_at
from brupop.policy.holds import hold_reason
from brupop.policy.policy_status import Member, blocked_gates, member_state, policy_status
from brupop.policy.pools import (
    ENV_POOL,
    Assignment,
    Defaults,
    Pool,
    assign,
    default_pool,
    pool_of,
)
from brupop.policy.rollout import NodeInfo, Plan, node_name_of

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PoolReport:
    """One pool after a pass: the status it would show, and where each of its nodes stands."""

    status: UpdatePolicyStatus
    members: Mapping[str, Member]
    changed: bool
    """The policy object shows another status (always False for the environment's pool)."""


def shown_status(policy: Obj) -> UpdatePolicyStatus | None:
    """The status a policy object carries (None when it has none or it does not read)."""
    try:
        return UpdatePolicyStatus.from_wire(policy["status"])
    except (KeyError, WireError):
        return None


def _uid(policy: Obj) -> str:
    return str((policy.get("metadata") or {}).get("uid", ""))


def _name(policy: Obj) -> str:
    return str((policy.get("metadata") or {}).get("name", ""))


class PolicyBook:
    def __init__(self, defaults: Defaults) -> None:
        self._defaults = defaults
        self._default = default_pool(defaults)
        self._resolved: dict[tuple[str, int | None, object], Pool] = {}
        self._budgets: dict[str, tuple[str, BudgetState]] = {}
        self._objects: dict[str, Obj] = {}
        self._members: dict[int, tuple[BottlerocketShadow, str, Member]] = {}
        """id(shadow) -> (the shadow, its node, where it stands) as the last `reports` saw it."""

    def objects(self) -> Mapping[str, Obj]:
        """The policy objects of the last `assign`, by name."""
        return self._objects

    def assign(self, policies: Iterable[Obj], nodes: Iterable[NodeInfo], *, now: datetime) -> Assignment:
        """This pass's pools and who is in which."""
        self._objects = {_name(p): p for p in policies}
        resolved: dict[tuple[str, int | None, object], Pool] = {}
        for policy in self._objects.values():
            meta = policy.get("metadata") or {}
            generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
            key = (_uid(policy), generation, resumed_at(annotations_of(meta), now=now))
            # Read without the status: a status of ours never makes a policy unreadable.
            spec_only = {k: v for k, v in policy.items() if k != "status"}
            found = self._resolved.get(key)
            resolved[key] = found or pool_of(spec_only, self._defaults, now=now)
        self._resolved = resolved
        return assign(list(resolved.values()), self._default, nodes)

    def budgets(self) -> dict[str, BudgetState]:
        """Each policy pool's failure budget as the last pass left it (or as its status shows it)."""
        found = {}
        for name, policy in self._objects.items():
            kept = self._budgets.get(name)
            if kept is not None and kept[0] == _uid(policy):
                found[name] = kept[1]
                continue
            status = shown_status(policy)
            if status is not None:
                found[name] = BudgetState(failures=tuple(status.failures), halt=status.halted)
        return found

    def settle(self, budgets: Mapping[str, BudgetState]) -> None:
        """Keep this pass's budget states for the next pass."""
        self._budgets = {
            name: (_uid(self._objects[name]), state)
            for name, state in budgets.items()
            if name in self._objects
        }

    def reports(
        self,
        decided: Plan,
        assignment: Assignment,
        shadows: Sequence[BottlerocketShadow],
        nodes: Mapping[str, NodeInfo],
        *,
        now: datetime,
        gated: Mapping[str, GateBlocked] | None = None,
        verifying: Mapping[str, int] | None = None,
    ) -> dict[str, PoolReport]:
        """Every pool's status after this pass (the environment's included). `gated`: node -> the health gate
        blocking it; `verifying`: pool -> its nodes being verified or soaking."""
        standing = self._standing(shadows, set(decided.started))
        stuck_by_node = {report.node: report for report in decided.stuck.values()}
        reports = {}
        for name, pool in assignment.pools.items():
            members = assignment.members.get(name, ())
            states = {n: standing.get(n, Member.UNKNOWN) for n in members}
            policy = self._objects.get(name)
            previous = shown_status(policy) if policy is not None else None
            status = policy_status(
                pool,
                passed=decided.admission.pools[name],
                members=states,
                held=_held(members, nodes),
                budget=decided.budgets[name],
                overlaps=assignment.overlaps.get(name, ()),
                stuck=[stuck_by_node[n] for n in members if n in stuck_by_node] if stuck_by_node else [],
                previous=previous,
                now=now,
                blocked=blocked_gates(gated, members) if gated else [],
                verifying=(verifying or {}).get(name, 0),
            )
            changed = name != ENV_POOL and policy is not None and status != previous
            reports[name] = PoolReport(status=status, members=states, changed=changed)
        return reports

    def _standing(self, shadows: Sequence[BottlerocketShadow], started: Collection[str]) -> dict[str, Member]:
        """Node -> where it stands after this pass (`member_state`, worked out again only for a shadow that
        is not the object the last pass saw: the models are immutable)."""
        known = self._members
        found: dict[int, tuple[BottlerocketShadow, str, Member]] = {}
        standing: dict[str, Member] = {}
        for shadow in shadows:
            seen = known.get(id(shadow))  # the entry holds its shadow, so its id is not reused meanwhile
            if seen is None:
                seen = (shadow, node_name_of(shadow), member_state(shadow))
            found[id(shadow)] = seen
            standing[seen[1]] = seen[2]
        self._members = found
        for shadow in shadows if started else ():
            if shadow.name in started:
                standing[node_name_of(shadow)] = Member.UPDATING  # one that starts now is updating
        return standing


def _held(members: Iterable[str], nodes: Mapping[str, NodeInfo]) -> list[str]:
    """The held nodes among `members`."""
    return [
        n
        for n in members
        if (node := nodes.get(n)) is not None
        and HOLD_ANNOTATION in node.annotations
        and hold_reason(node.annotations) is not None
    ]
