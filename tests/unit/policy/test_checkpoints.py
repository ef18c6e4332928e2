"""The two checkpoints of a node's cycle: before its cordon (gates re-checked, the workload snapshot taken
and stored with the cordon's write) and after its update (verification and soak from the stored record, the
soak's start kept, a failure with a stable identity for the failure budget); and properties: nothing is
cordoned while a gate blocks or without the snapshot verification needs, a soak never ends early, and a
failure counts once however often it is seen."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.constants import VERIFICATION_ANNOTATION
from brupop.models.health import (
    Answer,
    NodeHealth,
    Readiness,
    Unreachable,
    Vector,
    WorkloadRef,
    WorkloadSnapshot,
)
from brupop.models.policy import GateKind, Verification
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import VerificationOutcome, VerificationRecord
from brupop.policy.admission import GateBlocked
from brupop.policy.budget import Budget, BudgetState, account
from brupop.policy.checkpoints import (
    Checkpoint,
    Cordon,
    FailUpdate,
    Finish,
    Hold,
    after_update,
    at_checkpoint,
    before_cordon,
    read_record,
    verification_failure,
)
from brupop.policy.gates import Block
from brupop.policy.limits import Count
from tests.factories import shadow

S = ShadowState
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
WEB = WorkloadRef(kind="Deployment", namespace="app", name="web")
DB = WorkloadRef(kind="StatefulSet", namespace="app", name="db")
BEFORE = {WEB: Readiness(ready=3, desired=3), DB: Readiness(ready=1, desired=1)}
READY = NodeHealth(name="n1", ready=True, unschedulable=False)


def verification(**fields: Any) -> Verification:
    return Verification.from_wire(fields)


def staged(*, at: datetime = NOW - timedelta(minutes=5)) -> BottlerocketShadow:
    """A node that staged its update: the next step cordons it."""
    found = shadow(
        "n1", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, target="1.1.0"
    )
    spec = ShadowSpec(
        state=found.spec.state, version="1.1.0", state_transition_timestamp=Timestamp.from_datetime(at)
    )
    return replace(found, spec=spec)


def back(*, at: datetime = NOW) -> BottlerocketShadow:
    """A node back on its new version (MonitoringUpdate asked at `at` and reached)."""
    found = shadow("n1", spec=S.MONITORING_UPDATE, state=S.MONITORING_UPDATE, current="1.1.0", target="1.1.0")
    spec = ShadowSpec(
        state=S.MONITORING_UPDATE, version="1.1.0", state_transition_timestamp=Timestamp.from_datetime(at)
    )
    return replace(found, spec=spec)


def cordoned_record(snapshot: dict[WorkloadRef, Readiness] | None = None) -> VerificationRecord:
    taken = WorkloadSnapshot.of(BEFORE if snapshot is None else snapshot, taken_at=NOW - timedelta(minutes=4))
    return VerificationRecord(version="1.1.0", snapshot=taken)


def after(
    rule: Verification | None,
    record: VerificationRecord | None,
    *,
    now: datetime,
    node: NodeHealth | None = READY,
    workloads: dict[WorkloadRef, Readiness] | None = None,
    gates: tuple[Block, ...] = (),
    health: Answer | Unreachable | None = None,
) -> Hold | Finish | FailUpdate:
    return after_update(
        rule,
        back(),
        record,
        node=node,
        workloads=BEFORE if workloads is None else workloads,
        health=health,
        gates=gates,
        now=now,
    )


# --- where a node is ----------------------------------------------------------------------------------


def test_a_node_is_at_a_checkpoint_when_it_reached_the_step_before_a_cordon_or_after_its_update() -> None:
    assert at_checkpoint(staged()) is Checkpoint.BEFORE_CORDON
    assert at_checkpoint(back()) is Checkpoint.AFTER_UPDATE
    on_the_way = shadow("n1", spec=S.STAGED_AND_PERFORMED_UPDATE, state=S.IDLE)
    assert at_checkpoint(on_the_way) is None
    rebooting = shadow("n1", spec=S.MONITORING_UPDATE, state=S.REBOOTED_INTO_UPDATE)
    assert at_checkpoint(rebooting) is None
    assert at_checkpoint(shadow("n1")) is None
    assert at_checkpoint(shadow("n1", spec=S.STAGED_AND_PERFORMED_UPDATE, state=None)) is None


def test_the_record_is_read_from_the_shadows_annotation_and_a_bad_one_is_a_problem() -> None:
    record = cordoned_record()
    assert read_record({VERIFICATION_ANNOTATION: record.to_json()}) == (record, None)
    assert read_record({}) == (None, None)
    missing, problem = read_record({VERIFICATION_ANNOTATION: '{"version": 1}'})
    assert missing is None
    assert problem == (
        f"annotation {VERIFICATION_ANNOTATION} does not read (version: expected a string, got int); ignored"
    )


# --- before the cordon --------------------------------------------------------------------------------


def test_a_gate_that_blocks_holds_the_cordon_since_it_began() -> None:
    blocked = GateBlocked(
        gate=GateKind.PROMETHEUS, reason="alert Boom firing", since=NOW - timedelta(minutes=1)
    )
    held = before_cordon(None, staged(), blocks=(blocked,), snapshot=BEFORE, now=NOW)
    assert held == Hold(
        code="GateBlocked",
        message="blocked by the prometheus gate before its cordon: alert Boom firing",
        since=NOW - timedelta(minutes=1),
    )


def test_without_verification_the_cordon_goes_ahead_and_removes_any_old_record() -> None:
    assert before_cordon(None, staged(), blocks=(), snapshot=None, now=NOW) == Cordon(record=None)


def test_verification_takes_the_snapshot_with_the_cordons_write() -> None:
    cordon = before_cordon(verification(), staged(), blocks=(), snapshot=BEFORE, now=NOW)
    assert cordon == Cordon(
        record=VerificationRecord(version="1.1.0", snapshot=WorkloadSnapshot.of(BEFORE, taken_at=NOW))
    )
    without_workloads = before_cordon(
        verification(workloads=False), staged(), blocks=(), snapshot=None, now=NOW
    )
    assert without_workloads == Cordon(record=VerificationRecord(version="1.1.0"))


def test_the_cordon_waits_for_the_snapshot_while_pods_and_workloads_are_not_known() -> None:
    held = before_cordon(verification(), staged(), blocks=(), snapshot=None, now=NOW)
    assert held == Hold(
        code="AwaitingSnapshot",
        message="the controller has not listed the cluster's pods and workloads yet: their readiness is "
        "recorded before the cordon",
        since=NOW - timedelta(minutes=5),
    )


# --- after the update ---------------------------------------------------------------------------------


def test_without_verification_the_cycle_finishes_as_before() -> None:
    assert after(None, None, now=NOW) == Finish(record=None)


def test_a_verified_node_finishes_and_its_record_says_so() -> None:
    done = after(verification(), cordoned_record(), now=NOW + timedelta(seconds=5))
    assert done == Finish(
        record=replace(
            cordoned_record(),
            outcome=VerificationOutcome.PASSED,
            ended_at=Timestamp.from_datetime(NOW + timedelta(seconds=5)),
        )
    )


def test_what_verification_awaits_holds_the_node_since_it_came_back() -> None:
    worse = {**BEFORE, WEB: Readiness(ready=1, desired=3)}
    held = after(verification(), cordoned_record(), now=NOW + timedelta(minutes=1), workloads=worse)
    assert held == Hold(
        code="Verifying",
        message="verifying: deployment app/web 1/3 ready, 3 before the update",
        since=NOW,
        until=NOW + timedelta(minutes=10),
    )


def test_the_soak_start_is_recorded_once_and_kept_from_pass_to_pass() -> None:
    rule = verification(soak="5m")
    began = after(rule, cordoned_record(), now=NOW + timedelta(minutes=1))
    soak_end = NOW + timedelta(minutes=6)
    assert isinstance(began, Hold)
    assert began.record == replace(
        cordoned_record(), verified_at=Timestamp.from_datetime(NOW + timedelta(minutes=1))
    )
    assert (began.code, began.since, began.until) == ("Soaking", NOW + timedelta(minutes=1), soak_end)
    assert began.message == f"soaking until {soak_end.isoformat()}"
    later = after(rule, began.record, now=NOW + timedelta(minutes=3))
    assert isinstance(later, Hold)
    assert later.record is None  # nothing new to write
    assert later.until == soak_end
    assert isinstance(after(rule, began.record, now=soak_end), Finish)


def test_a_verification_without_a_record_of_this_cycle_checks_what_it_can() -> None:
    other = VerificationRecord(version="1.0.9", snapshot=cordoned_record().snapshot)
    worse = {WEB: Readiness(ready=0, desired=3)}
    for record in (None, other, replace(cordoned_record(), outcome=VerificationOutcome.PASSED)):
        done = after(verification(), record, now=NOW, workloads=worse)
        assert done == Finish(
            record=VerificationRecord(
                version="1.1.0", outcome=VerificationOutcome.PASSED, ended_at=Timestamp.from_datetime(NOW)
            )
        )
    soak = after(verification(soak="1m"), None, now=NOW)
    assert isinstance(soak, Hold)
    assert soak.record == VerificationRecord(version="1.1.0", verified_at=Timestamp.from_datetime(NOW))


def test_a_failed_verification_ends_the_update_with_a_reason_the_budget_counts() -> None:
    worse = {**BEFORE, WEB: Readiness(ready=1, desired=3)}
    failed = after(
        verification(timeout="2m"), cordoned_record(), now=NOW + timedelta(minutes=2), workloads=worse
    )
    assert isinstance(failed, FailUpdate)
    reason = "not verified within 2m: deployment app/web 1/3 ready, 3 before the update"
    assert failed.record == replace(
        cordoned_record(),
        outcome=VerificationOutcome.FAILED,
        ended_at=Timestamp.from_datetime(NOW + timedelta(minutes=2)),
        reason=reason,
    )
    failure = verification_failure(failed.record, node="n1")
    assert failure is not None
    assert (failure.node, failure.at.instant) == ("n1", NOW + timedelta(minutes=2))
    assert failure.reason == f"verification failed: {reason}"
    assert verification_failure(cordoned_record(), node="n1") is None


def test_a_gate_that_finds_the_cluster_sick_during_the_soak_fails_the_update_at_once() -> None:
    rule = verification(soak="5m")
    soaking = replace(cordoned_record(), verified_at=Timestamp.from_datetime(NOW))
    alert = Block(GateKind.PROMETHEUS, "alert Boom firing")
    failed = after(rule, soaking, now=NOW + timedelta(minutes=1), gates=(alert,))
    assert isinstance(failed, FailUpdate)
    assert failed.record.reason == "during the soak: prometheus gate: alert Boom firing"
    pods = Block(GateKind.PODS, "pod a/b matches")
    assert isinstance(after(rule, soaking, now=NOW + timedelta(minutes=1), gates=(pods,)), Hold)


def test_an_unknown_health_query_holds_and_its_words_say_so() -> None:
    rule = verification(prometheus={"url": "http://p:9090", "query": "errors"})
    held = after(
        rule, cordoned_record(), now=NOW, health=Unreachable(url="http://p:9090", reason="connection refused")
    )
    assert isinstance(held, Hold)
    assert held.message == "verifying: health query: Prometheus unreachable: connection refused (fail closed)"
    calm = Answer(query="errors", at=NOW, result=Vector(()))
    assert isinstance(after(rule, cordoned_record(), now=NOW, health=calm), Finish)


def test_unknown_workloads_hold_the_verification() -> None:
    held = after_update(
        verification(), back(), cordoned_record(), node=READY, workloads=None, health=None, gates=(), now=NOW
    )
    assert isinstance(held, Hold)
    assert held.message == "verifying: the controller has not listed the workloads yet"


# --- properties ---------------------------------------------------------------------------------------

GATES = st.lists(
    st.builds(
        GateBlocked,
        gate=st.sampled_from(list(GateKind)),
        reason=st.text(min_size=1, max_size=5),
        since=st.just(NOW),
    ),
    max_size=3,
)
READINESS = st.dictionaries(
    st.sampled_from([WEB, DB]), st.builds(Readiness, ready=st.integers(0, 5), desired=st.integers(0, 5))
)


@given(
    blocks=GATES,
    snapshot=st.none() | READINESS,
    rule=st.none() | st.builds(verification, workloads=st.booleans()),
)
def test_nothing_is_cordoned_while_a_gate_blocks_or_without_the_snapshot_it_needs(
    blocks: list[GateBlocked], snapshot: dict[WorkloadRef, Readiness] | None, rule: Verification | None
) -> None:
    decided = before_cordon(rule, staged(), blocks=blocks, snapshot=snapshot, now=NOW)
    if blocks or (rule is not None and rule.workloads and snapshot is None):
        assert isinstance(decided, Hold)
    else:
        assert isinstance(decided, Cordon)
        if rule is not None and rule.workloads:
            assert decided.record is not None
            assert decided.record.snapshot is not None
            assert decided.record.snapshot.readiness() == snapshot


@given(
    soak=st.integers(1, 600),
    steps=st.lists(st.integers(0, 120), min_size=1, max_size=20),
    now_ready=READINESS,
)
def test_a_soak_never_ends_before_its_duration_however_the_passes_fall(
    soak: int, steps: list[int], now_ready: dict[WorkloadRef, Readiness]
) -> None:
    rule = verification(soak=f"{soak}s", timeout="1h")
    record: VerificationRecord | None = cordoned_record()
    now = NOW
    verified_at = None
    for step in steps:
        now += timedelta(seconds=step)
        decided = after(rule, record, now=now, workloads=now_ready)
        if isinstance(decided, Hold) and decided.record is not None:
            record = decided.record
            verified_at = decided.record.verified_at
        if isinstance(decided, Finish):
            assert verified_at is not None
            assert now >= verified_at.instant + timedelta(seconds=soak)
            return
        if isinstance(decided, FailUpdate):
            return


@given(seen=st.integers(1, 5), max_failures=st.integers(1, 3))
def test_a_failure_counts_once_however_often_a_pass_sees_its_record(seen: int, max_failures: int) -> None:
    record = replace(
        cordoned_record(),
        outcome=VerificationOutcome.FAILED,
        ended_at=Timestamp.from_datetime(NOW),
        reason="x",
    )
    budget = Budget(max_failures=Count(max_failures), window=timedelta(hours=1))
    state = BudgetState()
    for _ in range(seen):
        failure = verification_failure(record, node="n1")
        assert failure is not None
        state = account(
            budget, pool="p", previous=state, observed=[failure], pool_size=10, resumed=None, now=NOW
        )
    assert len(state.failures) == 1
    assert (state.halt is not None) is (max_failures == 1)
