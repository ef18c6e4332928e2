"""The controller's notifications (`brupop.controller.announcer`), driven by the real reconciler over the
doubles' fleet with an agent that does what each spec asks (or fails): the sequence of a rollout with one
failure, halts and resumes, gate blocks, stuck nodes, a new term that repeats nothing, and a fault that
never reaches the pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from brupop.controller.announcer import Announcer, PassFacts
from brupop.controller.health import Assessment, Health
from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.models import constants as c
from brupop.models.policy import GateKind
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.notify.events import Event, Notice
from brupop.policy.admission import GateBlocked
from brupop.policy.pools import Assignment
from brupop.policy.rollout import NodeInfo
from brupop.settings import SettingsError
from tests.controller_doubles import Fleet, Lease
from tests.factories import shadow
from tests.unit.controller.test_reconciler_policies import world

NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
S = ShadowState
STEPS = {
    S.STAGED_AND_PERFORMED_UPDATE: S.IDLE,
    S.REBOOTED_INTO_UPDATE: S.STAGED_AND_PERFORMED_UPDATE,
    S.MONITORING_UPDATE: S.REBOOTED_INTO_UPDATE,
}
"""A spec state -> the reported state the agent moves on from to reach it."""


class Heard:
    """The notices handed to the notifier."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)

    def told(self) -> list[tuple[str, str | None]]:
        return [(n.event.value, n.node) for n in self.notices]


def act(fleet: Fleet, *, failing: set[str]) -> bool:
    """Each agent takes its node one step towards its spec; whether any did."""
    moved = False
    for name, found in list(fleet.by_name.items()):
        status, node = found.status, name.removeprefix(c.SHADOW_NAME_PREFIX)
        if status is None:
            continue
        wanted, now = found.spec.state, status.current_state
        if wanted is S.IDLE and now is not S.IDLE:
            status = replace(status, current_state=S.IDLE)
        elif STEPS.get(wanted) is now and node in failing:
            failed = Timestamp.from_datetime(NOW)
            status = replace(
                status,
                current_state=S.ERROR_RESET,
                crash_count=status.crash_count + 1,
                state_transition_failure_timestamp=failed,
            )
        elif STEPS.get(wanted) is now:
            version = found.spec.version if wanted is S.REBOOTED_INTO_UPDATE else status.current_version
            status = replace(status, current_state=wanted, current_version=version or status.current_version)
        else:
            continue
        fleet.by_name[name] = replace(found, status=status)
        moved = True
    return moved


class Gates(Health):
    """The health parts with gates blocking the nodes in `verdicts`, and no verification."""

    def __init__(self) -> None:  # none of the real parts: only `assess` is asked
        self.verdicts: dict[str, GateBlocked] = {}

    def assess(
        self,
        assignment: Assignment,
        shadows: Sequence[BottlerocketShadow],
        nodes: Mapping[str, NodeInfo],
        *,
        candidates: Sequence[str],
        now: datetime,
    ) -> Assessment:
        return Assessment(gated={n: v for n, v in self.verdicts.items() if n in candidates})


def reconciler(
    fleet: Fleet, heard: Heard, clock: list[datetime], gates: Gates | None = None, **env: str
) -> Reconciler:
    return Reconciler(
        view=fleet,
        writer=fleet,
        leadership=Lease(),
        settings=ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "1", **env}, now=NOW),
        metrics=FleetMetrics(CollectorRegistry()),
        clock=lambda: clock[0],
        health=gates,
        notices=Announcer(heard).passed,
    )


async def settle(r: Reconciler, fleet: Fleet, *, failing: set[str], passes: int = 60) -> None:
    """Passes and agent steps until neither changes anything any more."""
    quiet = 0
    for _ in range(passes):
        before = dict(fleet.by_name)
        await r.reconcile_once()
        moved = act(fleet, failing=failing)
        quiet = 0 if moved or fleet.by_name != before else quiet + 1
        if quiet == 3:
            return
    raise AssertionError("the fleet never settled")


def nodes(*names: str, pool: str = "web") -> Fleet:
    return world(*(shadow(n, current="1.0.0", target="1.1.0") for n in names), pool=pool)


@pytest.mark.parametrize("order", ["abc", "cba"])
async def test_a_rollout_with_one_failure_is_told_in_order(order: str) -> None:
    # In the pass that sees a's failure end, b has started: its end comes first whatever the view's order.
    fleet, heard = nodes(*order), Heard()
    await settle(reconciler(fleet, heard, [NOW]), fleet, failing={"a"})
    assert heard.told() == [
        ("rollout-started", None),
        ("node-started", "a"),
        ("node-failed", "a"),
        ("node-started", "b"),
        ("node-done", "b"),
        ("node-started", "c"),
        ("node-done", "c"),
        ("rollout-done", None),
    ]
    started, _, failed, _, done_b, _, done_c, finished = heard.notices
    assert (started.policy, started.to_version, started.total) == ("web", "1.1.0", 3)
    assert (failed.from_version, failed.to_version, failed.policy) == ("1.0.0", "1.1.0", "web")
    assert failed.reason  # what failed, from the history the controller wrote
    assert (done_b.done, done_b.total, done_c.done) == (1, 3, 2)
    assert (finished.policy, finished.to_version, finished.done, finished.total) == ("web", "1.1.0", 2, 3)


async def test_a_cycle_begun_and_ended_between_two_passes_that_tell_is_told_whole() -> None:
    """Found by CI on a loaded machine: while changes keep arriving, passes defer what only reports
    (`REPORT_LAG`), and node a started and failed between two passes that told. Its start and the rollout's
    were never told, only its failure. The history says the cycle began: its start is told before its end."""
    fleet, heard, clock = nodes("a", "b"), Heard(), [NOW]
    r = reconciler(fleet, heard, clock)
    await r.reconcile_once()  # the term's first pass tells (it learns the fleet); a starts
    for _ in range(6):  # a stages, fails and is sent back to Idle while changes keep coming
        act(fleet, failing={"a"})
        r.poke()
        await r.reconcile_once()
    assert heard.told() == []
    clock[0] = NOW + timedelta(seconds=2)
    r._wake.clear()  # as `run` does before each pass: no change arrives any more, every pass tells
    await settle(r, fleet, failing={"a"})
    assert heard.told() == [
        ("rollout-started", None),
        ("node-started", "a"),
        ("node-failed", "a"),
        ("node-started", "b"),
        ("node-done", "b"),
        ("rollout-done", None),
    ]


async def test_a_failed_node_that_retries_later_starts_no_new_rollout() -> None:
    fleet, heard, clock = nodes("a", "b"), Heard(), [NOW]
    r = reconciler(fleet, heard, clock)
    await settle(r, fleet, failing={"a"})
    heard.notices.clear()
    clock[0] = NOW + timedelta(hours=2)  # past its back-off
    await settle(r, fleet, failing=set())
    assert heard.told() == [("node-started", "a"), ("node-done", "a"), ("rollout-done", None)]
    assert (heard.notices[-1].done, heard.notices[-1].total) == (2, 2)


async def test_a_halt_and_its_resume_are_told_once() -> None:
    budget = {"maxFailures": 1, "window": "1h"}
    fleet = world(*(shadow(n, current="1.0.0", target="1.1.0") for n in "ab"), failureBudget=budget)
    heard, clock = Heard(), [NOW]
    r = reconciler(fleet, heard, clock)
    await settle(r, fleet, failing={"a"})
    halts = [n for n in heard.notices if n.event is Event.POLICY_HALTED]
    assert [(n.policy, bool(n.reason)) for n in halts] == [("web", True)]
    assert ("node-started", "b") not in heard.told()  # nothing starts while halted
    resumed = {c.RESUMED_AT_ANNOTATION: Timestamp.from_datetime(NOW + timedelta(seconds=1)).text}
    fleet.policy_objects["web"]["metadata"]["annotations"] = resumed
    clock[0] = NOW + timedelta(seconds=2)
    await settle(r, fleet, failing=set())
    # The halt is told as the failure is counted (the node reports it); the failed cycle once it is over.
    assert heard.told() == [
        ("rollout-started", None),
        ("node-started", "a"),
        ("policy-halted", None),
        ("node-failed", "a"),
        ("policy-resumed", None),
        ("node-started", "b"),
        ("node-done", "b"),
        ("rollout-done", None),
    ]


async def test_a_halt_in_a_pass_that_told_nothing_is_told_by_the_next_pass_that_tells() -> None:
    budget = {"maxFailures": 1, "window": "1h"}
    fleet = world(shadow("a", current="1.0.0", target="1.0.0"), failureBudget=budget)
    heard, clock = Heard(), [NOW]
    r = reconciler(fleet, heard, clock)
    await r.reconcile_once()
    failed_at = NOW - timedelta(minutes=1)
    fleet.by_name["brs-a"] = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=failed_at)
    r.poke()  # a change arrived during the pass: the pass that halts tells nothing
    await r.reconcile_once()
    assert heard.notices == []
    clock[0] = NOW + timedelta(seconds=1)
    await r.reconcile_once()  # the budget was halted before this pass, but not when the last one told
    await r.reconcile_once()
    assert [(n.event, n.policy) for n in heard.notices] == [(Event.POLICY_HALTED, "web")]


async def test_a_gate_block_is_told_once_until_the_gate_lets_the_node_go() -> None:
    fleet, heard, gates = nodes("a"), Heard(), Gates()
    gates.verdicts["a"] = GateBlocked(gate=GateKind.PROMETHEUS, reason="alert NodeDown firing", since=NOW)
    r = reconciler(fleet, heard, [NOW], gates=gates)
    await r.reconcile_once()  # the term's first pass only learns
    gates.verdicts["a"] = GateBlocked(gate=GateKind.PODS, reason="2 pods not ready", since=NOW)
    await r.reconcile_once()
    await r.reconcile_once()
    assert [(n.event, n.node, n.policy, n.reason) for n in heard.notices] == [
        (Event.GATE_BLOCKED, "a", "web", "the pods gate: 2 pods not ready")
    ]
    del gates.verdicts["a"]
    await settle(r, fleet, failing=set())
    assert heard.told()[1:3] == [("rollout-started", None), ("node-started", "a")]


async def test_a_stuck_node_is_told_once_per_cycle() -> None:
    fleet, heard, clock = nodes("a"), Heard(), [NOW]
    r = reconciler(fleet, heard, clock, STUCK_AFTER_STAGED_AND_PERFORMED_UPDATE="60")
    for _ in range(3):  # it starts; its agent never acts
        await r.reconcile_once()
    clock[0] = NOW + timedelta(seconds=61)
    for _ in range(4):
        await r.reconcile_once()
    stuck = [n for n in heard.notices if n.event is Event.NODE_STUCK]
    assert [(n.node, n.to_version) for n in stuck] == [("a", "1.1.0")]
    assert stuck[0].reason


async def test_a_new_term_repeats_nothing_and_tells_what_comes_after() -> None:
    fleet, first = nodes("a", "b"), Heard()
    r = reconciler(fleet, first, [NOW])
    for _ in range(3):  # a starts and gets half way
        await r.reconcile_once()
        act(fleet, failing=set())
    assert first.told() == [("rollout-started", None), ("node-started", "a")]
    second = Heard()
    await settle(reconciler(fleet, second, [NOW]), fleet, failing=set())
    assert second.told() == [
        ("node-done", "a"),
        ("node-started", "b"),
        ("node-done", "b"),
        ("rollout-done", None),
    ]


def test_a_fault_while_working_out_notices_never_reaches_the_pass() -> None:
    heard = Heard()
    broken = PassFacts(shadows=[None], plan=None, reports={}, budgets_before={}, now=NOW)  # type: ignore[list-item, arg-type]
    Announcer(heard).passed(broken)  # logged, not raised
    assert heard.notices == []


def test_the_controllers_settings_carry_the_notifications_and_refuse_a_bad_one() -> None:
    env = {
        "MAX_CONCURRENT_UPDATE": "1",
        "NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x",
        "NOTIFY_EVENTS": "all",
    }
    (sink,) = ControllerSettings.from_env(env, now=NOW).notify.sinks
    assert sink.events == frozenset(Event)
    assert ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "1"}, now=NOW).notify.sinks == ()
    with pytest.raises(
        SettingsError, match=r"NOTIFY_TEMPLATE_NODE_FAILED: .* names unknown field \$hostname"
    ):
        ControllerSettings.from_env({**env, "NOTIFY_TEMPLATE_NODE_FAILED": "$hostname failed"}, now=NOW)


async def test_a_node_that_joins_mid_term_and_starts_between_two_passes_that_tell_is_told_whole() -> None:
    """A shadow first seen mid-term by a pass that tells, already in a cycle a pass that told nothing began
    (REPORT_LAG): its start is news in this term, as is its rollout's."""
    fleet, heard, clock = world(shadow("a", current="1.1.0", target="1.1.0")), Heard(), [NOW]
    r = reconciler(fleet, heard, clock)
    await r.reconcile_once()  # the term's first pass tells; nothing to do
    joined = world(shadow("b", current="1.0.0", target="1.1.0"))  # a node joins
    fleet.by_name.update(joined.by_name)
    fleet.node_info.update(joined.node_info)
    r.poke()
    await r.reconcile_once()  # changes keep coming: this pass tells nothing; b starts
    assert heard.told() == []
    clock[0] = NOW + timedelta(seconds=2)
    r._wake.clear()  # as `run` does before each pass: no change arrives any more, every pass tells
    await settle(r, fleet, failing=set())
    assert heard.told() == [
        ("rollout-started", None),
        ("node-started", "b"),
        ("node-done", "b"),
        ("rollout-done", None),
    ]
