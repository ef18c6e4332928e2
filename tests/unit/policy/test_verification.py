"""Post-update verification and soak: each check, the two phases, their deadlines and words, and the
properties the issue names: the soak never ends before its duration, a regression beyond the tolerance
always fails the update (past the deadline, or at once during the soak), nothing passes while a check does
not hold, and what cannot be known never fails a node before its deadline."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.health import (
    Answer,
    Matrix,
    NodeHealth,
    Outcome,
    QueryError,
    Readiness,
    Sample,
    Scalar,
    Series,
    String,
    Unreachable,
    Vector,
    WorkloadRef,
)
from brupop.models.policy import GateKind, Verification
from brupop.policy.gates import Block
from brupop.policy.verification import (
    Failed,
    Passed,
    Progress,
    VerificationFacts,
    Waiting,
    comparison,
    expectation_problem,
    verify,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "http://prometheus:9090"
WEB = WorkloadRef(kind="Deployment", namespace="app", name="web")


def verification(**fields: Any) -> Verification:
    return Verification.from_wire(fields)


def facts(
    *,
    ready: bool = True,
    gone: bool = False,
    web_now: int = 3,
    health: Outcome | None = None,
    gates: tuple[Block, ...] = (),
) -> VerificationFacts:
    return VerificationFacts(
        node=None if gone else NodeHealth(name="n1", ready=ready, unschedulable=False),
        snapshot={WEB: Readiness(ready=3, desired=3)},
        workloads={WEB: Readiness(ready=web_now, desired=3)},
        health=health,
        gates=gates,
    )


def vector(*values: float | None) -> Answer:
    samples = tuple(Sample(labels={"__name__": "errors", "i": str(i)}, value=v) for i, v in enumerate(values))
    return Answer(query="q", at=NOW, result=Vector(samples))


BACK = Progress(back_at=NOW)


def test_a_ready_node_with_its_workloads_back_passes_at_once_without_a_soak() -> None:
    assert verify(verification(), facts(), BACK, now=NOW) == Passed()


def test_what_is_awaited_is_said_until_the_deadline_then_it_fails() -> None:
    waiting = verify(verification(), facts(ready=False, web_now=1), BACK, now=NOW + timedelta(minutes=3))
    assert waiting == Waiting(
        ("node n1 is not Ready", "deployment app/web 1/3 ready, 3 before the update"),
        until=NOW + timedelta(minutes=10),
        verified_at=None,
    )
    assert waiting.message() == "node n1 is not Ready; deployment app/web 1/3 ready, 3 before the update"
    failed = verify(verification(), facts(web_now=1), BACK, now=NOW + timedelta(minutes=10))
    assert failed == Failed("not verified within 10m: deployment app/web 1/3 ready, 3 before the update")
    failure = failed.failure("n1", at=NOW + timedelta(minutes=10))
    assert failure.node == "n1"
    assert (
        failure.reason
        == "verification failed: not verified within 10m: deployment app/web 1/3 ready, 3 before the update"
    )


def test_a_gone_node_is_awaited_then_fails() -> None:
    assert verify(
        verification(timeout="1m"), facts(gone=True), BACK, now=NOW + timedelta(minutes=1)
    ) == Failed("not verified within 1m: the Node is gone")


def test_workloads_can_be_left_out() -> None:
    assert verify(verification(workloads=False), facts(web_now=0), BACK, now=NOW) == Passed()
    assert verify(verification(workloadTolerance="50%"), facts(web_now=2), BACK, now=NOW) == Passed()


def test_workloads_not_listed_yet_are_awaited_and_hold_a_soak_open() -> None:
    unknown = replace(facts(), workloads=None)
    waiting = verify(verification(), unknown, BACK, now=NOW)
    assert waiting == Waiting(
        ("the controller has not listed the workloads yet",),
        until=NOW + timedelta(minutes=10),
        verified_at=None,
    )
    soaking = Progress(back_at=NOW, verified_at=NOW)
    assert isinstance(
        verify(verification(soak="1m"), unknown, soaking, now=NOW + timedelta(minutes=2)), Waiting
    )
    assert verify(verification(workloads=False), unknown, BACK, now=NOW) == Passed()
    assert verify(verification(), replace(unknown, snapshot={}), BACK, now=NOW) == Passed()


def health(**fields: Any) -> dict[str, Any]:
    return {"prometheus": {"url": URL, "query": "errors", **fields}}


@pytest.mark.parametrize(
    ("expect", "result", "problem"),
    [
        ("Empty", Vector(()), None),
        (
            "Empty",
            vector(1.0).result,
            'the health query returned 1 series errors{i="0"} = 1, expected nothing',
        ),
        (
            "Empty",
            Matrix((Series(labels={}, points=((1.0, 1.0),)),)),
            "the health query returned 1 series, expected nothing",
        ),
        ("Empty", Scalar(0.0), "the health query returns a scalar, which is never empty"),
        ("NonEmpty", Vector(()), "the health query returned nothing, expected series"),
        ("NonEmpty", vector(0.0).result, None),
        ("NonEmpty", Scalar(0.0), None),
        ("< 0.05", vector(0.01, 0.04).result, None),
        ("< 0.05", vector(0.01, 0.5).result, 'the health query gave errors{i="1"} = 0.5, expected < 0.05'),
        ("< 0.05", Vector(()), "the health query returned nothing, expected < 0.05"),
        ("==1", Scalar(1.0), None),
        (">= 1e3", Scalar(999.0), "the health query gave the scalar = 999, expected >= 1e3"),
        (
            "!= 0",
            Matrix((Series(labels={"a": "b"}, points=((1.0, 1.0), (2.0, 0.0))),)),
            'the health query gave {a="b"} = 0, expected != 0',
        ),
        (
            "> 0",
            vector(None).result,
            'the health query returned a native histogram (errors{i="0"}), which has no value to compare',
        ),
        ("> 0", vector(float("nan")).result, 'the health query gave errors{i="0"} = nan, expected > 0'),
        ("Empty", String("x"), "the health query returns a string, not series"),
    ],
)
def test_the_health_query_expectation(expect: str, result: Any, problem: str | None) -> None:
    assert expectation_problem(expect, result) == problem


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("< 0.05", 0.04, True),
        ("<= 1", 1.0, True),
        ("> -2", -3.0, False),
        (">= .5", 0.5, True),
        ("== 1", 1.0, True),
        ("!= +1", 1.0, False),
    ],
)
def test_comparisons(text: str, value: float, holds: bool) -> None:
    assert comparison(text)(value) is holds


def test_a_comparison_the_schema_refuses_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a comparison"):
        comparison("about 1")


def test_the_health_query_is_awaited_and_an_unavailable_prometheus_passes_only_failing_open() -> None:
    rule = verification(**health(expect="< 0.05"))
    assert verify(rule, facts(health=vector(0.01)), BACK, now=NOW) == Passed()
    not_asked = verify(rule, facts(), BACK, now=NOW)
    assert isinstance(not_asked, Waiting)
    assert not_asked.awaiting == ("the health query has not been asked yet",)
    down = Unreachable(url=URL, reason="connection refused")
    closed = verify(rule, facts(health=down), BACK, now=NOW)
    assert isinstance(closed, Waiting)
    assert closed.awaiting == ("health query: Prometheus unreachable: connection refused (fail closed)",)
    assert verify(verification(**health(failOpen=True)), facts(health=down), BACK, now=NOW) == Passed()
    refused = QueryError(url=URL, error_type="bad_data", message="parse error")
    assert isinstance(
        verify(verification(**health(failOpen=True)), facts(health=refused), BACK, now=NOW), Waiting
    )


def test_the_soak_begins_when_everything_holds_and_ends_after_its_duration() -> None:
    rule = verification(soak="5m")
    begun = verify(rule, facts(), BACK, now=NOW)
    soak_end = NOW + timedelta(minutes=5)
    assert begun == Waiting((f"soaking until {soak_end.isoformat()}",), until=soak_end, verified_at=NOW)
    soaking = Progress(back_at=NOW, verified_at=NOW)
    assert verify(rule, facts(), soaking, now=NOW + timedelta(minutes=4)) == Waiting(
        (f"soaking until {soak_end.isoformat()}",), until=soak_end, verified_at=NOW
    )
    assert verify(rule, facts(), soaking, now=soak_end) == Passed()


def test_anything_found_wrong_during_the_soak_fails_at_once() -> None:
    rule = verification(soak="5m")
    soaking = Progress(back_at=NOW, verified_at=NOW)
    later = NOW + timedelta(minutes=1)
    assert verify(rule, facts(web_now=2), soaking, now=later) == Failed(
        "during the soak: deployment app/web 2/3 ready, 3 before the update"
    )
    firing = Block(GateKind.PROMETHEUS, "alert KubeNodeNotReady firing")
    assert verify(rule, facts(gates=(firing,)), soaking, now=later) == Failed(
        "during the soak: prometheus gate: alert KubeNodeNotReady firing"
    )
    pods = Block(GateKind.PODS, "pod a/b matches the blocking selector app=backup")
    assert isinstance(verify(rule, facts(gates=(pods,)), soaking, now=later), Waiting), (
        "pods are no health signal"
    )


def test_what_cannot_be_known_during_the_soak_holds_it_open_until_timeout_after_its_end() -> None:
    rule = verification(soak="5m", timeout="2m")
    soaking = Progress(back_at=NOW, verified_at=NOW)
    unknown = Block(
        GateKind.PROMETHEUS, "Prometheus unreachable: connection refused (fail closed)", unknown=True
    )
    during = verify(rule, facts(gates=(unknown,)), soaking, now=NOW + timedelta(minutes=1))
    assert during == Waiting(
        ("prometheus gate: Prometheus unreachable: connection refused (fail closed)",),
        until=NOW + timedelta(minutes=5),
        verified_at=NOW,
    )
    after = verify(rule, facts(gates=(unknown,)), soaking, now=NOW + timedelta(minutes=6))
    assert isinstance(after, Waiting)
    assert after.until == NOW + timedelta(minutes=7)
    assert verify(rule, facts(), soaking, now=NOW + timedelta(minutes=6)) == Passed()
    assert verify(rule, facts(gates=(unknown,)), soaking, now=NOW + timedelta(minutes=7)) == Failed(
        "the soak could not end: prometheus gate: Prometheus unreachable: connection refused (fail closed) "
        "for 2m after it"
    )


def test_a_soak_removed_from_the_policy_ends_the_soak() -> None:
    assert verify(verification(), facts(), Progress(back_at=NOW, verified_at=NOW), now=NOW) == Passed()


BLOCKS = st.lists(
    st.builds(Block, gate=st.sampled_from(list(GateKind)), reason=st.just("r"), unknown=st.booleans()),
    max_size=3,
)


@given(
    soak=st.none() | st.integers(1, 3600),
    timeout=st.integers(1, 3600),
    verified_after=st.none() | st.integers(0, 7200),
    now_after=st.integers(0, 10_000),
    ready=st.booleans(),
    web_now=st.integers(0, 3),
    tolerance=st.integers(0, 3),
    gates=BLOCKS,
    health=st.sampled_from([None, vector(0.0), vector(), Unreachable(url=URL, reason="down")]),
)
def test_verification_properties(
    soak: int | None,
    timeout: int,
    verified_after: int | None,
    now_after: int,
    ready: bool,
    web_now: int,
    tolerance: int,
    gates: list[Block],
    health: Outcome | None,
) -> None:
    fields: dict[str, Any] = {"timeout": f"{timeout}s", "workloadTolerance": tolerance}
    if soak is not None:
        fields["soak"] = f"{soak}s"
    if health is not None:
        fields["prometheus"] = {"url": URL, "query": "errors", "expect": "NonEmpty"}
    rule = verification(**fields)
    verified_at = None if verified_after is None else NOW + timedelta(seconds=verified_after)
    now = NOW + timedelta(seconds=now_after)
    if verified_at is not None and now < verified_at:
        now = verified_at
    found = facts(ready=ready, web_now=web_now, health=health, gates=tuple(gates))
    verdict = verify(rule, found, Progress(back_at=NOW, verified_at=verified_at), now=now)
    regressed = web_now < 3 - tolerance
    soak_span = timedelta(seconds=soak or 0)
    if isinstance(verdict, Passed):
        # The soak never ends before its duration, and nothing passes while a check fails.
        if soak is not None:
            assert verified_at is not None
            assert now >= verified_at + soak_span
        assert ready
        assert not regressed
    if regressed and verified_at is None and now >= NOW + timedelta(seconds=timeout):
        assert isinstance(verdict, Failed), "a regression past the deadline fails"
    if regressed and verified_at is not None:
        assert isinstance(verdict, Failed), "a regression during the soak fails at once"
    if isinstance(verdict, Failed) and verified_at is None:
        assert now >= NOW + timedelta(seconds=timeout), "never fails before the deadline"
    if (
        isinstance(verdict, Failed)
        and verified_at is not None
        and now < verified_at + soak_span + timedelta(seconds=timeout)
    ):
        # Only what is found wrong fails a soak early, never what cannot be known.
        wrong_gate = any(not b.unknown and b.gate in (GateKind.PROMETHEUS, GateKind.CLUSTER) for b in gates)
        assert not ready or regressed or wrong_gate or health == vector()
    if isinstance(verdict, Waiting):
        assert verdict.until > now
        assert verdict.verified_at in ((verified_at,) if verified_at is not None else (None, now))
