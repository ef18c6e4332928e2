"""What the controller writes on each shadow for people (`brupop.models.progress`), decided here as
annotation patches (a None value removes): the cycle a node is in, the cycles it finished, and why it waits
when only the controller can tell. Each is written only when it changes.

- A start records where the cycle begins (`cycle_begins`: versions, the start time and the pool, where
  the node's slot stays until the cycle ends: `started_in`).
- When the node is out of its cycle again (not `is_active`), the cycle goes into the history, newest last and
  at most `HISTORY_LIMIT` of them, and the record goes (`cycle_change`). It succeeded when the node runs the
  version it was asked for; it failed when the node reported a failure after the start (the failure's
  reason), failed its verification after the update (the record's reason, `brupop.policy.checkpoints`), or
  ended without reaching its target (e.g. it left brupop before its reboot and was sent back).
- A node found stuck gets one `Stuck` entry for its cycle (ending at the deadline it missed); its cycle goes
  on, and its real end is appended when it comes.
- A history or record that does not read is replaced, not kept: readers ignore what does not read, and the
  controller must not stop writing history because someone edited an annotation.

A node that waits for a reason anyone can work out from the cluster (a closed window, a pause, a full pool)
gets no `waiting` annotation: `kubectl brupop status` computes those itself with the same functions. Only a
health gate's verdict (`GateBlocked`) needs the controller's word, and so does a node held at a checkpoint
of its cycle (`brupop.policy.checkpoints`: GateBlocked before its cordon, AwaitingSnapshot, Verifying,
Soaking).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Final

from brupop.models.constants import CYCLE_ANNOTATION, HISTORY_ANNOTATION, WAITING_ANNOTATION
from brupop.models.policy import Failure
from brupop.models.progress import HISTORY_LIMIT, Cycle, CycleStart, History, Outcome, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.models.timestamp import Timestamp
from brupop.models.wire import Wire, WireError
from brupop.policy.admission import Code, GateBlocked, Reason
from brupop.policy.budget import failure_of
from brupop.policy.checkpoints import recorded_failure
from brupop.policy.statemachine import is_active
from brupop.policy.stuck import Stuck

Patch = dict[str, str | None]
CONTROLLER_ONLY: Final = frozenset({Code.GATE_BLOCKED})
"""The waiting reasons only the controller can know."""
MAX_MESSAGE: Final = 1024


def _json(model: Wire) -> str:
    return json.dumps(model.to_wire(), separators=(",", ":"))


def read_history(annotations: Mapping[str, str]) -> History:
    """The shadow's history (empty when absent or unreadable)."""
    try:
        return History.from_json(annotations[HISTORY_ANNOTATION])
    except (KeyError, WireError):
        return History()


def attributed(shadow: BottlerocketShadow, failure: Failure) -> Failure:
    """`failure` with the start of the node's cycle it happened in: the latest cycle (the current record, or
    one in the history) that began at or before it (unchanged when none is known, e.g. a shadow from before
    cycle records)."""
    annotations = shadow.annotations
    starts = [cycle.start for cycle in read_history(annotations).cycles]
    with contextlib.suppress(KeyError, WireError):
        starts.append(CycleStart.from_json(annotations[CYCLE_ANNOTATION]).start)
    began = [start for start in starts if start.instant <= failure.at.instant]
    if not began:
        return failure
    return replace(failure, cycle=max(began, key=lambda start: start.instant))


def started_in(shadow: BottlerocketShadow) -> str | None:
    """The pool the node's current cycle started in, as its record says (None: no readable record, or
    one from before records named the pool)."""
    text = shadow.annotations.get(CYCLE_ANNOTATION)
    if text is None:
        return None
    try:
        return CycleStart.from_json(text).pool
    except WireError:
        return None


def cycle_begins(shadow: BottlerocketShadow, spec: ShadowSpec, *, pool: str) -> Patch:
    """The record of the cycle `spec` starts (the spec that moves an idle node to its first step) in
    `pool`."""
    status = shadow.status
    assert status is not None  # a start needs a status
    assert spec.version is not None  # and names its version and time
    assert spec.state_transition_timestamp is not None
    record = CycleStart(
        from_version=status.current_version,
        to_version=spec.version,
        start=spec.state_transition_timestamp,
        pool=pool,
    )
    return {CYCLE_ANNOTATION: _json(record)}


def _appended(annotations: Mapping[str, str], cycle: Cycle) -> str:
    cycles = [*read_history(annotations).cycles, cycle][-HISTORY_LIMIT:]
    return _json(History(cycles=cycles))


def _outcome(shadow: BottlerocketShadow, record: CycleStart) -> tuple[Outcome, str]:
    status = shadow.status
    assert status is not None  # not active: a status is there
    for failure in (failure_of(shadow, node=""), recorded_failure(shadow, node="")):
        if failure is not None and failure.at.instant >= record.start.instant:
            return Outcome.FAILED, failure.reason
    if status.current_version == record.to_version:
        return Outcome.SUCCEEDED, ""
    return Outcome.FAILED, f"ended on {status.current_version} without reaching {record.to_version}"


def cycle_change(shadow: BottlerocketShadow, *, stuck: Stuck | None, now: datetime) -> Patch:
    """What to write about the node's cycle in this pass: its end into the history once the node is out of
    it, a Stuck entry the first time it is found stuck, else nothing."""
    annotations = shadow.annotations
    text = annotations.get(CYCLE_ANNOTATION)
    if text is None or shadow.status is None:
        return {}  # no record, or no status to tell whether and how the cycle ended: the record waits
    try:
        record = CycleStart.from_json(text)
    except WireError:
        return {CYCLE_ANNOTATION: None}
    if not is_active(shadow):
        outcome, reason = _outcome(shadow, record)
        ended = _cycle(record, end=Timestamp.from_datetime(now), outcome=outcome, reason=reason)
        return {HISTORY_ANNOTATION: _appended(annotations, ended), CYCLE_ANNOTATION: None}
    if stuck is None:
        return {}
    last = read_history(annotations).cycles[-1:]
    if last and last[0].outcome is Outcome.STUCK and last[0].start == record.start:
        return {}
    entry = _cycle(
        record,
        end=Timestamp.from_datetime(stuck.deadline),
        outcome=Outcome.STUCK,
        reason=stuck.failure().reason,
    )
    return {HISTORY_ANNOTATION: _appended(annotations, entry)}


def _cycle(record: CycleStart, *, end: Timestamp, outcome: Outcome, reason: str) -> Cycle:
    return Cycle(
        from_version=record.from_version,
        to_version=record.to_version,
        start=record.start,
        pool=record.pool,
        end=end,
        outcome=outcome,
        reason=reason[:MAX_MESSAGE],
    )


def waiting_of(reason: Reason | None) -> Waiting | None:
    """The controller's verdict to show for a node waiting for `reason` (None: nothing to show)."""
    if not isinstance(reason, GateBlocked) or reason.code not in CONTROLLER_ONLY:
        return None
    message = f"blocked by the {reason.gate} gate: {reason.reason}"
    return Waiting(
        reason=reason.code.value, message=message[:MAX_MESSAGE], since=Timestamp.from_datetime(reason.since)
    )


def waiting_change(annotations: Mapping[str, str], reason: Reason | Waiting | None) -> Patch:
    """The patch that makes the `waiting` annotation say `reason` (or go), empty when it already does. A
    `Waiting` is said as it is (a node held at a checkpoint)."""
    wanted = reason if isinstance(reason, Waiting) else waiting_of(reason)
    text = annotations.get(WAITING_ANNOTATION)
    if wanted is None:
        return {} if text is None else {WAITING_ANNOTATION: None}
    try:
        if text is not None and Waiting.from_json(text) == wanted:
            return {}
    except WireError:
        pass
    return {WAITING_ANNOTATION: _json(wanted)}
