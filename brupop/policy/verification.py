"""Post-update verification and soak: whether an updated node's slot may free (`Passed`), must wait
(`Waiting`, with what is awaited and until when), or whether its update has failed (`Failed`, with the
reason that becomes the ErrorReset reason and counts against the pool's failure budget).

The checks (those the policy's `verification` asks for):
- the Node is Ready;
- no workload that had pods on the node before its drain has regressed (`brupop.policy.workloads`); while
  the workloads are not known yet (the controller's caches still listing), that is not yet known;
- the health query gives what it expects: nothing (`Empty`), something (`NonEmpty`), or series whose
  every value passes a comparison (`< 0.05`). A Prometheus that is unavailable counts as passing with
  `failOpen`, else as not yet known.

Two phases, from what the controller remembers (`Progress`):
1. *Verifying*, from the moment the node is back on its new version: wait until every check holds; past
   `timeout` the update has failed, naming what never held.
2. *Soaking*, from the first moment every check held (`verified_at`), for `soak`: the checks, and the
   pool's prometheus and cluster gates, are checked on every pass. Anything found wrong fails the update
   at once ("during the soak: ..."). What cannot be known (Prometheus unavailable, fail closed) does not
   fail it, but the soak cannot end without knowing: past its end it waits for at most `timeout` more,
   then fails. The soak never ends before its full duration. Blocking pods are no health signal: they
   hold the next node's start (a pre-disruption gate), not this node's verification.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from brupop.models.health import (
    Answer,
    Matrix,
    NodeHealth,
    Outcome,
    Readiness,
    Result,
    Scalar,
    Vector,
    WorkloadRef,
)
from brupop.models.policy import (
    COMPARISON,
    EXPECT_EMPTY,
    EXPECT_NON_EMPTY,
    Failure,
    GateKind,
    HealthQuery,
    Verification,
    duration,
    duration_text,
)
from brupop.models.timestamp import Timestamp
from brupop.policy.gates import Block, failure_reason, result_text, series_text
from brupop.policy.workloads import regressions

WORKLOADS_UNKNOWN: Final = "the controller has not listed the workloads yet"
_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Problem:
    text: str
    unknown: bool = False
    """Not found wrong, but not known to be right (Prometheus unavailable, fail closed)."""


@dataclass(frozen=True, slots=True)
class VerificationFacts:
    node: NodeHealth | None
    """The updated Node now (None: it is gone)."""
    snapshot: Mapping[WorkloadRef, Readiness]
    """Its workloads' readiness before the drain."""
    workloads: Mapping[WorkloadRef, Readiness] | None
    """The same workloads' readiness now (missing: deleted since; None: not known yet, the controller's
    workload caches are still listing)."""
    health: Outcome | None = None
    """The health query's outcome (None: not asked)."""
    gates: Sequence[Block] = ()
    """The pool's gate blocks now; during the soak the prometheus and cluster gates count."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What the controller keeps between passes for a node under verification."""

    back_at: datetime
    """When the node came back on its new version: verification began."""
    verified_at: datetime | None = None
    """When every check first held: the soak began."""


@dataclass(frozen=True, slots=True)
class Passed:
    """Verified (and soaked): the node's slot frees."""


@dataclass(frozen=True, slots=True)
class Waiting:
    awaiting: tuple[str, ...]
    until: datetime
    """When this verdict changes on its own (a deadline or the soak's end), to look again then."""
    verified_at: datetime | None
    """The progress to keep: when the soak began (None: not yet)."""

    def message(self) -> str:
        return "; ".join(self.awaiting)


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str

    def failure(self, node: str, *, at: datetime) -> Failure:
        """The failure the pool's budget counts."""
        reason = f"verification failed: {self.reason}"
        return Failure(node=node, at=Timestamp.from_datetime(at), reason=reason)


Verdict = Passed | Waiting | Failed


def comparison(expect: str) -> Callable[[float], bool]:
    """`< 0.05` as a test on a value."""
    match = re.fullmatch(COMPARISON, expect)
    if match is None:
        raise ValueError(f"{expect!r} is not a comparison such as '< 0.05'")
    op = _OPERATORS[match[1]]
    bound = float(expect[len(match[1]) :])
    return lambda value: op(value, bound)


def _values(result: Vector | Matrix | Scalar) -> list[tuple[str, float | None]]:
    if isinstance(result, Scalar):
        return [("the scalar", result.value)]
    if isinstance(result, Vector):
        return [(series_text(s.labels), s.value) for s in result.samples]
    return [(series_text(s.labels), value) for s in result.series for _, value in s.points]


def expectation_problem(expect: str, result: Result) -> str | None:
    """What is wrong with a health query's result (None: it is what `expect` asks for)."""
    if not isinstance(result, Vector | Matrix | Scalar):
        return "the health query returns a string, not series"
    values = _values(result)
    if expect == EXPECT_EMPTY:
        if isinstance(result, Scalar):
            return "the health query returns a scalar, which is never empty"
        if not values:
            return None
        shown = result_text(result.samples) if isinstance(result, Vector) else f"{len(result.series)} series"
        return f"the health query returned {shown}, expected nothing"
    if not values:
        wanted = "series" if expect == EXPECT_NON_EMPTY else expect
        return f"the health query returned nothing, expected {wanted}"
    if expect == EXPECT_NON_EMPTY:
        return None
    test = comparison(expect)
    for series, value in values:
        if value is None:
            return f"the health query returned a native histogram ({series}), which has no value to compare"
        if not test(value):
            return f"the health query gave {series} = {value:g}, expected {expect}"
    return None


def health_problem(query: HealthQuery, outcome: Outcome | None) -> Problem | None:
    if outcome is None:
        return Problem("the health query has not been asked yet", unknown=True)
    if not isinstance(outcome, Answer):
        reason = failure_reason(query, outcome)
        return None if reason is None else Problem(f"health query: {reason}", unknown=True)
    found = expectation_problem(query.expect, outcome.result)
    return None if found is None else Problem(found)


def problems(verification: Verification, facts: VerificationFacts, *, soaking: bool) -> list[Problem]:
    """Every check that does not hold now."""
    found = []
    if facts.node is None:
        found.append(Problem("the Node is gone"))
    elif not facts.node.ready:
        found.append(Problem(f"node {facts.node.name} is not Ready"))
    if verification.workloads and facts.snapshot:
        if facts.workloads is None:
            found.append(Problem(WORKLOADS_UNKNOWN, unknown=True))
        else:
            found += [
                Problem(r.message())
                for r in regressions(facts.snapshot, facts.workloads, verification.workload_tolerance)
            ]
    if verification.prometheus is not None:
        health = health_problem(verification.prometheus, facts.health)
        found += [health] if health is not None else []
    if soaking:
        found += [
            Problem(f"{b.gate} gate: {b.reason}", unknown=b.unknown)
            for b in facts.gates
            if b.gate in (GateKind.PROMETHEUS, GateKind.CLUSTER)
        ]
    return found


def _texts(found: Sequence[Problem]) -> str:
    return "; ".join(p.text for p in found)


def verify(
    verification: Verification, facts: VerificationFacts, progress: Progress, *, now: datetime
) -> Verdict:
    """This pass's verdict on one updated node."""
    timeout = duration(verification.timeout)
    soak = timedelta(0) if verification.soak is None else duration(verification.soak)
    if progress.verified_at is None:
        found = problems(verification, facts, soaking=False)
        if found:
            deadline = progress.back_at + timeout
            if now >= deadline:
                return Failed(f"not verified within {duration_text(timeout)}: {_texts(found)}")
            return Waiting(tuple(p.text for p in found), until=deadline, verified_at=None)
        if not soak:
            return Passed()
        return Waiting((f"soaking until {(now + soak).isoformat()}",), until=now + soak, verified_at=now)
    end = progress.verified_at + soak
    found = problems(verification, facts, soaking=True)
    wrong = [p for p in found if not p.unknown]
    if wrong:
        return Failed(f"during the soak: {_texts(wrong)}")
    if found:
        if now >= end + timeout:
            return Failed(f"the soak could not end: {_texts(found)} for {duration_text(timeout)} after it")
        until = end if now < end else end + timeout
        return Waiting(tuple(p.text for p in found), until=until, verified_at=progress.verified_at)
    if now >= end:
        return Passed()
    return Waiting((f"soaking until {end.isoformat()}",), until=end, verified_at=progress.verified_at)
