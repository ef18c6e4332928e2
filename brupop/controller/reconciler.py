"""The controller's loop: coalesce events, run one level-based pass over the whole fleet, write what
changed, and sleep until the next event or time-based deadline (a back-off ending, a state's deadline, a
window opening or a blackout ending, a failure leaving its budget's window, a failed write's retry, or a
slow safety resync). No fixed polling.

Each pass shares the nodes out into pools (the UpdatePolicies, and the environment's pool for the nodes no
policy selects: `brupop.controller.policies`), asks the health gates and verification
(`brupop.controller.health`: which nodes a gate blocks, what to do with a node at a checkpoint of its
cycle; from caches, never awaiting Prometheus) when the controller runs them, decides
(`brupop.policy.rollout.plan`), writes, then writes each policy's status when it changed and reports what
people should hear of: a pool halted by its failure budget or resumed, a policy the controller cannot
follow, a gate that began blocking, a failed verification, a held node, a stuck node, an unreadable
shadow.
What the pass saw and decided also goes to `notices` (`brupop.controller.announcer`), which only queues.

The view must already reflect the controller's own writes when the next pass runs (the kube-backed view
"assumes" each written object until its watch event arrives); otherwise a pass running before the watch
caught up would count a just-started node as idle and could start one node too many. A pass that wrote
something runs again at once: some decisions take two steps (a node loses its in-cycle label, then its
shadow).

Writes happen only while this replica leads with a recent renewal (`Leadership.steady`); each write is
also fenced on its own (see `brupop.controller.cluster`). A write that fails is retried by a later pass,
after a jittered back-off, on whatever the cluster looks like then.

One-shot schedules (a trigger time rather than a window) stay open from the trigger until a pass finds no
node of the pool that wants to start; that moment ("drained at") lives on the leader Lease, per pool, so a
new leader carries on with an open trigger and never replays one that already drained. When no leader ever
recorded it, the first leader's start counts for the environment's schedule, as the Rust brupop's loop does
after a restart, and the moment a leader first sees the policy for a policy's.

Unreadable shadows hold a slot each and are reported once per change; stuck nodes are reported once per
state they wait for (Warning Events on the shadow and the Node, a log line, a metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from brupop.controller.announcer import PassFacts
from brupop.controller.health import Assessment, Health
from brupop.controller.metrics import FleetMetrics
from brupop.controller.policies import PolicyBook, PoolReport
from brupop.controller.settings import ControllerSettings
from brupop.kube.retry import Backoff
from brupop.models.policy import Halt, UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.verifying import VerificationOutcome
from brupop.policy.admission import Held
from brupop.policy.budget import BudgetState
from brupop.policy.checkpoints import FailUpdate, Finish
from brupop.policy.marks import MarksChange
from brupop.policy.pools import ENV_POOL, Assignment, Defaults
from brupop.policy.rollout import (
    NodeInfo,
    Plan,
    Pools,
    RolloutConfig,
    Settled,
    node_name_of,
    plan,
    tracked,
    wanting,
)
from brupop.policy.schedule import ScheduleKind
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import Stuck

RESYNC = timedelta(minutes=5)
HOLD = timedelta(seconds=1)
"""How soon to look again while writes are held (the Lease renewal is overdue)."""
REPORT_LAG = timedelta(seconds=1)
"""How long the looks at the whole fleet that only report (policy statuses, notices, held nodes, fleet
metrics) may wait while changes keep arriving, so that a change reaches its write without waiting for them
(issue 20)."""
RETRY = Backoff(base=0.5, cap=30.0)
log = structlog.get_logger("brupop.controller")


@dataclass(frozen=True, slots=True)
class UnreadableShadow:
    """A shadow the controller could not read: it holds a slot for its node until it is fixed."""

    name: str
    resource_version: str
    error: str
    node: str
    """The Node it tracks (its owner, else its name after `brs-`)."""


class FleetView(Protocol):
    def shadows(self) -> list[BottlerocketShadow]: ...
    def unreadable(self) -> list[UnreadableShadow]: ...
    def nodes(self) -> Mapping[str, NodeInfo]: ...
    def policies(self) -> list[dict[str, Any]]: ...


class FleetWriter(Protocol):
    """Each write returns whether it landed; a refused or failed write is logged by the writer."""

    async def write_shadow(
        self, shadow: BottlerocketShadow, *, spec: ShadowSpec | None, annotations: Mapping[str, str | None]
    ) -> bool: ...
    async def delete_shadow(self, shadow: BottlerocketShadow) -> bool: ...
    async def write_node(self, node: str, *, in_cycle: bool | None, marks: MarksChange) -> bool: ...
    async def write_policy_status(self, policy: Mapping[str, Any], status: UpdatePolicyStatus) -> bool: ...
    def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None: ...
    def record_node_event(self, node: str, *, reason: str, message: str, warning: bool = True) -> None: ...
    def record_policy_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None: ...


class Leadership(Protocol):
    def steady(self) -> bool:
        """Whether a batch of writes may begin now."""
        ...

    def drained_at(self) -> Mapping[str, datetime]:
        """Per pool (`ENV_POOL` for the environment's), when its one-shot schedule last drained, as recorded
        by any leader."""
        ...

    async def record_drained(self, pool: str, at: datetime, *, live: Collection[str]) -> bool:
        """Record it for every later leader (forgetting pools not in `live`); False when that failed."""
        ...


NO_MARKS = MarksChange()


@dataclass(frozen=True, slots=True)
class _Pass:
    """What one pass saw and decided, for what only reports on it."""

    shadows: Sequence[BottlerocketShadow]
    nodes: Mapping[str, NodeInfo]
    unreadable: Sequence[UnreadableShadow]
    decided: Plan
    assignment: Assignment
    assessed: Assessment
    before: Mapping[str, BudgetState]
    """The failure budgets before the pass."""
    env_open: bool
    """The environment's schedule lets updates start after this pass."""


class Reconciler:
    """One leadership term's reconciler (a new term reads the recorded schedule state afresh)."""

    def __init__(
        self,
        *,
        view: FleetView,
        writer: FleetWriter,
        leadership: Leadership,
        settings: ControllerSettings,
        metrics: FleetMetrics,
        clock: Callable[[], datetime],
        health: Health | None = None,
        notices: Callable[[PassFacts], None] = lambda _: None,
    ) -> None:
        """`health`: the health gates and verification (None: not run, every checkpoint passes at once, as
        for pools that set neither)."""
        self._view = view
        self._writer = writer
        self._leadership = leadership
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._health = health
        self._notices = notices
        self._config = RolloutConfig(controller_node=settings.node_name, stuck_after=settings.stuck_after)
        self._book = PolicyBook(Defaults(max_concurrent=settings.max_concurrent, schedule=settings.schedule))
        self._drained = dict(leadership.drained_at())
        self._unrecorded: set[str] = set()
        if ENV_POOL not in self._drained:
            self._drained[ENV_POOL] = clock()
            if settings.schedule.kind is ScheduleKind.TRIGGER:
                self._unrecorded.add(ENV_POOL)
        self._failures = 0
        self._holding = False
        self._reported_unreadable: set[tuple[str, str]] = set()
        self._reported_stuck: set[tuple[str, str]] = set()
        self._reported_held: set[tuple[str, str]] = set()
        self._reported_invalid: set[tuple[str, str]] = set()
        self._settled: Settled | None = None
        """The last pass's settled shadows (`plan`'s `settled`)."""
        self._told_at: datetime | None = None
        """When a pass last reported on the whole fleet (`_tell`)."""
        self._untold: Mapping[str, BudgetState] | None = None
        """The failure budgets before the first of the passes since then that did not."""
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Something changed: run a pass soon (many pokes before the pass coalesce into one)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled."""
        while True:
            self._wake.clear()
            deadline = await self.reconcile_once()
            delay = max((deadline - self._clock()).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: on 3.11 it can swallow a cancellation
                    await self._wake.wait()

    async def reconcile_once(self) -> datetime:
        """One pass; returns when the next pass is due even if nothing happens."""
        started = time.perf_counter()
        now = self._clock()
        if not self._leadership.steady():
            if not self._holding:
                log.warning("holding writes: the leader Lease has not been renewed recently")
            self._holding = True
            return now + HOLD
        self._holding = False
        shadows = self._view.shadows()
        unreadable = self._view.unreadable()
        nodes = self._view.nodes()
        assignment = self._book.assign(self._view.policies(), tracked(shadows, nodes), now=now)
        triggers = _triggers(assignment)
        await self._record_first_drains(triggers, now)
        candidates = [node_name_of(s) for s in wanting(shadows, nodes)]
        assessed = (
            Assessment()
            if self._health is None
            else self._health.assess(assignment, shadows, nodes, candidates=candidates, now=now)
        )
        before = self._book.budgets()
        decided = plan(
            shadows,
            nodes,
            now=now,
            config=self._config,
            pools=Pools(
                assignment=assignment,
                budgets=before,
                drained_at=self._drained,
                gated=assessed.gated,
                checkpoints=assessed.checkpoints,
            ),
            unreadable=[u.node for u in unreadable],
            settled=self._settled,
        )
        self._settled = decided.settled
        looked_up = decided.spec_changes or decided.annotations or decided.deletions or decided.stuck
        by_name = {s.name: s for s in shadows} if looked_up else {}  # at rest: no map of 15,000 names
        wrote, failed = await self._apply(decided, by_name, assessed, assignment)
        self._book.settle(decided.budgets)
        self._report_budgets(before, decided.budgets)
        self._report_invalid(assignment)
        self._report_gates(assessed)
        self._report_unreadable(unreadable)
        self._report_stuck(decided.stuck, by_name, now)
        drained = [p for p in decided.drained if p in triggers and not failed]
        for pool in drained:
            if await self._leadership.record_drained(pool, now, live=triggers):
                self._drained[pool] = now
            else:
                failed = True
        env = decided.admission.pools[ENV_POOL]
        env_open = env.window_open and not (ENV_POOL in drained and self._drained[ENV_POOL] == now)
        failed_status = False
        if self._wake.is_set() and self._told_at is not None and now - self._told_at < REPORT_LAG:
            # A change waits for the next pass: the looks at the whole fleet that only report wait too.
            self._untold = before if self._untold is None else {**before, **self._untold}
        else:
            seen = _Pass(shadows, nodes, unreadable, decided, assignment, assessed, before, env_open)
            failed_status = await self._tell(seen, now)
        # A drain recorded closes its trigger's window: the next pass shows it (status, metrics) at once.
        self._metrics.pass_seconds.observe(time.perf_counter() - started)
        return self._next_pass(now, decided, wrote=wrote or bool(drained), failed=failed or failed_status)

    async def _tell(self, seen: _Pass, now: datetime) -> bool:
        """What only reports on the whole fleet: each policy's status (written when it changed), the notices,
        the held nodes' Events and the fleet metrics. Returns whether a status write failed."""
        decided, before = seen.decided, seen.before
        reports = self._book.reports(
            decided,
            seen.assignment,
            seen.shadows,
            seen.nodes,
            now=now,
            gated=seen.assessed.gated,
            verifying=seen.assessed.verifying,
        )
        failed = await self._write_statuses(reports)
        if self._untold is not None:  # the budgets before the passes that told nothing
            before, self._untold = {**before, **self._untold}, None
        self._notices(
            PassFacts(shadows=seen.shadows, plan=decided, reports=reports, budgets_before=before, now=now)
        )
        self._report_held(decided, seen.shadows)
        self._metrics.observe(
            seen.shadows,
            now=now,
            active=decided.active,
            window_open=seen.env_open,
            stuck=len(decided.stuck),
            unreadable=len(seen.unreadable),
        )
        self._metrics.observe_pools(reports, budgets=decided.budgets)
        self._told_at = now
        return failed

    async def _record_first_drains(self, triggers: Collection[str], now: datetime) -> None:
        """Trigger pools without a record start from now (no past trigger replays), recorded at once."""
        recorded = self._leadership.drained_at()
        for pool in triggers:
            if pool not in self._drained:
                self._drained[pool] = recorded.get(pool, now)
                if pool not in recorded:
                    self._unrecorded.add(pool)
        for pool in sorted(self._unrecorded & set(triggers)):
            if await self._leadership.record_drained(pool, self._drained[pool], live=triggers):
                self._unrecorded.discard(pool)

    def _next_pass(self, now: datetime, decided: Plan, *, wrote: bool, failed: bool) -> datetime:
        deadlines = [now + RESYNC]
        if decided.wake_at is not None:
            deadlines.append(decided.wake_at)
        if failed:
            deadlines.append(now + timedelta(seconds=RETRY.delay(self._failures)))
            self._failures += 1
        else:
            self._failures = 0
        if wrote:
            deadlines.append(now)
        return min(deadlines)

    async def _apply(
        self,
        decided: Plan,
        before: Mapping[str, BottlerocketShadow],
        assessed: Assessment,
        assignment: Assignment,
    ) -> tuple[bool, bool]:
        """Write the plan: in-cycle labels (with their marks) first (a node starts only once labelled), then
        shadows (specs and annotations), label removals and marks, and deletions. Returns (something was
        written, something failed)."""
        results: list[bool] = []
        labelled: dict[str, bool] = {}
        for node, wanted in decided.in_cycle.items():
            if wanted:
                marks = decided.marks.get(node, NO_MARKS)
                labelled[node] = await self._writer.write_node(node, in_cycle=True, marks=marks)
                results.append(labelled[node])
        for name in [
            *decided.spec_changes,
            *(n for n in decided.annotations if n not in decided.spec_changes),
        ]:
            old = before[name]
            spec = decided.spec_changes.get(name)
            started = name in decided.started
            if started and not labelled.get(node_name_of(old), False):
                continue  # not labelled: the start waits for a later pass
            if spec is not None:
                log.info(
                    "spec",
                    shadow=name,
                    state=spec.state.value,
                    version=spec.version,
                    was=old.spec.state.value,
                )
            annotations = decided.annotations.get(name, {})
            results.append(await self._writer.write_shadow(old, spec=spec, annotations=annotations))
            if results[-1] and spec is not None:
                self._announce(old, spec, started=started)
                pool = assignment.pool_of.get(node_name_of(old))
                self._verified(old, assessed.checkpoints.get(name), pool=pool)
        for node, wanted in decided.in_cycle.items():
            if not wanted:
                marks = decided.marks.get(node, NO_MARKS)
                results.append(await self._writer.write_node(node, in_cycle=False, marks=marks))
        for node, marks in decided.marks.items():
            if node not in decided.in_cycle:
                results.append(await self._writer.write_node(node, in_cycle=None, marks=marks))
        for name in decided.deletions:
            log.info("deleting the shadow of a node that left brupop", shadow=name)
            results.append(await self._writer.delete_shadow(before[name]))
        return any(results), not all(results)

    def _verified(self, shadow: BottlerocketShadow, decision: object, *, pool: str | None) -> None:
        """A verification ended with the spec just written: counted, and a failure told (a Warning Event on
        the shadow and the Node, a log line)."""
        if self._health is None or pool is None or not isinstance(decision, Finish | FailUpdate):
            return
        if decision.record is None or decision.record.outcome is None:
            return
        self._health.metrics.verified(pool, decision.record.outcome)
        if decision.record.outcome is VerificationOutcome.FAILED:
            node = node_name_of(shadow)
            message = (
                f"verification of the update to {decision.record.version} failed: {decision.record.reason}; "
                "a failed update for the policy's failure budget"
            )
            log.error("verification failed", shadow=shadow.name, reason=decision.record.reason)
            self._writer.record_event(shadow.name, reason="VerificationFailed", message=message, warning=True)
            self._writer.record_node_event(node, reason="VerificationFailed", message=message)

    def _report_gates(self, assessed: Assessment) -> None:
        """A gate that began blocking nodes of a policy's pool: an Event on the policy (once per block)."""
        for began in assessed.began:
            log.info("a health gate blocks", policy=began.pool, gate=str(began.gate), reason=began.reason)
            if began.pool in self._book.objects():
                self._writer.record_policy_event(began.pool, reason="GateBlocked", message=began.message())

    async def _write_statuses(self, reports: Mapping[str, PoolReport]) -> bool:
        """Each policy's status, when it changed (one write per policy per pass); whether one failed. A
        failed status write is retried by a later pass, but holds up nothing else (not a trigger's drain)."""
        results = []
        objects = self._book.objects()
        for name, report in reports.items():
            if report.changed:
                results.append(await self._writer.write_policy_status(objects[name], report.status))
        return not all(results)

    def _announce(self, old: BottlerocketShadow, spec: ShadowSpec, *, started: bool) -> None:
        status = old.status
        if started:
            self._writer.record_event(
                old.name,
                reason="UpdateStarted",
                message=f"updating from {status.current_version if status else '?'} to {spec.version}",
            )
        elif status is not None and status.current_state is ShadowState.ERROR_RESET and is_active(old):
            self._writer.record_event(
                old.name,
                reason="UpdateFailed",
                message=f"update to {old.spec.version} failed (crash count {status.crash_count})",
                warning=True,
            )
        elif spec.state is not old.spec.state and spec.state is not ShadowState.IDLE:
            self._writer.record_event(
                old.name, reason="TargetState", message=f"target state {spec.state.value} ({spec.version})"
            )

    def _report_budgets(self, before: Mapping[str, BudgetState], after: Mapping[str, BudgetState]) -> None:
        """A pool halted by its failure budget, or resumed: an Event on its policy and a log line."""
        for name in sorted(set(self._book.objects()) & set(after)):
            was, now = _halt(before.get(name)), after[name].halt
            if was is None and now is not None:
                log.error("policy halted by its failure budget", policy=name, nodes=now.failed_nodes)
                self._writer.record_policy_event(
                    name, reason="PolicyHalted", message=now.message, warning=True
                )
            elif was is not None and now is None:
                log.info("policy resumed", policy=name)
                message = f"resumed: the halt of {was.since.text} ({', '.join(was.failed_nodes)}) is cleared"
                self._writer.record_policy_event(name, reason="PolicyResumed", message=message)

    def _report_invalid(self, assignment: Assignment) -> None:
        """A policy the controller cannot follow: a Warning Event on it once per problem."""
        seen = set()
        for name, pool in assignment.pools.items():
            if not pool.problems or name not in self._book.objects():
                continue
            key = (name, "; ".join(pool.problems))
            seen.add(key)
            if key not in self._reported_invalid:
                log.error(
                    "a policy cannot be followed; its pool starts nothing", policy=name, problems=key[1]
                )
                message = f"cannot be followed, so its pool starts nothing: {key[1]}"
                self._writer.record_policy_event(name, reason="PolicyInvalid", message=message, warning=True)
        self._reported_invalid = seen

    def _report_held(self, decided: Plan, shadows: Sequence[BottlerocketShadow]) -> None:
        """A node held out of an update it would start: a Normal Event on the Node once per hold."""
        seen = set()
        any_held = any(isinstance(reason, Held) for reason in decided.waiting.values())
        for shadow in shadows if any_held else ():  # no hold: no shadow to look at
            reason = decided.waiting.get(shadow.name)
            if isinstance(reason, Held):
                node = node_name_of(shadow)
                key = (node, reason.reason)
                seen.add(key)
                if key not in self._reported_held:
                    log.info("node held out of its update", node=node, reason=reason.reason)
                    self._writer.record_node_event(
                        node, reason="NodeHeld", message=reason.message(), warning=False
                    )
        self._reported_held = seen

    def _report_unreadable(self, unreadable: list[UnreadableShadow]) -> None:
        seen = {(u.name, u.resource_version) for u in unreadable}
        for bad in unreadable:
            if (bad.name, bad.resource_version) in self._reported_unreadable:
                continue
            log.error(
                "a BottlerocketShadow cannot be read; it holds a slot until fixed",
                shadow=bad.name,
                error=bad.error,
            )
            self._writer.record_event(
                bad.name,
                reason="InvalidShadow",
                message=f"cannot be read, so the node counts as updating until this is fixed: {bad.error}",
                warning=True,
            )
        self._reported_unreadable = seen

    def _report_stuck(
        self, stuck: Mapping[str, Stuck], shadows: Mapping[str, BottlerocketShadow], now: datetime
    ) -> None:
        seen: set[tuple[str, str]] = set()
        for name, report in stuck.items():
            shadow = shadows[name]
            key = (name, str(shadow.spec.state_transition_timestamp))
            seen.add(key)
            if key in self._reported_stuck:
                continue
            state = shadow.spec.state.value
            current = shadow.status.current_state.value if shadow.status else "?"
            message = (
                f"stuck: asked for {state} {_duration(now - report.since)} ago and still {current} (deadline "
                f"{_duration(report.deadline - report.since)}); it keeps its update slot, "
                "see the README's 'A node is stuck'"
            )
            log.error("node stuck mid-cycle", shadow=name, wanted=state, current=current)
            self._writer.record_event(name, reason="UpdateStuck", message=message, warning=True)
            self._writer.record_node_event(report.node, reason="UpdateStuck", message=message)
        self._reported_stuck = seen


def _triggers(assignment: Assignment) -> list[str]:
    """The pools whose schedule is a one-shot trigger."""
    return [
        name
        for name, pool in assignment.pools.items()
        if pool.schedule is not None and pool.schedule.kind is ScheduleKind.TRIGGER
    ]


def _halt(state: BudgetState | None) -> Halt | None:
    return None if state is None else state.halt


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
