"""What the controller tells people through `brupop.notify`: after each reconcile pass, the notices that
pass's facts call for, handed to the notifier's queues (`Notifier.notify` returns at once; its own task
sends). The pass never waits for a receiver, and a fault here is logged, never raised into the pass.

The notices follow what the cluster shows, as the pass sees it (the view holds the controller's own writes
at once), not what the pass merely meant to write, so a write that failed and is retried is told once:

- node started: a shadow carries a new cycle record (`brupop.policy.progress.cycle_begins`), or a new
  entry in its history is of a cycle whose start was not told (it began and ended between two passes that
  told: passes defer what only reports while changes keep arriving, `REPORT_LAG`);
- node done, node failed, node stuck: a new entry in the shadow's history (Succeeded, Failed, Stuck);
- rollout started: the first node of a pool starts towards a version the pool is not rolling out yet;
- rollout done: a pool rolling out has no node in a cycle or waiting to start any more (the ones left have
  failed, or none is left), and each of its cycles is in the history;
- policy halted, policy resumed: the pool's failure budget gains or loses its halt in this pass;
- gate blocked: a health gate starts blocking a node (once until the gate lets it go).

Each leadership term starts from what the cluster shows then, told as nothing new: a new leader does not
repeat what its predecessor told (cycles begun or ended before, rollouts under way, nodes blocked); what
happened in the seconds between two leaders is not told. A shadow first seen later in the term (a node
that joined) has what began or ended since the last pass that told taken as news. Halts and resumes come
from the pools' budgets, which a new leader reads from the policies' status, so they are told once across
terms too. Annotations are parsed only when their text changed since the last pass (a shadow's history not
before it changes in the term: a 5000-node first pass costs tens of milliseconds, not the seconds parsing
them all would).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from brupop.controller.policies import PoolReport
from brupop.models.constants import CYCLE_ANNOTATION, HISTORY_ANNOTATION
from brupop.models.progress import Cycle, CycleStart, Outcome
from brupop.models.shadow import BottlerocketShadow
from brupop.models.wire import WireError
from brupop.notify.events import Event, Notice
from brupop.policy.admission import GateBlocked
from brupop.policy.budget import BudgetState
from brupop.policy.policy_status import Member
from brupop.policy.progress import read_history
from brupop.policy.rollout import Plan, node_name_of

log = structlog.get_logger("brupop.controller")
ENDED = {
    Outcome.SUCCEEDED: Event.NODE_DONE,
    Outcome.FAILED: Event.NODE_FAILED,
    Outcome.STUCK: Event.NODE_STUCK,
}
MOVING = frozenset({Member.UPDATING, Member.WAITING})


@dataclass(frozen=True, slots=True)
class PassFacts:
    """What one reconcile pass saw and decided."""

    shadows: Sequence[BottlerocketShadow]
    plan: Plan
    reports: Mapping[str, PoolReport]
    budgets_before: Mapping[str, BudgetState]
    """Each pool's failure budget before the pass (the plan holds them after)."""
    now: datetime


@dataclass(slots=True)
class _Seen:
    """A shadow's annotations as last read, and the history entries already told (None: not read yet, so
    whatever `history_text` holds counts as told; it is parsed only once it changes)."""

    cycle_text: str | None
    cycle: CycleStart | None
    history_text: str | None
    told: set[tuple[str, str, str]] | None = None
    shadow: BottlerocketShadow | None = None
    """The shadow as last looked at (the models are immutable: the same object shows nothing new)."""


def _key(cycle: Cycle) -> tuple[str, str, str]:
    return (cycle.start.text, cycle.end.text, cycle.outcome.value)


class Announcer:
    """One leadership term's notices (what it first sees of a shadow, and its first pass's gate verdicts,
    are only learnt)."""

    def __init__(self, notify: Callable[[Notice], None]) -> None:
        self._notify = notify
        self._primed = False
        self._told_at: datetime | None = None
        """`now` of the last pass that told: a shadow first seen after it shows as news what began or
        ended since."""
        self._seen: dict[str, _Seen] = {}
        self._rollouts: dict[str, str] = {}
        """Pool -> the version it is rolling out."""
        self._finished: dict[str, str] = {}
        """Pool -> the version of its last rollout told done (a late retry towards it starts none)."""
        self._blocked: set[tuple[str, str]] = set()

    def passed(self, facts: PassFacts) -> None:
        """Hand the pass's notices to the notifier; never raises, never waits."""
        try:
            seen = self._notices(facts)
            halts = self._halts(facts)
        except Exception:  # a notice is never worth a reconcile pass
            log.exception("notifications for a pass could not be worked out")
            return
        for notice in [*seen, *halts]:
            self._notify(notice)
        self._primed = True
        self._told_at = facts.now

    def _notices(self, facts: PassFacts) -> list[Notice]:
        """What the shadows and the plan show that is new since the last pass."""
        pool_of = {node: name for name, report in facts.reports.items() for node in report.members}
        ended: list[Notice] = []
        started: list[Notice] = []
        live: set[str] = set()
        in_cycle: set[str] = set()
        for shadow in facts.shadows:
            name = shadow.name
            live.add(name)
            seen = self._seen.get(name)
            if seen is not None and seen.shadow is shadow:  # unchanged since the last pass: nothing new
                if seen.cycle_text is not None and (pool := pool_of.get(node_name_of(shadow))) is not None:
                    in_cycle.add(pool)
                continue
            node = node_name_of(shadow)
            pool = pool_of.get(node)
            if seen is None:
                self._seen[name] = seen = self._first_sight(shadow, pool)
                if seen.shadow is shadow:  # nothing it shows is news
                    in_cycle.update([pool] if seen.cycle_text is not None and pool is not None else [])
                    continue
            seen.shadow = shadow
            for ended_cycle in self._new_history(shadow, seen):
                if pool is not None and (seen.cycle is None or seen.cycle.start != ended_cycle.start):
                    ended.extend(self._started(ended_cycle, node, pool, facts))  # begun and ended unseen
                ended.append(self._ended(ended_cycle, node, pool, facts))
            cycle = self._new_cycle(shadow, seen)
            if seen.cycle_text is not None and pool is not None:
                in_cycle.add(pool)
            if cycle is not None and pool is not None:
                started.extend(self._started(cycle, node, pool, facts))
        for name in set(self._seen) - live:
            del self._seen[name]
        # Ends first: a slot freed in a pass is often taken in the same pass.
        return [*ended, *started, *self._rollouts_done(facts, in_cycle), *self._gates(facts, pool_of)]

    def _first_sight(self, shadow: BottlerocketShadow, pool: str | None) -> _Seen:
        """A shadow seen for the first time in this term. In the term's first pass, what it shows is not
        news: its history is not parsed (a large fleet's first pass stays cheap) and a cycle it is in opens
        its pool's rollout. Later (a node that joined, seen first by a pass after others that told nothing),
        a cycle begun or ended since the last pass that told is news: the returned `_Seen` holds only what
        came before, and has no `shadow` yet, so the caller looks at the rest as at any change."""
        annotations = shadow.annotations
        record_text = annotations.get(CYCLE_ANNOTATION)
        record = _cycle_of(record_text)
        since = self._told_at
        if since is not None:
            cycles = read_history(annotations).cycles
            seen = _Seen(
                cycle_text=None,
                cycle=None,
                history_text=None,
                told={_key(c) for c in cycles if c.end.instant < since},
            )
            if record is not None and record.start.instant < since:
                seen.cycle_text, seen.cycle = record_text, record
            return seen
        seen = _Seen(
            cycle_text=record_text,
            cycle=record,
            history_text=annotations.get(HISTORY_ANNOTATION),
            shadow=shadow,
        )
        if record is not None and pool is not None:
            self._rollouts.setdefault(pool, record.to_version)
        return seen

    def _new_history(self, shadow: BottlerocketShadow, seen: _Seen) -> list[Cycle]:
        text = shadow.annotations.get(HISTORY_ANNOTATION)
        if text == seen.history_text:
            return []
        told = seen.told if seen.told is not None else _keys(seen.history_text)
        seen.history_text = text
        cycles = read_history(shadow.annotations).cycles
        seen.told = {_key(cycle) for cycle in cycles}
        return [cycle for cycle in cycles if _key(cycle) not in told]

    def _new_cycle(self, shadow: BottlerocketShadow, seen: _Seen) -> CycleStart | None:
        """The cycle the shadow's record shows, when it is not the one seen before."""
        text = shadow.annotations.get(CYCLE_ANNOTATION)
        if text == seen.cycle_text:
            return None
        seen.cycle_text = text
        before, seen.cycle = seen.cycle, _cycle_of(text)
        return seen.cycle if seen.cycle is not None and seen.cycle != before else None

    def _started(self, cycle: CycleStart, node: str, pool: str, facts: PassFacts) -> list[Notice]:
        to = cycle.to_version
        notices = []
        if self._rollouts.get(pool) != to:
            self._rollouts[pool] = to
            if self._finished.get(pool) != to:
                total = len(facts.reports[pool].members)
                notices.append(
                    Notice(event=Event.ROLLOUT_STARTED, at=facts.now, policy=pool, to_version=to, total=total)
                )
        notices.append(
            Notice(
                event=Event.NODE_STARTED,
                at=facts.now,
                node=node,
                policy=pool,
                from_version=cycle.from_version,
                to_version=to,
            )
        )
        return notices

    def _ended(self, cycle: Cycle, node: str, pool: str | None, facts: PassFacts) -> Notice:
        done, total = _progress(facts.reports.get(pool) if pool is not None else None)
        return Notice(
            event=ENDED[cycle.outcome],
            at=facts.now,
            node=node,
            policy=pool,
            from_version=cycle.from_version,
            to_version=cycle.to_version,
            reason=cycle.reason or None,
            done=done,
            total=total,
        )

    def _rollouts_done(self, facts: PassFacts, in_cycle: set[str]) -> list[Notice]:
        notices = []
        for pool, version in sorted(self._rollouts.items()):
            report = facts.reports.get(pool)
            if report is None:
                del self._rollouts[pool]
                continue
            if pool in in_cycle or any(state in MOVING for state in report.members.values()):
                continue
            del self._rollouts[pool]
            self._finished[pool] = version
            done, total = _progress(report)
            notices.append(
                Notice(
                    event=Event.ROLLOUT_DONE,
                    at=facts.now,
                    policy=pool,
                    to_version=version,
                    done=done,
                    total=total,
                )
            )
        return notices

    def _halts(self, facts: PassFacts) -> list[Notice]:
        """The pools this pass halted or resumed (told in a term's first pass too: the budgets before the
        pass come from what the policies' status showed)."""
        notices = []
        for pool in sorted(facts.plan.budgets):
            before = facts.budgets_before.get(pool)
            was, now = (before.halt if before else None), facts.plan.budgets[pool].halt
            if was is None and now is not None:
                notices.append(
                    Notice(event=Event.POLICY_HALTED, at=facts.now, policy=pool, reason=now.message)
                )
            elif was is not None and now is None:
                reason = f"the halt of {was.since.text} ({', '.join(was.failed_nodes)}) is cleared"
                notices.append(Notice(event=Event.POLICY_RESUMED, at=facts.now, policy=pool, reason=reason))
        return notices

    def _gates(self, facts: PassFacts, pool_of: Mapping[str, str]) -> list[Notice]:
        """Nodes a gate starts blocking (a term's first pass only learns which are blocked)."""
        notices = []
        blocked = set()
        by_name = {s.name: s for s in facts.shadows}
        for name, reason in sorted(facts.plan.waiting.items()):
            if not isinstance(reason, GateBlocked) or name not in by_name:
                continue
            node = node_name_of(by_name[name])
            key = (node, reason.gate.value)
            blocked.add(key)
            if self._primed and key not in self._blocked:
                message = f"the {reason.gate.value} gate: {reason.reason}"
                notices.append(
                    Notice(
                        event=Event.GATE_BLOCKED,
                        at=facts.now,
                        node=node,
                        policy=pool_of.get(node),
                        reason=message,
                    )
                )
        self._blocked = blocked
        return notices


def _cycle_of(text: str | None) -> CycleStart | None:
    if text is None:
        return None
    try:
        return CycleStart.from_json(text)
    except WireError:
        return None


def _keys(history_text: str | None) -> set[tuple[str, str, str]]:
    if history_text is None:
        return set()
    return {_key(cycle) for cycle in read_history({HISTORY_ANNOTATION: history_text}).cycles}


def _progress(report: PoolReport | None) -> tuple[int | None, int | None]:
    """(nodes of the pool up to date, nodes in the pool)."""
    if report is None:
        return None, None
    members = report.members.values()
    return sum(state is Member.UP_TO_DATE for state in members), len(report.members)
