from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.policy import (
    BlockedGate,
    Condition,
    ConditionStatus,
    Failure,
    GateKind,
    Halt,
    LabelSelector,
    PolicyState,
    UpdatePolicyStatus,
    WindowState,
)
from brupop.models.shadow import ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.admission import BlackedOut, GateBlocked, PoolPass
from brupop.policy.budget import Budget, BudgetState
from brupop.policy.cron import CronExpression
from brupop.policy.limits import Count
from brupop.policy.policy_status import (
    BLOCKED_NODES,
    SHOWN,
    Member,
    Wanted,
    blocked_gates,
    member_state,
    policy_status,
    set_conditions,
)
from brupop.policy.pools import Overlap, Pool
from brupop.policy.schedule import Schedule
from brupop.policy.stuck import Stuck
from tests.factories import shadow

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
S = ShadowState
ALWAYS = Schedule.create(CronExpression.parse("* * * * * * *"), ZoneInfo("UTC"), now=NOW)
POOL = Pool(name="web", limit=Count(2), schedule=ALWAYS, selector=LabelSelector(), generation=7)
OPEN = PoolPass(
    pool="web", size=4, limit=2, in_cycle=1, started=(), window_open=True, blackout=None, next_opening=NOW
)
MEMBERS = {"a": Member.UP_TO_DATE, "b": Member.UPDATING, "c": Member.FAILED, "d": Member.WAITING}


def status_of(pool: Pool = POOL, **given: Any) -> UpdatePolicyStatus:
    """The status of `pool`, with an empty pass for what the test does not give."""
    arguments: dict[str, Any] = {
        "passed": OPEN,
        "members": {},
        "held": [],
        "budget": BudgetState(),
        "overlaps": (),
        "stuck": (),
        "previous": None,
        "now": NOW,
    }
    return policy_status(pool, **(arguments | given))


def conditions(status: object) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status.value, c.reason, c.message) for c in status.conditions}  # type: ignore[attr-defined]


def test_member_states() -> None:
    assert member_state(None) is Member.UNKNOWN
    assert member_state(shadow("a", state=None)) is Member.UNKNOWN
    assert member_state(shadow("a")) is Member.UP_TO_DATE
    assert member_state(shadow("a", target="1.1.0")) is Member.WAITING
    assert member_state(shadow("a", target="1.1.0", crashes=1)) is Member.FAILED
    assert member_state(shadow("a", spec=S.IDLE, state=S.ERROR_RESET, target="1.1.0")) is Member.FAILED
    updating = shadow("a", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.IDLE, target="1.1.0")
    assert member_state(updating) is Member.UPDATING


def test_an_active_pool() -> None:
    status = status_of(
        POOL,
        members=MEMBERS,
        held=["d", "elsewhere"],
    )
    assert (status.observed_generation, status.state, status.selected) == (7, PolicyState.ACTIVE, 4)
    assert (status.up_to_date, status.updating, status.failed, status.held) == (1, 1, 1, 1)
    assert (status.limit, status.window, status.next_opening, status.halted) == (
        "2",
        WindowState.OPEN,
        None,
        None,
    )
    assert conditions(status) == {
        "Valid": ("True", "Valid", "the policy can be followed"),
        "Paused": ("False", "NotPaused", ""),
        "Halted": ("False", "NoFailureBudget", "no failure budget"),
        "Overlapping": ("False", "NoOverlap", ""),
        "Stuck": ("False", "NoneStuck", ""),
    }
    assert {c.observed_generation for c in status.conditions} == {7}
    assert {c.last_transition_time.instant for c in status.conditions} == {NOW}


def test_a_halted_pool_in_a_blackout_with_overlaps_stuck_nodes_and_a_notice() -> None:
    at = Timestamp.from_datetime(NOW - timedelta(minutes=1))
    halt = Halt(since=at, failed_nodes=["b", "c"], message="2 failed updates ...")
    budget = BudgetState(failures=(Failure(node="b", at=at), Failure(node="c", at=at)), halt=halt)
    pool = Pool(
        name="web",
        limit=Count(2),
        schedule=ALWAYS,
        budget=Budget(max_failures=Count(2), window=timedelta(hours=1)),
        notices=("resumed-at ignored",),
    )
    until = NOW + timedelta(hours=2)
    blacked = PoolPass(
        pool="web",
        size=4,
        limit=2,
        in_cycle=1,
        started=(),
        window_open=False,
        blackout=BlackedOut(until=until, reason="freeze"),
        next_opening=until,
    )
    overlaps = tuple(Overlap(node=f"n{i}", winner="urgent") for i in range(SHOWN + 2))
    stuck = (
        Stuck(
            node="b",
            heading_to=S.REBOOTED_INTO_UPDATE,
            since=NOW - timedelta(hours=3),
            deadline=NOW - timedelta(hours=1),
        ),
    )
    status = status_of(
        pool,
        passed=blacked,
        members=MEMBERS,
        budget=budget,
        overlaps=overlaps,
        stuck=stuck,
    )
    assert (status.state, status.window, status.next_opening) == (
        PolicyState.HALTED,
        WindowState.BLACKOUT,
        Timestamp.from_datetime(until),
    )
    assert status.halted == halt
    assert len(status.failures) == 2
    assert status.overlapped == SHOWN + 2
    found = conditions(status)
    assert found["Halted"] == ("True", "FailureBudgetSpent", "2 failed updates ...; resumed-at ignored")
    assert found["Overlapping"][2].endswith("n4 (urgent) and 2 more")
    assert found["Stuck"] == (
        "True",
        "NodesStuck",
        "1 nodes stuck in their update cycle: " + stuck[0].message(),
    )
    within = status_of(
        pool,
        passed=blacked,
        members=MEMBERS,
        budget=BudgetState(failures=budget.failures[:1]),
    )
    assert conditions(within)["Halted"] == (
        "False",
        "WithinBudget",
        "1 of 2 failures within 1h; resumed-at ignored",
    )


def test_paused_and_invalid_pools() -> None:
    paused = status_of(
        Pool(name="web", limit=Count(1), schedule=ALWAYS, paused=True),
    )
    assert paused.state is PolicyState.PAUSED
    assert conditions(paused)["Paused"][1] == "PausedBySpec"
    closed = PoolPass(
        pool="web",
        size=0,
        limit=1,
        in_cycle=0,
        started=(),
        window_open=False,
        blackout=None,
        next_opening=None,
    )
    invalid_pool = Pool(
        name="web", limit=Count(1), schedule=None, paused=True, problems=("bad zone", "bad cron")
    )
    invalid = status_of(
        invalid_pool,
        passed=closed,
    )
    assert (invalid.state, invalid.window, invalid.next_opening) == (
        PolicyState.INVALID,
        WindowState.CLOSED,
        None,
    )
    assert conditions(invalid)["Valid"] == ("False", "Invalid", "bad zone; bad cron")
    assert conditions(invalid)["Paused"][1] == "InvalidPolicy"


def test_transition_times_change_only_with_the_status() -> None:
    earlier = Timestamp.from_datetime(NOW - timedelta(days=1))
    previous = [
        Condition(
            type="Paused", status=ConditionStatus.FALSE, reason="NotPaused", last_transition_time=earlier
        ),
        Condition(
            type="Halted", status=ConditionStatus.FALSE, reason="WithinBudget", last_transition_time=earlier
        ),
    ]
    wanted = [
        Wanted("Paused", ConditionStatus.FALSE, "Other", "new words"),
        Wanted("Halted", ConditionStatus.TRUE, "FailureBudgetSpent", "spent"),
        Wanted("Stuck", ConditionStatus.FALSE, "NoneStuck", ""),
    ]
    found = set_conditions(previous, wanted, generation=2, now=NOW)
    assert [(c.type, c.last_transition_time, c.reason) for c in found] == [
        ("Paused", earlier, "Other"),
        ("Halted", Timestamp.from_datetime(NOW), "FailureBudgetSpent"),
        ("Stuck", Timestamp.from_datetime(NOW), "NoneStuck"),
    ]
    again = status_of(
        POOL,
        previous=status_of(),
        now=NOW + timedelta(hours=1),
    )
    assert {c.last_transition_time.instant for c in again.conditions} == {NOW}


@given(
    members=st.dictionaries(st.sampled_from([f"n{i}" for i in range(12)]), st.sampled_from(list(Member))),
    held=st.sets(st.sampled_from(["n0", "n1", "x"])),
)
def test_counts_add_up_to_the_pool(members: dict[str, Member], held: set[str]) -> None:
    status = status_of(members=members, held=held)
    unknown = sum(state is Member.UNKNOWN for state in members.values())
    waiting = sum(state is Member.WAITING for state in members.values())
    assert (
        status.up_to_date + status.updating + status.failed + unknown + waiting
        == status.selected
        == len(members)
    )
    assert status.held == len(held & members.keys())


def test_blocked_gates_group_the_members_by_gate_with_the_earliest_since_and_a_bounded_list() -> None:
    early, late = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    pods = GateBlocked(gate=GateKind.PODS, reason="pod ops/backup-0 matches", since=late)
    alert = GateBlocked(gate=GateKind.PROMETHEUS, reason="alert X firing", since=late)
    gated = {"b": alert, "a": replace(alert, since=early), "c": pods, "elsewhere": pods}
    assert blocked_gates(gated, ["a", "b", "c", "d"]) == [
        BlockedGate(
            gate=GateKind.PODS, message=pods.reason, since=Timestamp.from_datetime(late), nodes=["c"]
        ),
        BlockedGate(
            gate=GateKind.PROMETHEUS,
            message=alert.reason,
            since=Timestamp.from_datetime(early),
            nodes=["a", "b"],
        ),
    ]
    many = {f"n{i:03}": alert for i in range(BLOCKED_NODES + 5)}
    [shown] = blocked_gates(many, many)
    assert len(shown.nodes) == BLOCKED_NODES
    assert status_of(blocked=[shown], verifying=2).blocked_by == [shown]
    assert status_of(blocked=[shown], verifying=2).verifying == 2
