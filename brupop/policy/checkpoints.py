"""The two checkpoints of a node's update cycle where its pool's health settings can hold it, and what the
controller does at each. Both are steps the controller takes itself, once the agent has reached the state
it was asked for, so holding there means only not taking the next step yet: the node stays in its cycle,
keeps its slot and counts against its pool's limit.

1. **Before the cordon** (the agent reached StagedAndPerformedUpdate; the next spec, RebootedIntoUpdate,
   makes it cordon, drain and reboot): the pool's gates are checked again, since staging can take minutes
   and the cluster may have turned sick since the node started; a blocking gate holds the node staged.
   With verification, the readiness of the workloads that have pods on the node is recorded first (the
   snapshot), and stored with the cordon's own write: the spec and the record land together or not at
   all. A cordon in a pool without verification removes any earlier record, so a record always belongs
   to the cycle in progress.
2. **After the update** (the agent reached MonitoringUpdate on the new version; the next spec, Idle, ends
   the cycle and frees the slot): verification and soak (`brupop.policy.verification`) from the stored
   record, timed from the moment the node came back (the MonitoringUpdate spec's transition time). The
   soak's start is recorded when it begins, so a restarted controller does not start it again. Passed:
   the cycle ends. Failed: the cycle ends too (the node runs the new version, uncordoned; brupop cannot
   take an update back), but as a failed update: the record keeps the reason and its time, which is the
   failure's identity for the pool's failure budget (`verification_failure`), so a bad release halts the
   pool instead of walking the fleet.

Nodes already past the cordon are never stopped by a gate: they finish (and, with verification, must pass
it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Final

from brupop.models.constants import VERIFICATION_ANNOTATION
from brupop.models.health import NodeHealth, Outcome, Readiness, WorkloadRef, WorkloadSnapshot
from brupop.models.policy import Failure, Verification
from brupop.models.progress import Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import VerificationOutcome, VerificationRecord, clipped
from brupop.models.wire import WireError
from brupop.policy.admission import GateBlocked
from brupop.policy.gates import Block
from brupop.policy.verification import Failed, Passed, Progress, VerificationFacts, verify

SNAPSHOT_UNKNOWN: Final = (
    "the controller has not listed the cluster's pods and workloads yet: their readiness is recorded before "
    "the cordon"
)


class Checkpoint(Enum):
    BEFORE_CORDON = "before the cordon"
    AFTER_UPDATE = "after the update"


_AT: Final = {
    ShadowState.STAGED_AND_PERFORMED_UPDATE: Checkpoint.BEFORE_CORDON,
    ShadowState.MONITORING_UPDATE: Checkpoint.AFTER_UPDATE,
}


@dataclass(frozen=True, slots=True)
class Hold:
    """Do not take the next step yet."""

    code: str
    """A CamelCase word (GateBlocked, AwaitingSnapshot, Verifying, Soaking), for the shadow's waiting
    annotation."""
    message: str
    since: datetime
    until: datetime | None = None
    """When this changes without any event (a deadline, the soak's end): look again then."""
    record: VerificationRecord | None = None
    """A record to write now (the soak began); None: nothing to write."""


@dataclass(frozen=True, slots=True)
class Cordon:
    """Take the step that cordons the node, writing `record` with it (None: remove any old record)."""

    record: VerificationRecord | None


@dataclass(frozen=True, slots=True)
class Finish:
    """End the cycle (spec Idle), writing `record` with it (None: nothing to write)."""

    record: VerificationRecord | None


@dataclass(frozen=True, slots=True)
class FailUpdate:
    """End the cycle as a failed update: write `record` with the Idle spec (`verification_failure` of it
    counts against the pool's failure budget)."""

    record: VerificationRecord


Decision = Hold | Cordon | Finish | FailUpdate
"""What the controller does with a node at a checkpoint in this pass."""
MAX_MESSAGE: Final = 1024
"""Characters of a hold's message shown in the waiting annotation."""


def at_checkpoint(shadow: BottlerocketShadow) -> Checkpoint | None:
    """The checkpoint the node waits at: the agent reached the state the spec asks for, and the next step
    is one a checkpoint guards."""
    status = shadow.status
    if status is None or status.current_state is not shadow.spec.state:
        return None
    return _AT.get(shadow.spec.state)


def read_record(annotations: Mapping[str, str]) -> tuple[VerificationRecord | None, str | None]:
    """The shadow's verification record, and the problem when its annotation does not read (then there is
    none: the verification goes on with what it can check)."""
    text = annotations.get(VERIFICATION_ANNOTATION)
    if text is None:
        return None, None
    try:
        return VerificationRecord.from_json(text), None
    except WireError as err:
        return None, f"annotation {VERIFICATION_ANNOTATION} does not read ({err}); ignored"


def step_start(shadow: BottlerocketShadow, now: datetime) -> datetime:
    """When the controller asked for the state the node is in (a spec written by hand may lack it)."""
    started = shadow.spec.state_transition_timestamp
    return now if started is None else started.instant


def before_cordon(
    verification: Verification | None,
    shadow: BottlerocketShadow,
    *,
    blocks: Sequence[GateBlocked],
    snapshot: Mapping[WorkloadRef, Readiness] | None,
    now: datetime,
) -> Hold | Cordon:
    """Checkpoint 1. `blocks`: the node's gate blocks now (first the one to show); `snapshot`: the readiness
    of the workloads with pods on the node (None: not known yet)."""
    if blocks:
        first = blocks[0]
        message = f"blocked by the {first.gate} gate before its cordon: {first.reason}"
        return Hold(code=str(first.code), message=message, since=first.since)
    if verification is None:
        return Cordon(record=None)
    version = str(shadow.spec.version)
    if not verification.workloads:
        return Cordon(record=VerificationRecord(version=version))
    if snapshot is None:
        return Hold(code="AwaitingSnapshot", message=SNAPSHOT_UNKNOWN, since=step_start(shadow, now))
    return Cordon(
        record=VerificationRecord(version=version, snapshot=WorkloadSnapshot.of(snapshot, taken_at=now))
    )


def after_update(
    verification: Verification | None,
    shadow: BottlerocketShadow,
    record: VerificationRecord | None,
    *,
    node: NodeHealth | None,
    workloads: Mapping[WorkloadRef, Readiness] | None,
    health: Outcome | None,
    gates: Sequence[Block],
    now: datetime,
) -> Hold | Finish | FailUpdate:
    """Checkpoint 2. `node`: the Node now (None: gone); `workloads`: readiness now (None: not known yet);
    `health`: the health query's outcome asked since the node came back (None: none yet); `gates`: the
    pool's gate blocks now."""
    if verification is None:
        return Finish(record=None)
    version = str(shadow.spec.version)
    if record is None or not record.in_progress(version):
        record = VerificationRecord(version=version)
    back_at = step_start(shadow, now)
    verified_at = None if record.verified_at is None else record.verified_at.instant
    facts = VerificationFacts(
        node=node,
        snapshot={} if record.snapshot is None else record.snapshot.readiness(),
        workloads=workloads,
        health=health,
        gates=gates,
    )
    verdict = verify(verification, facts, Progress(back_at=back_at, verified_at=verified_at), now=now)
    ended = Timestamp.from_datetime(now)
    if isinstance(verdict, Passed):
        return Finish(record=replace(record, outcome=VerificationOutcome.PASSED, ended_at=ended))
    if isinstance(verdict, Failed):
        reason = clipped(verdict.reason)
        return FailUpdate(
            record=replace(record, outcome=VerificationOutcome.FAILED, ended_at=ended, reason=reason)
        )
    if verdict.verified_at is None:
        return Hold(
            code="Verifying", message=f"verifying: {verdict.message()}", since=back_at, until=verdict.until
        )
    began = None
    if verified_at != verdict.verified_at:
        began = replace(record, verified_at=Timestamp.from_datetime(verdict.verified_at))
    return Hold(
        code="Soaking",
        message=verdict.message(),
        since=verdict.verified_at,
        until=verdict.until,
        record=began,
    )


def verification_failure(record: VerificationRecord, *, node: str) -> Failure | None:
    """The failed update a record tells of, for the failure budget; its time is when it failed, so every
    pass that sees the record reports the same failure."""
    if record.outcome is not VerificationOutcome.FAILED or record.ended_at is None:
        return None
    return Failed(record.reason).failure(node, at=record.ended_at.instant)


def recorded_failure(shadow: BottlerocketShadow, *, node: str) -> Failure | None:
    """The failed verification the shadow's record tells of (None: none, or the record does not read)."""
    record, _ = read_record(shadow.annotations)
    return None if record is None else verification_failure(record, node=node)


def held_waiting(decision: Decision | None) -> Waiting | None:
    """What the waiting annotation says of a node held at a checkpoint (None: it is not held)."""
    if not isinstance(decision, Hold):
        return None
    return Waiting(
        reason=decision.code,
        message=decision.message[:MAX_MESSAGE],
        since=Timestamp.from_datetime(decision.since),
    )


def record_patch(annotations: Mapping[str, str], decision: Decision | None) -> dict[str, str | None]:
    """The annotation patch that writes the decision's record (or removes an old one before a cordon
    without verification); empty when there is nothing to write."""
    if isinstance(decision, Cordon) and decision.record is None:
        return {VERIFICATION_ANNOTATION: None} if VERIFICATION_ANNOTATION in annotations else {}
    record = None if decision is None else decision.record
    return {} if record is None else {VERIFICATION_ANNOTATION: record.to_json()}
