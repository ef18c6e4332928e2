from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.admission import BackingOff, NoFreeSlot, WindowClosed
from brupop.policy.rollout import (
    ConcurrencyError,
    NodeInfo,
    Plan,
    RolloutConfig,
    node_name_of,
    parse_max_concurrent,
    plan,
)
from brupop.policy.statemachine import is_active, next_spec
from tests.factories import shadow
from tests.pools import before_policies, env_pools

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
S = ShadowState
LABELS = {"bottlerocket.aws/updater-interface-version": "2.0.0"}


def nodes_for(shadows: list[BottlerocketShadow], **labels: dict[str, str]) -> dict[str, NodeInfo]:
    names = [node_name_of(s) for s in shadows]
    return {n: NodeInfo(name=n, uid=f"uid-{n}", labels=labels.get(n, LABELS)) for n in names}


def run(
    shadows: list[BottlerocketShadow],
    nodes: dict[str, NodeInfo] | None = None,
    *,
    limit: int | None,
    window_open: bool = True,
    now: datetime = NOW,
    controller_node: str | None = None,
    unreadable: tuple[str, ...] = (),
) -> Plan:
    """A pass with the environment's pool alone (no policy), as before policies."""
    nodes = nodes_for(shadows) if nodes is None else nodes
    return plan(
        shadows,
        nodes,
        now=now,
        config=RolloutConfig(controller_node=controller_node),
        pools=env_pools(shadows, nodes, limit=limit, now=now, window_open=window_open),
        unreadable=unreadable,
    )


def fleet(count: int, **kwargs: object) -> list[BottlerocketShadow]:
    return [shadow(f"n{i}", current="1.0.0", target="1.1.0", **kwargs) for i in range(count)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "value"), [("unlimited", None), ("UNLIMITED", None), ("0", 0), (" 2 ", 2)])
def test_parse_max_concurrent(text: str, value: int | None) -> None:
    assert parse_max_concurrent(text) == value


@pytest.mark.parametrize("text", ["-1", "two", "", "1.5", "²"])
def test_parse_max_concurrent_rejects(text: str) -> None:
    with pytest.raises(ConcurrencyError, match="non-negative integer or 'unlimited'"):
        parse_max_concurrent(text)


def test_starts_as_many_as_the_limit_allows_in_one_pass() -> None:
    shadows = fleet(8)
    result = run(shadows, limit=2, window_open=True)
    assert result.started == ("brs-n0", "brs-n1")
    assert result.waiting == {f"brs-n{i}": NoFreeSlot(in_cycle=2, limit=2) for i in range(2, 8)}
    assert result.active == 2
    assert {s.state for s in result.spec_changes.values()} == {S.STAGED_AND_PERFORMED_UPDATE}


def test_in_flight_nodes_hold_their_slots() -> None:
    busy = shadow(
        "busy", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0"
    )
    failing = shadow("failing", spec=S.IDLE, state=S.ERROR_RESET)
    shadows = [busy, failing, *fleet(3)]
    result = run(shadows, limit=3, window_open=True)
    assert result.started == ("brs-n0",)
    assert result.active == 3


def test_closed_window_starts_nothing_but_progresses_in_flight_nodes() -> None:
    reached = shadow(
        "r", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0"
    )
    shadows = [reached, *fleet(2)]
    result = run(shadows, limit=5, window_open=False)
    assert result.started == ()
    assert set(result.waiting) == {"brs-n0", "brs-n1"}
    assert all(isinstance(reason, WindowClosed) for reason in result.waiting.values())
    assert result.spec_changes["brs-r"].state is S.REBOOTED_INTO_UPDATE
    assert set(result.spec_changes) == {"brs-r"}


def test_unlimited_and_zero() -> None:
    shadows = fleet(5)
    everything = run(shadows, limit=None, window_open=True)
    assert len(everything.started) == 5
    nothing = run(shadows, limit=0, window_open=True)
    assert nothing.started == ()
    assert nothing.spec_changes == {}


def test_order_is_crash_count_then_name_with_the_controllers_node_last() -> None:
    shadows = [
        shadow("c", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(days=2)),
        shadow("ctrl", current="1.0.0", target="1.1.0"),
        shadow("b", current="1.0.0", target="1.1.0"),
        shadow("a", current="1.0.0", target="1.1.0", crashes=2, failed_at=NOW - timedelta(days=2)),
    ]
    result = run(shadows, limit=1, controller_node="ctrl")
    assert (result.started, tuple(result.waiting)) == (("brs-b",), ("brs-c", "brs-a", "brs-ctrl"))


def test_backoff_holds_a_node_and_sets_a_wake_up_time() -> None:
    shadows = [
        shadow("x", current="1.0.0", target="1.1.0", crashes=3, failed_at=NOW - timedelta(minutes=1)),
        shadow("y", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1)),
    ]
    result = run(shadows, limit=5, window_open=True)
    assert result.started == ()
    assert result.waiting == {
        "brs-x": BackingOff(until=NOW + timedelta(minutes=8)),
        "brs-y": BackingOff(until=NOW + timedelta(minutes=2)),
    }
    assert result.drained == frozenset({"(environment)"})  # a back-off does not keep a trigger open
    assert result.wake_at == NOW + timedelta(minutes=2)


def test_unlabelled_nodes_lose_their_shadow_and_unknown_nodes_never_start() -> None:
    shadows = fleet(3)
    nodes = nodes_for(shadows, n0={"bottlerocket.aws/updater-interface-version": "1.0.0"})
    del nodes["n1"]
    result = run(shadows, nodes, limit=None)
    assert result.deletions == ("brs-n0",)
    assert result.started == ("brs-n2",)


IN_CYCLE = {"brupop.bottlerocket.aws/in-update-cycle": "true"}


@pytest.mark.parametrize(
    ("spec", "state"),
    [
        (S.REBOOTED_INTO_UPDATE, S.STAGED_AND_PERFORMED_UPDATE),  # cordoned, draining or rebooting
        (S.MONITORING_UPDATE, S.REBOOTED_INTO_UPDATE),
        (S.IDLE, S.MONITORING_UPDATE),
        (S.IDLE, S.ERROR_RESET),
    ],
)
def test_a_node_that_leaves_brupop_mid_cycle_keeps_its_shadow_and_its_slot_until_it_is_done(
    spec: ShadowState, state: ShadowState
) -> None:
    leaving = shadow("leaving", spec=spec, state=state, current="1.0.0", target="1.1.0", spec_version="1.1.0")
    shadows = [leaving, *fleet(1)]
    nodes = nodes_for(shadows, leaving=IN_CYCLE)  # the opt-in label is gone, the in-cycle label stays
    result = run(shadows, nodes, limit=1)
    assert result.deletions == ()
    assert result.started == ()
    assert result.active == 1
    wanted = result.spec_changes.get("brs-leaving", leaving.spec)
    assert wanted.state is next_spec(leaving, now=NOW, may_start=False).state  # the cycle is finished


def test_a_node_that_leaves_before_any_disruption_is_sent_back_to_idle_once_it_has_staged() -> None:
    """Sent back while the agent had not reported the staging, the shadow would read Idle and Idle: a cycle
    over, its in-cycle label removed and the agent's pod deleted mid-prepare (chaos seed 807). So it is
    sent back once the agent has reported StagedAndPerformedUpdate (or failed)."""
    staging = shadow(
        "staging", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.IDLE, target="1.1.0", spec_version="1.1.0"
    )
    staged = replace(staging, status=replace(staging.status, current_state=S.STAGED_AND_PERFORMED_UPDATE))
    failed = replace(staging, status=replace(staging.status, current_state=S.ERROR_RESET))
    for leaving, wanted in ((staging, S.STAGED_AND_PERFORMED_UPDATE), (staged, S.IDLE), (failed, S.IDLE)):
        nodes = nodes_for([leaving], staging=IN_CYCLE)
        result = run([leaving], nodes, limit=1)
        assert result.spec_changes.get("brs-staging", leaving.spec).state is wanted
        assert result.deletions == ()
        assert result.in_cycle.get("staging") is not False
        assert result.active == 1


def test_a_leaving_node_whose_agent_never_reports_the_staging_is_let_go_at_its_stuck_deadline() -> None:
    """An agent that is dead (or cannot reach its host) never reports: the node is waited for until the
    staging's stuck deadline (1 h by default), then sent back to Idle, so it frees its slot."""
    staging = shadow(
        "staging", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.IDLE, target="1.1.0", spec_version="1.1.0"
    )
    for started, wanted in (
        (NOW - timedelta(minutes=59), S.STAGED_AND_PERFORMED_UPDATE),
        (NOW - timedelta(hours=2), S.IDLE),
    ):
        leaving = replace(
            staging, spec=replace(staging.spec, state_transition_timestamp=Timestamp.from_datetime(started))
        )
        result = run([leaving], nodes_for([leaving], staging=IN_CYCLE), limit=1)
        assert result.spec_changes.get("brs-staging", leaving.spec).state is wanted


def test_a_settled_node_that_left_loses_the_in_cycle_label_then_its_shadow() -> None:
    done = shadow("done", current="1.1.0", target="1.1.0")
    labelled = run([done], nodes_for([done], done=IN_CYCLE), limit=1)
    assert (labelled.in_cycle, labelled.deletions) == ({"done": False}, ())
    cordoned = nodes_for([done], done=IN_CYCLE)
    cordoned["done"] = replace(cordoned["done"], brupop_cordon=True)  # the agent has not uncordoned yet
    waiting = run([done], cordoned, limit=1)
    assert (waiting.in_cycle, waiting.deletions) == ({}, ())
    unlabelled = run([done], nodes_for([done], done={}), limit=1)
    assert (unlabelled.in_cycle, unlabelled.deletions) == ({}, ("brs-done",))


def test_nodes_carry_the_in_cycle_label_from_their_start_to_their_end() -> None:
    busy = shadow(
        "busy", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0"
    )
    finished = shadow("finished", current="1.1.0", target="1.1.0")
    shadows = [busy, finished, *fleet(1)]
    nodes = nodes_for(shadows, finished={**LABELS, **IN_CYCLE})
    result = run(shadows, nodes, limit=2)
    assert result.started == ("brs-n0",)
    # A cycle started by a controller that did not label (or a label an admin removed) is labelled too.
    assert result.in_cycle == {"busy": True, "n0": True, "finished": False}


def test_a_shadow_that_cannot_be_read_counts_as_busy() -> None:
    shadows = fleet(2)
    result = run(shadows, limit=2, unreadable=("gone",))
    assert result.started == ("brs-n0",)
    assert result.active == 2


def test_node_name_falls_back_to_the_shadow_name() -> None:
    orphan = BottlerocketShadow(metadata={"name": "brs-lonely"})
    assert node_name_of(orphan) == "lonely"


def test_settled_nodes_with_leftover_specs_are_reset_without_a_slot() -> None:
    done = shadow("done", current="1.1.0", target="1.1.0", spec_version="1.1.0")
    shadows = [done, *fleet(1)]
    result = run(shadows, limit=1, window_open=True)
    assert result.spec_changes["brs-done"].version is None
    assert result.started == ("brs-n0",)


# Property tests ---------------------------------------------------------------------------------------

states = st.sampled_from(list(ShadowState))
versions = st.sampled_from(["1.0.0", "1.1.0"])


@st.composite
def shadows_strategy(draw: st.DrawFn) -> list[BottlerocketShadow]:
    count = draw(st.integers(0, 12))
    result = []
    for i in range(count):
        failed = draw(st.none() | st.integers(-10, 3000).map(lambda m: NOW - timedelta(minutes=m)))
        result.append(
            shadow(
                f"n{i}",
                spec=draw(states),
                state=draw(st.none() | states),
                current=draw(versions),
                target=draw(versions),
                crashes=draw(st.integers(0, 20)),
                failed_at=failed,
            )
        )
    return result


limits = st.none() | st.integers(0, 6)


@given(shadows_strategy(), limits, st.booleans())
def test_a_pass_never_starts_more_than_the_free_slots(
    shadows: list[BottlerocketShadow], limit: int | None, window_open: bool
) -> None:
    before = sum(is_active(s) for s in shadows)
    result = run(shadows, limit=limit, window_open=window_open)
    if limit is not None:
        assert len(result.started) <= max(limit - before, 0)
        assert result.active <= max(limit, before)
    if not window_open:
        assert result.started == ()
    for name, spec in result.spec_changes.items():
        original = next(s for s in shadows if s.name == name)
        if spec.state is S.STAGED_AND_PERFORMED_UPDATE and original.spec.state is S.IDLE:
            assert name in result.started


@given(
    shadows_strategy(),
    limits,
    st.booleans(),
    st.lists(st.sampled_from(["seen", "seen", "unseen", "left"]), min_size=12, max_size=12),
    st.integers(0, 2),
)
def test_with_no_policy_a_pass_starts_exactly_what_it_started_before_policies(
    shadows: list[BottlerocketShadow], limit: int | None, window_open: bool, kinds: list[str], unreadable: int
) -> None:
    nodes = nodes_for(shadows)
    for shadow_, kind in zip(shadows, kinds, strict=False):
        name = node_name_of(shadow_)
        if kind == "unseen":
            del nodes[name]
        elif kind == "left":  # the opt-in label removed
            nodes[name] = replace(nodes[name], labels={})
    gone = tuple(f"gone-{i}" for i in range(unreadable))
    result = run(shadows, nodes, limit=limit, window_open=window_open, unreadable=gone)
    expected = before_policies(
        shadows, nodes, limit=limit, window_open=window_open, now=NOW, unreadable=unreadable
    )
    assert list(result.started) == expected


def apply(
    shadows: list[BottlerocketShadow], result_changes: dict, deletions: tuple[str, ...]
) -> list[BottlerocketShadow]:
    out = []
    for s in shadows:
        if s.name in deletions:
            continue
        out.append(replace(s, spec=result_changes.get(s.name, s.spec)))
    return out


def agent_step(s: BottlerocketShadow, outcome: str, now: datetime) -> BottlerocketShadow:
    """What an agent may do next: reach its spec, fail into ErrorReset, or not have acted yet."""
    status = s.status
    if status is None or status.current_state is s.spec.state or outcome == "wait":
        return s
    if outcome == "fail" and s.spec.state is not S.IDLE:
        new = replace(
            status,
            current_state=S.ERROR_RESET,
            crash_count=status.crash_count + 1,
            state_transition_failure_timestamp=Timestamp.from_datetime(now),
        )
    else:
        update: dict[str, object] = {"current_state": s.spec.state}
        if s.spec.state is S.REBOOTED_INTO_UPDATE and s.spec.version:
            update["current_version"] = s.spec.version
        if status.current_state is S.MONITORING_UPDATE:
            update.update(crash_count=0, state_transition_failure_timestamp=None)
        new = replace(status, **update)
    return replace(s, status=new)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 10),
    st.integers(0, 4),
    st.lists(
        st.tuples(
            st.booleans(),
            st.lists(st.sampled_from(["ok", "ok", "wait", "fail"]), min_size=10, max_size=10),
            st.integers(0, 200),
        ),
        min_size=5,
        max_size=40,
    ),
)
def test_a_simulated_rollout_never_exceeds_the_limit(size: int, limit: int, rounds: list) -> None:
    shadows = fleet(size)
    nodes = nodes_for(shadows)
    now = NOW
    for window_open, outcomes, minutes in rounds:
        result = run(shadows, nodes, limit=limit, window_open=window_open, now=now)
        shadows = apply(shadows, dict(result.spec_changes), result.deletions)
        assert sum(is_active(s) for s in shadows) <= limit
        shadows = [agent_step(s, outcomes[i % len(outcomes)], now) for i, s in enumerate(shadows)]
        assert sum(is_active(s) for s in shadows) <= limit
        now += timedelta(minutes=minutes)


def test_a_fleet_that_always_succeeds_ends_on_the_target() -> None:
    shadows = fleet(8)
    nodes = nodes_for(shadows)
    now = NOW
    for _ in range(40):
        result = run(shadows, nodes, limit=2, now=now)
        shadows = apply(shadows, dict(result.spec_changes), result.deletions)
        shadows = [agent_step(s, "ok", now) for s in shadows]
        now += timedelta(seconds=30)
    assert all(s.status and s.status.current_version == "1.1.0" and not is_active(s) for s in shadows)
    assert all(s.spec.version is None for s in shadows)
