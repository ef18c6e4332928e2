"""The rollout pass with update policies: each pool's limit, pause, failure budget (halting and resuming),
holds, stuck deadline and duringUpdate marks; the retry waiver; what it writes on each shadow; when a
trigger's pool is drained; when it must look again. Property: a simulated rollout across random pools
never has more nodes of a pool in a cycle than the pool's limit."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.models import constants as c
from brupop.models.policy import Failure, GateKind
from brupop.models.progress import CycleStart, History, Outcome, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy import pools as pools_module
from brupop.policy.admission import (
    BackingOff,
    BlackedOut,
    GateBlocked,
    Halted,
    Held,
    InvalidPolicy,
    NoFreeSlot,
    Paused,
)
from brupop.policy.budget import BudgetState
from brupop.policy.pools import ENV_POOL, Defaults, pools_for
from brupop.policy.rollout import NodeInfo, Plan, Pools, RolloutConfig, node_name_of, plan, tracked
from brupop.policy.statemachine import is_active
from tests.factories import shadow
from tests.pools import window

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
S = ShadowState
OPT_IN = {c.UPDATER_INTERFACE_LABEL: c.UPDATER_INTERFACE_VERSION}
POOL = "example.com/pool"
DEFAULTS = Defaults(max_concurrent=1, schedule=window("* * * * * * *", now=NOW))


def policy(name: str, pool: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {"nodeSelector": {"matchLabels": {POOL: pool}}, **spec},
    }


def node(name: str, pool: str | None = None, **fields: Any) -> NodeInfo:
    labels = {**OPT_IN, **({POOL: pool} if pool else {}), **fields.pop("labels", {})}
    return NodeInfo(name=name, uid=f"uid-{name}", labels=labels, **fields)


def offering(name: str, **fields: Any) -> BottlerocketShadow:
    return shadow(name, current="1.0.0", target="1.1.0", **fields)


def run(
    shadows: list[BottlerocketShadow],
    nodes: list[NodeInfo],
    policies: list[dict[str, Any]],
    *,
    now: datetime = NOW,
    budgets: dict[str, BudgetState] | None = None,
    gated: dict[str, GateBlocked] | None = None,
    drained_at: dict[str, datetime] | None = None,
) -> Plan:
    by_name = {n.name: n for n in nodes}
    assignment = pools_for(policies, tracked(shadows, by_name), DEFAULTS, now=now)
    pools = Pools(
        assignment=assignment, budgets=budgets or {}, gated=gated or {}, drained_at=drained_at or {}
    )
    return plan(shadows, by_name, now=now, config=RolloutConfig(), pools=pools)


def test_each_pool_starts_up_to_its_own_limit_a_count_and_a_percentage() -> None:
    names = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(7)]
    nodes = [node(n, n[0]) for n in names]
    policies = [policy("count", "a", maxConcurrent=2), policy("percent", "b", maxConcurrent="30%")]
    result = run([offering(n) for n in names], nodes, policies)
    assert result.started == ("brs-a0", "brs-a1", "brs-b0", "brs-b1", "brs-b2")  # 30% of 7 rounds up to 3
    assert result.waiting["brs-a2"] == NoFreeSlot(in_cycle=2, limit=2)
    assert result.waiting["brs-b3"] == NoFreeSlot(in_cycle=3, limit=3)


def test_a_paused_pool_starts_nothing_while_its_nodes_in_a_cycle_go_on() -> None:
    busy = shadow("p0", spec=S.REBOOTED_INTO_UPDATE, state=S.REBOOTED_INTO_UPDATE, spec_version="1.1.0")
    shadows = [busy, offering("p1"), offering("free")]
    nodes = [node("p0", "p"), node("p1", "p"), node("free")]
    result = run(shadows, nodes, [policy("stop", "p", paused=True, maxConcurrent="unlimited")])
    assert result.started == ("brs-free",)  # the environment's pool is not paused
    assert result.waiting == {"brs-p1": Paused(pool="stop")}
    assert result.spec_changes["brs-p0"].state is S.MONITORING_UPDATE


def test_the_second_failure_halts_the_pool_and_resuming_clears_it() -> None:
    budget = {"maxFailures": 2, "window": "1h"}
    failed = [offering(f"f{i}", crashes=1, failed_at=NOW - timedelta(minutes=10 - i)) for i in range(2)]
    shadows = [*failed, offering("ok")]
    nodes = [node(n, "b") for n in ("f0", "f1", "ok")]
    one = run([failed[0], shadows[2]], nodes, [policy("budget", "b", failureBudget=budget)])
    assert one.budgets["budget"].halt is None
    assert one.started == ("brs-ok",)
    halted = run(shadows, nodes, [policy("budget", "b", failureBudget=budget)], budgets=one.budgets)
    halt = halted.budgets["budget"].halt
    assert halt is not None
    assert (halt.failed_nodes, halt.since.instant) == (["f0", "f1"], NOW)
    assert halted.started == ()
    assert halted.waiting["brs-ok"] == Halted(pool="budget", since=NOW, failed_nodes=("f0", "f1"))
    # A later pass keeps the halt (from the budget's state) even with no new failure.
    later = run([shadows[2]], nodes, [policy("budget", "b", failureBudget=budget)], budgets=halted.budgets)
    assert later.budgets["budget"].halt == halt
    assert later.started == ()
    resumed = policy("budget", "b", failureBudget=budget)
    resumed["metadata"]["annotations"] = {c.RESUMED_AT_ANNOTATION: Timestamp.from_datetime(NOW).text}
    cleared = run(shadows, nodes, [resumed], budgets=halted.budgets, now=NOW + timedelta(minutes=1))
    assert cleared.budgets["budget"] == BudgetState()
    assert cleared.started == ("brs-ok",)


def test_a_failures_leaving_the_window_wakes_the_pass() -> None:
    failed = offering("f0", crashes=1, failed_at=NOW - timedelta(minutes=50))
    result = run(
        [failed], [node("f0", "b")], [policy("budget", "b", failureBudget={"maxFailures": 3, "window": "1h"})]
    )
    assert [f.node for f in result.budgets["budget"].failures] == ["f0"]
    assert result.wake_at == NOW + timedelta(minutes=10)


def test_a_pools_stuck_after_replaces_the_per_state_deadlines_and_counts_as_a_failure() -> None:
    late = shadow(
        "s0", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0"
    )
    since = Timestamp.from_datetime(NOW - timedelta(minutes=11))
    late = replace(late, spec=replace(late.spec, state_transition_timestamp=since))
    spec = {"stuckAfter": "10m", "failureBudget": {"maxFailures": 1, "window": "1h"}}
    result = run([late, offering("s1")], [node("s0", "s"), node("s1", "s")], [policy("tight", "s", **spec)])
    found = result.stuck["brs-s0"]
    assert found.deadline == NOW - timedelta(minutes=1)
    assert result.budgets["tight"].failures == (found.failure(),)
    assert result.budgets["tight"].halt is not None  # one failure spends this budget
    loose = run([late], [node("s0")], [])  # the environment's deadline for a reboot: 2 h
    assert loose.stuck == {}


def test_a_held_node_waits_and_a_waived_back_off_starts_at_once() -> None:
    failed_at = NOW - timedelta(minutes=1)
    retrying = offering("r", crashes=3, failed_at=failed_at)
    stamp = retrying.status.state_transition_failure_timestamp  # type: ignore[union-attr]
    waived = replace(
        retrying, metadata={**retrying.metadata, "annotations": {c.RETRY_ANNOTATION: stamp.text}}
    )  # type: ignore[union-attr]
    nodes = [node("h", annotations={c.HOLD_ANNOTATION: "debugging"}), node("r")]
    pools = [policy("all", "x", maxConcurrent="unlimited")]
    assert run([offering("h"), retrying], nodes, pools).waiting == {
        "brs-h": Held(reason="debugging"),
        "brs-r": BackingOff(until=failed_at + timedelta(minutes=9)),
    }
    result = run([offering("h"), waived], nodes, [])
    assert result.started == ("brs-r",)
    assert result.spec_changes["brs-r"].state is S.STAGED_AND_PERFORMED_UPDATE
    # A later failure has another time: it backs off again.
    again = replace(
        waived, status=replace(waived.status, state_transition_failure_timestamp=Timestamp.from_datetime(NOW))
    )  # type: ignore[type-var]
    assert "brs-r" in run([again], nodes, []).waiting


def test_marks_come_with_the_in_cycle_label_and_go_with_it() -> None:
    marks = {
        "labels": {"example.com/updating": "true"},
        "annotations": {"karpenter.sh/do-not-disrupt": "true"},
    }
    policies = [policy("karpenter", "k", duringUpdate=marks)]
    started = run([offering("k0")], [node("k0", "k")], policies)
    change = started.marks["k0"]
    assert started.in_cycle == {"k0": True}
    assert change.labels == {"example.com/updating": "true"}
    assert change.annotations["karpenter.sh/do-not-disrupt"] == "true"
    record = change.annotations[c.DURING_UPDATE_ANNOTATION]
    assert record is not None
    # Settled and uncordoned: the label goes, and brupop's marks with it (the record says which).
    carrying = node(
        "k0",
        "k",
        labels={c.IN_CYCLE_LABEL: "true", "example.com/updating": "true"},
        annotations={"karpenter.sh/do-not-disrupt": "true", c.DURING_UPDATE_ANNOTATION: record},
    )
    done = run([shadow("k0", current="1.1.0", target="1.1.0")], [carrying], policies)
    assert done.in_cycle == {"k0": False}
    assert done.marks["k0"].labels == {"example.com/updating": None}
    assert done.marks["k0"].annotations == {
        "karpenter.sh/do-not-disrupt": None,
        c.DURING_UPDATE_ANNOTATION: None,
    }
    assert run([offering("n")], [node("n")], policies).marks == {}  # the environment's pool marks nothing


def test_a_start_records_its_cycle_and_the_end_goes_into_the_history() -> None:
    started = run([offering("h0")], [node("h0")], [])
    (text,) = started.annotations["brs-h0"].values()
    record = CycleStart.from_json(text or "")
    assert (record.from_version, record.to_version, record.start.instant) == ("1.0.0", "1.1.0", NOW)
    back = shadow("h0", current="1.1.0", target="1.1.0", spec_version="1.1.0")
    back = replace(back, metadata={**back.metadata, "annotations": {c.CYCLE_ANNOTATION: text}})
    ended = run([back], [node("h0")], [], now=NOW + timedelta(minutes=5))
    patch = ended.annotations["brs-h0"]
    assert patch[c.CYCLE_ANNOTATION] is None
    (cycle,) = History.from_json(patch[c.HISTORY_ANNOTATION] or "").cycles
    assert (cycle.outcome, cycle.end.instant) == (Outcome.SUCCEEDED, NOW + timedelta(minutes=5))
    assert ended.spec_changes["brs-h0"].version is None  # written in the same patch as the spec


def test_a_gate_verdict_is_written_on_the_waiting_shadow() -> None:
    blocked = GateBlocked(
        gate=GateKind.PODS, reason="pod backup/run-1 blocks", since=NOW - timedelta(minutes=3)
    )
    result = run([offering("g0")], [node("g0")], [], gated={"g0": blocked})
    assert result.waiting == {"brs-g0": blocked}
    waiting = Waiting.from_json(result.annotations["brs-g0"][c.WAITING_ANNOTATION] or "")
    assert (waiting.reason, waiting.since.instant) == ("GateBlocked", NOW - timedelta(minutes=3))


TRIGGER = {"schedule": {"cron": "0 0 11 * * * *", "timeZone": "UTC"}}


def test_a_trigger_pool_is_drained_only_when_nobody_waits_for_a_slot() -> None:
    fired = {"t": NOW - timedelta(hours=2)}  # 11:00 fired after this: open
    shadows = [offering("t0"), offering("t1")]
    nodes = [node("t0", "t"), node("t1", "t")]
    rolling = run(shadows, nodes, [policy("t", "t", maxConcurrent=1, **TRIGGER)], drained_at=fired)
    assert rolling.started == ("brs-t0",)
    assert "t" not in rolling.drained
    busy = shadow("t0", spec=S.STAGED_AND_PERFORMED_UPDATE, current="1.0.0", target="1.1.0")
    full = run(
        [busy, offering("t1")], nodes, [policy("t", "t", maxConcurrent=1, **TRIGGER)], drained_at=fired
    )
    assert full.waiting["brs-t1"] == NoFreeSlot(in_cycle=1, limit=1)
    assert "t" not in full.drained  # t1 still wants the slot
    done = [shadow("t0", current="1.1.0", target="1.1.0"), shadow("t1", current="1.1.0", target="1.1.0")]
    assert "t" in run(done, nodes, [policy("t", "t", **TRIGGER)], drained_at=fired).drained
    closed = run(shadows, nodes, [policy("t", "t", **TRIGGER)], drained_at={"t": NOW - timedelta(minutes=30)})
    assert closed.started == ()
    assert "t" not in closed.drained  # closed: nothing to drain
    assert closed.wake_at == NOW.replace(day=2, hour=11)


def test_failures_of_nodes_outside_a_pool_count_nowhere() -> None:
    failed = offering("gone", crashes=1, failed_at=NOW - timedelta(minutes=1))
    result = run([failed], [], [policy("b", "b", failureBudget={"maxFailures": 1, "window": "1h"})])
    assert result.budgets["b"] == BudgetState()
    assert result.budgets[ENV_POOL] == BudgetState()


# Property: random pools (counts and percentages), random agents ---------------------------------------

LIMITS = st.sampled_from([0, 1, 2, 3, "10%", "50%", "100%", "unlimited"])


# A change to the fleet between two passes: a node relabelled into pool `to` (None: no pool), a policy's
# limit edited, or a policy deleted.
Change = tuple[str, int, int | None]
CHANGES = st.one_of(
    st.tuples(st.just("relabel"), st.integers(0, 17), st.one_of(st.none(), st.integers(0, 2))),
    st.tuples(st.just("limit"), st.integers(0, 2), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    limits=st.lists(LIMITS, min_size=3, max_size=3),
    outcomes=st.lists(st.sampled_from(["ok", "ok", "wait", "fail"]), min_size=8, max_size=8),
    rounds=st.integers(3, 25),
    changes=st.lists(st.tuples(st.integers(0, 8), CHANGES), min_size=1, max_size=8),
)
def test_no_pool_ever_has_more_nodes_in_a_cycle_than_its_limit(
    sizes: list[int],
    limits: list[int | str],
    outcomes: list[str],
    rounds: int,
    changes: list[tuple[int, Change]],
) -> None:
    """Nodes relabelled, limits edited and policies deleted between passes: a pool's nodes in a cycle
    (counted where they started, or where they are once their pool is gone) never exceed its limit, except
    those already in a cycle when its limit went down under them (then nothing new starts there)."""
    pools = [f"p{i}" for i in range(len(sizes))]
    names = [f"{pool}-{j}" for pool, size in zip(pools, sizes, strict=True) for j in range(size)]
    nodes = {n: node(n, n.split("-")[0]) for n in names}
    policies = {
        pool: policy(pool, pool, maxConcurrent=limit) for pool, limit in zip(pools, limits, strict=False)
    }
    shadows = [offering(n) for n in names]
    started_in: dict[str, str] = {}
    now = NOW
    budgets: dict[str, BudgetState] = {}
    for turn in range(rounds):
        for when, (kind, which, to) in changes:
            if when != turn:
                continue
            if kind == "relabel" and names:
                moved = nodes[names[which % len(names)]]
                labels = {k: v for k, v in moved.labels.items() if k != POOL}
                nodes[moved.name] = replace(
                    moved, labels={**labels, **({POOL: f"p{to}"} if to is not None else {})}
                )
            elif kind == "limit" and f"p{which}" in policies:
                policies[f"p{which}"]["spec"]["maxConcurrent"] = to
                policies[f"p{which}"]["metadata"]["generation"] += 1
            elif kind == "delete":
                policies.pop(f"p{which}", None)
        result = run(shadows, list(nodes.values()), list(policies.values()), now=now, budgets=budgets)
        budgets = dict(result.budgets)
        existing = result.admission.pools
        before = _counted(shadows, started_in, nodes, existing)
        for name in result.started:
            label = nodes[name.removeprefix("brs-")].labels.get(POOL)
            started_in[name] = label if label in policies else ENV_POOL
        shadows = [
            replace(
                s,
                spec=result.spec_changes.get(s.name, s.spec),
                metadata={**s.metadata, "annotations": _patched(s, result)},
            )
            for s in shadows
        ]
        after = _counted(shadows, started_in, nodes, existing)
        for pool, passed in existing.items():
            if passed.limit is not None:
                allowed = passed.limit if passed.started else max(passed.limit, before.get(pool, 0))
                assert after.get(pool, 0) <= allowed, (pool, after, passed)
        shadows = [_step(s, outcomes[(i + turn) % len(outcomes)], now) for i, s in enumerate(shadows)]
        now += timedelta(minutes=7)


def _counted(
    shadows: list[BottlerocketShadow],
    started_in: dict[str, str],
    nodes: dict[str, NodeInfo],
    pools: Any,
) -> dict[str, int]:
    """Nodes in a cycle per pool: where they started, or where they are now when that pool is gone."""
    counted: dict[str, int] = {}
    for s in shadows:
        if is_active(s):
            pool = started_in[s.name]
            if pool not in pools:
                label = nodes[node_name_of(s)].labels.get(POOL)
                pool = label if label in pools else ENV_POOL
            counted[pool] = counted.get(pool, 0) + 1
    return counted


def _step(s: BottlerocketShadow, outcome: str, now: datetime) -> BottlerocketShadow:
    status = s.status
    if status is None or status.current_state is s.spec.state or outcome == "wait":
        return s
    if outcome == "fail" and s.spec.state is not S.IDLE:
        failed = Timestamp.from_datetime(now)
        return replace(
            s,
            status=replace(
                status,
                current_state=S.ERROR_RESET,
                crash_count=status.crash_count + 1,
                state_transition_failure_timestamp=failed,
            ),
        )
    version = (
        s.spec.version
        if s.spec.state is S.REBOOTED_INTO_UPDATE and s.spec.version
        else status.current_version
    )
    return replace(s, status=replace(status, current_state=s.spec.state, current_version=version))


def test_the_failures_a_budget_keeps_are_the_newest() -> None:
    old = Failure(node="x", at=Timestamp.from_datetime(NOW - timedelta(minutes=30)), reason="")
    result = run(
        [offering("f", crashes=1, failed_at=NOW - timedelta(minutes=1))],
        [node("f", "b")],
        [policy("b", "b", failureBudget={"maxFailures": 3, "window": "1h"})],
        budgets={"b": BudgetState(failures=(old,))},
    )
    assert [f.node for f in result.budgets["b"].failures] == ["x", "f"]


def test_a_shadow_that_goes_gets_no_annotation_write() -> None:
    record = '{"from":"1.0.0","to":"1.1.0","start":"2025-06-01T11:00:00Z"}'
    done = shadow("gone", current="1.1.0", target="1.1.0")
    done = replace(done, metadata={**done.metadata, "annotations": {c.CYCLE_ANNOTATION: record}})
    left = NodeInfo(name="gone", uid="u", labels={})  # opted out, out of its cycle
    result = run([done], [left], [])
    assert result.deletions == ("brs-gone",)
    assert result.annotations == {}


def test_a_shadow_failure_near_the_end_of_time_affects_only_its_node() -> None:
    """A host clock gone wrong: the shadow CRD accepts any instant up to 9999-12-31T23:59:59Z."""
    broken = offering("b0", crashes=1, failed_at=datetime(9999, 12, 31, 23, tzinfo=UTC))
    budget = {"failureBudget": {"maxFailures": 1, "window": "2h"}}
    result = run([broken, offering("b1")], [node("b0", "b"), node("b1", "b")], [policy("p", "b", **budget)])
    assert result.started == ("brs-b1",)
    assert result.budgets["p"].failures == ()
    assert [f.node for f in result.budgets["p"].future] == ["b0"]


@pytest.mark.parametrize(
    ("blackout", "zone"),
    [
        ({"start": "2026-01-01", "end": "9999-12-31"}, "UTC"),  # "until further notice"
        ({"start": "2026-01-01", "end": "9999-12-31T23:00"}, "America/New_York"),
        ({"start": "0001-01-01", "end": "2026-01-01"}, "Asia/Tokyo"),
    ],
)
def test_a_blackout_out_of_the_years_a_policy_may_name_makes_only_its_policy_invalid(
    blackout: dict[str, str], zone: str
) -> None:
    """Stored before the API server bounded the years (0002-9998): these overflowed the whole pass."""
    frozen = policy("frozen", "f", schedule={"timeZone": zone, "blackouts": [blackout]})
    nodes = {n.name: n for n in (node("f0", "f"), node("free"))}
    assignment = pools_for([frozen], tracked([], nodes), DEFAULTS, now=NOW)
    assert assignment.pools[ENV_POOL].usable
    assert assignment.pool_of["f0"] == "frozen"
    assert "in the years 0002 to 9998" in assignment.pools["frozen"].problems[0]


@pytest.mark.parametrize(
    ("blackout", "zone"),
    [
        ({"start": "2025-01-01", "end": "9998-12-31"}, "Pacific/Pago_Pago"),  # UTC-11
        ({"start": "2025-01-01", "end": "9998-12-31T23:59:59"}, "Pacific/Pago_Pago"),
        ({"start": "0002-01-01", "end": "9998-12-31"}, "Pacific/Kiritimati"),  # UTC+14
    ],
)
def test_the_furthest_blackouts_a_policy_may_name_hold_its_pool_in_any_zone(
    blackout: dict[str, str], zone: str
) -> None:
    frozen = policy("frozen", "f", schedule={"timeZone": zone, "blackouts": [blackout]})
    result = run([offering("f0"), offering("free")], [node("f0", "f"), node("free")], [frozen])
    assert result.started == ("brs-free",)
    assert isinstance(result.waiting["brs-f0"], BlackedOut)


def test_a_policy_that_fails_to_resolve_in_any_way_is_invalid_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: a defect reading or resolving one policy (here: its blackouts) stops only its pool."""

    def broken(*_: object) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(pools_module, "periods", broken)
    frozen = policy("frozen", "f", schedule={"blackouts": [{"start": "2025-01-01", "end": "2026-02-01"}]})
    result = run([offering("f0"), offering("free")], [node("f0", "f"), node("free")], [frozen])
    assert result.started == ("brs-free",)
    assert result.waiting["brs-f0"] == InvalidPolicy(
        pool="frozen",
        problems=("the policy cannot be read: OverflowError: date value out of range",),
    )


CYCLE_START = NOW - timedelta(minutes=30)
STUCK_BUDGET = {"stuckAfter": "10m", "failureBudget": {"maxFailures": 2, "window": "1h"}}


def _in_cycle(
    spec: S, current: S, step_minutes: int, *, at: datetime = NOW, **fields: Any
) -> BottlerocketShadow:
    """s0 in the cycle the controller began at CYCLE_START (its record on the shadow), `step_minutes` into
    its step towards `spec`."""
    found = shadow("s0", spec=spec, state=current, spec_version="1.1.0", **fields)
    since = Timestamp.from_datetime(at - timedelta(minutes=step_minutes))
    record = CycleStart(from_version="1.0.0", to_version="1.1.0", start=Timestamp.from_datetime(CYCLE_START))
    return replace(
        found,
        spec=replace(found.spec, state_transition_timestamp=since),
        metadata={**found.metadata, "annotations": {c.CYCLE_ANNOTATION: json.dumps(record.to_wire())}},
    )


def test_one_failed_node_update_counts_once_though_it_was_stuck_first() -> None:
    """Stuck while staging, then failed (ErrorReset), then back on Idle (its cycle in the history): one
    failure, the first reason kept."""
    nodes = [node("s0", "s"), node("s1", "s")]
    policies = [policy("p", "s", **STUCK_BUDGET)]
    stuck = run([_in_cycle(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, 11), offering("s1")], nodes, policies)
    failed = _in_cycle(S.IDLE, S.ERROR_RESET, 0, crashes=1, failed_at=NOW)
    reset = run(
        [failed, offering("s1")], nodes, policies, budgets=stuck.budgets, now=NOW + timedelta(seconds=1)
    )
    assert reset.budgets["p"].halt is None
    assert [f.reason for f in reset.budgets["p"].failures] == [
        "stuck: not StagedAndPerformedUpdate within 10m"
    ]
    idle = shadow("s0", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW)
    ended = replace(idle, metadata={**idle.metadata, "annotations": _patched(failed, reset)})
    later = run(
        [ended, offering("s1")], nodes, policies, budgets=reset.budgets, now=NOW + timedelta(minutes=1)
    )
    assert later.budgets["p"].halt is None
    assert len(later.budgets["p"].failures) == 1


def _patched(found: BottlerocketShadow, result: Plan) -> dict[str, str]:
    """The shadow's annotations once the pass's annotation patch is applied."""
    merged: dict[str, str | None] = {**found.annotations, **result.annotations.get(found.name, {})}
    return {k: v for k, v in merged.items() if v is not None}


def test_a_node_stuck_in_two_steps_of_one_cycle_counts_once() -> None:
    nodes = [node("s0", "s"), node("s1", "s")]
    policies = [policy("p", "s", **STUCK_BUDGET)]
    first = run([_in_cycle(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, 11), offering("s1")], nodes, policies)
    moved_on = _in_cycle(
        S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE, 11, at=NOW + timedelta(minutes=20)
    )
    second = run(
        [moved_on, offering("s1")], nodes, policies, budgets=first.budgets, now=NOW + timedelta(minutes=20)
    )
    assert second.budgets["p"].halt is None
    assert len(second.budgets["p"].failures) == 1


def test_raising_stuck_after_on_a_stuck_node_does_not_count_it_again() -> None:
    budget = {"failureBudget": {"maxFailures": 2, "window": "1h"}}
    nodes = [node("s0", "s"), node("s1", "s")]
    first = run(
        [_in_cycle(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, 11), offering("s1")],
        nodes,
        [policy("p", "s", stuckAfter="10m", **budget)],
    )
    edited = policy("p", "s", stuckAfter="15m", **budget)
    edited["metadata"]["generation"] = 2
    later = NOW + timedelta(minutes=5)
    still = _in_cycle(S.STAGED_AND_PERFORMED_UPDATE, S.IDLE, 16, at=later)
    second = run([still, offering("s1")], nodes, [edited], budgets=first.budgets, now=later)
    assert second.budgets["p"].halt is None
    assert len(second.budgets["p"].failures) == 1


def test_failures_of_one_node_in_two_cycles_count_twice() -> None:
    """The other side: a node that fails, is retried and fails again has failed two updates."""
    policies = [policy("p", "s", **STUCK_BUDGET)]
    nodes = [node("s0", "s"), node("s1", "s")]
    first = run([_in_cycle(S.IDLE, S.ERROR_RESET, 0, crashes=1, failed_at=NOW)], nodes, policies)
    again = NOW + timedelta(minutes=20)
    second_cycle = CycleStart(
        from_version="1.0.0", to_version="1.1.0", start=Timestamp.from_datetime(again - timedelta(minutes=5))
    )
    retried = shadow("s0", spec=S.IDLE, state=S.ERROR_RESET, spec_version="1.1.0", crashes=2, failed_at=again)
    retried = replace(
        retried,
        metadata={
            **retried.metadata,
            "annotations": {c.CYCLE_ANNOTATION: json.dumps(second_cycle.to_wire())},
        },
    )
    second = run([retried], nodes, policies, budgets=first.budgets, now=again)
    assert second.budgets["p"].halt is not None


def _updating(name: str, pool: str | None) -> BottlerocketShadow:
    """`name` rebooting into its update, in the cycle the controller began in `pool` (None: a record from
    before records named the pool)."""
    found = shadow(name, spec=S.REBOOTED_INTO_UPDATE, state=S.REBOOTED_INTO_UPDATE, spec_version="1.1.0")
    record = CycleStart(
        from_version="1.0.0", to_version="1.1.0", start=Timestamp.from_datetime(NOW), pool=pool
    )
    annotations = {c.CYCLE_ANNOTATION: json.dumps(record.to_wire())}
    return replace(found, metadata={**found.metadata, "annotations": annotations})


def test_a_node_relabelled_mid_cycle_keeps_its_slot_in_the_pool_it_started_in() -> None:
    """a0 started in `a` (limit 1) and was relabelled into `b` (limit 1), where b0 updates: `b` must not
    count two, nor `a` free a slot a0 still takes."""
    policies = [policy("a", "a", maxConcurrent=1), policy("b", "b", maxConcurrent=1)]
    nodes = [node("a0", "b"), node("a1", "a"), node("b0", "b"), node("b1", "b")]
    result = run(
        [_updating("a0", "a"), offering("a1"), _updating("b0", "b"), offering("b1")], nodes, policies
    )
    assert result.started == ()
    assert result.waiting["brs-a1"] == NoFreeSlot(in_cycle=1, limit=1)
    assert result.waiting["brs-b1"] == NoFreeSlot(in_cycle=1, limit=1)


def test_a_start_records_its_pool_and_a_cycle_without_one_counts_where_its_node_is() -> None:
    started = run([offering("a0")], [node("a0", "a")], [policy("a", "a")])
    record = CycleStart.from_json(started.annotations["brs-a0"][c.CYCLE_ANNOTATION] or "")
    assert record.pool == "a"
    old_record = run(
        [_updating("a0", None), offering("b0")], [node("a0", "b"), node("b0", "b")], [policy("b", "b")]
    )
    assert old_record.waiting["brs-b0"] == NoFreeSlot(in_cycle=1, limit=1)


def test_a_node_whose_policy_is_deleted_mid_cycle_counts_where_it_is_now_and_nothing_new_starts_there() -> (
    None
):
    """Its pool is gone: it counts in the environment's pool (MAX_CONCURRENT_UPDATE=1), where n2 updates
    too, as when a limit is lowered under nodes in a cycle: over it, nothing new starts until they finish."""
    nodes = [node("n1", "a"), node("n2"), node("n3")]
    result = run([_updating("n1", "a"), _updating("n2", ENV_POOL), offering("n3")], nodes, [])
    assert result.started == ()
    assert result.waiting["brs-n3"] == NoFreeSlot(in_cycle=2, limit=1)


def test_the_readmes_stop_everything_policy_stops_every_node() -> None:
    """README 'Stop everything now', by hand: nodeSelector {}, priority 1000, paused; a team policy of the
    same priority whose name sorts first must not win its nodes back (a paused policy wins a tie)."""
    stop = {
        "metadata": {"name": "stop-everything", "generation": 1},
        "spec": {"nodeSelector": {}, "priority": 1000, "paused": True},
    }
    team = policy("a-team", "a", priority=1000, maxConcurrent=1)
    result = run([offering("a0"), offering("n0")], [node("a0", "a"), node("n0")], [stop, team])
    assert result.started == ()
    assert result.waiting["brs-a0"] == Paused(pool="stop-everything")


KARPENTER_MARKS = {
    "labels": {"example.com/updating": "true"},
    "annotations": {"karpenter.sh/do-not-disrupt": "true"},
}


def _carrying(pool: str | None, *, opted_in: bool = True, cordoned: bool = False) -> NodeInfo:
    """k0 in its cycle, carrying the marks (and the record) brupop put on it at its start in `karpenter`."""
    started = run(
        [offering("k0")], [node("k0", "k")], [policy("karpenter", "k", duringUpdate=KARPENTER_MARKS)]
    )
    record = started.marks["k0"].annotations[c.DURING_UPDATE_ANNOTATION]
    assert record is not None
    found = node(
        "k0",
        pool,
        labels={c.IN_CYCLE_LABEL: "true", "example.com/updating": "true"},
        annotations={"karpenter.sh/do-not-disrupt": "true", c.DURING_UPDATE_ANNOTATION: record},
        brupop_cordon=cordoned,
    )
    if opted_in:
        return found
    return replace(found, labels={k: v for k, v in found.labels.items() if k != c.UPDATER_INTERFACE_LABEL})


@pytest.mark.parametrize(
    ("why", "pool", "opted_in", "policies"),
    [
        ("error reset ended", "k", True, [policy("karpenter", "k", duringUpdate=KARPENTER_MARKS)]),
        ("opt-in label removed", "k", False, [policy("karpenter", "k", duringUpdate=KARPENTER_MARKS)]),
        ("policy deleted", "k", True, []),
        ("policy edited to ask for nothing", "k", True, [policy("karpenter", "k")]),
        (
            "node moved to another pool",
            "other",
            True,
            [policy("karpenter", "k", duringUpdate=KARPENTER_MARKS)],
        ),
    ],
)
def test_marks_stay_through_the_cycle_and_go_at_its_end_by_every_path(
    why: str, pool: str, opted_in: bool, policies: list[dict[str, Any]]
) -> None:
    carrying = _carrying(pool, opted_in=opted_in)
    resetting = shadow("k0", spec=S.IDLE, state=S.ERROR_RESET, spec_version="1.1.0", crashes=1, failed_at=NOW)
    mid = run([resetting], [carrying], policies)
    assert "k0" not in mid.marks or None not in mid.marks["k0"].labels.values(), why
    idle = shadow("k0", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW)
    end = run([idle], [carrying], policies, now=NOW + timedelta(minutes=1))
    assert end.in_cycle == {"k0": False}, why
    assert end.marks["k0"].labels == {"example.com/updating": None}, why
    assert end.marks["k0"].annotations["karpenter.sh/do-not-disrupt"] is None, why


def test_marks_stay_while_brupops_cordon_is_on() -> None:
    carrying = _carrying("k", cordoned=True)
    idle = shadow("k0", current="1.1.0", target="1.1.0")
    end = run([idle], [carrying], [policy("karpenter", "k", duringUpdate=KARPENTER_MARKS)])
    assert end.in_cycle == {}
    assert end.marks == {}
