"""The controller's next `spec` for one BottlerocketShadow, as the Rust brupop decides it.

The agent walks Idle -> StagedAndPerformedUpdate -> RebootedIntoUpdate -> MonitoringUpdate -> Idle; the
controller advances the spec one step each time the agent reports it reached the current one, and sends
a node that reported ErrorReset back to Idle. Whether an idle node may *start* is the caller's decision
(`may_start`: its pool's limit, schedule, pause, budget, holds, gates); the crash back-off is applied here
too, unless someone waived it (`kubectl brupop retry`).

A node that leaves brupop (its opt-in label removed) mid-cycle is finished, not abandoned, once anything
may have disrupted it (cordon, drain, reboot: RebootedIntoUpdate on); before that (only staged and
activated on the host) it is sent back to Idle, where the agent deactivates the update, but only once the
agent has reported the staging: until then it may be staging right now, and a spec sent back to Idle over
a status still Idle would read as a cycle already over (its in-cycle label would go, and the agent's pod
with it, in the middle of the host's prepare and activate; chaos seed 807). An agent that never reports
(dead, or its host unreachable) is waited for until the step's stuck deadline, no longer: then the node is
sent back and let go, so removing the label still frees a dead node's slot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from brupop.models.shadow import DEFAULT_SPEC, BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.backoff import may_retry

_AFTER: Final = {
    ShadowState.STAGED_AND_PERFORMED_UPDATE: ShadowState.REBOOTED_INTO_UPDATE,
    ShadowState.REBOOTED_INTO_UPDATE: ShadowState.MONITORING_UPDATE,
    ShadowState.MONITORING_UPDATE: ShadowState.IDLE,
    ShadowState.ERROR_RESET: ShadowState.IDLE,
}


def is_active(shadow: BottlerocketShadow) -> bool:
    """In an update cycle: counts against the concurrency limit (ErrorReset included, as in brupop)."""
    status = shadow.status
    return status is not None and (
        status.current_state is not ShadowState.IDLE or status.current_state is not shadow.spec.state
    )


def wants_update(shadow: BottlerocketShadow) -> bool:
    """Idle, settled and an update on offer: it would start if allowed (its back-off aside, which is
    admission's to weigh: `brupop.policy.admission`)."""
    status = shadow.status
    return status is not None and not is_active(shadow) and status.update_available()


def next_spec(
    shadow: BottlerocketShadow, *, now: datetime, may_start: bool, backoff_waived: bool = False
) -> ShadowSpec:
    """The spec the controller should write now (equal to the current spec when nothing changes).
    `backoff_waived`: someone asked to skip the back-off of the node's last failure (`backoff.waived`)."""
    spec, status = shadow.spec, shadow.status
    if status is None:
        return DEFAULT_SPEC
    if status.current_state is not spec.state:
        if status.current_state is ShadowState.ERROR_RESET and spec.state is not ShadowState.IDLE:
            return ShadowSpec(
                state=ShadowState.IDLE,
                state_transition_timestamp=Timestamp.from_datetime(now),
                version=spec.version,
            )
        return spec
    if spec.state is ShadowState.IDLE:
        if not status.update_available():
            return DEFAULT_SPEC
        if may_start and (backoff_waived or may_retry(status, now=now)):
            return ShadowSpec(
                state=ShadowState.STAGED_AND_PERFORMED_UPDATE,
                state_transition_timestamp=Timestamp.from_datetime(now),
                version=status.target_version,
            )
        return spec
    return ShadowSpec(
        state=_AFTER[spec.state],
        state_transition_timestamp=Timestamp.from_datetime(now),
        version=spec.version,
    )


def next_spec_leaving(shadow: BottlerocketShadow, *, now: datetime, gives_up: datetime | None) -> ShadowSpec:
    """`next_spec` for a node that left brupop mid-cycle: undo a cycle that has not disrupted the node yet,
    finish one that may have (see the module docstring). `gives_up`: when the current step's stuck deadline
    passes (None: no deadline)."""
    spec, status = shadow.spec, shadow.status
    if spec.state is ShadowState.STAGED_AND_PERFORMED_UPDATE:
        reported = status is None or status.current_state is not ShadowState.IDLE
        if not reported and (gives_up is None or now < gives_up):
            return spec  # the agent may be staging: sent back once it has said so
        return ShadowSpec(
            state=ShadowState.IDLE,
            state_transition_timestamp=Timestamp.from_datetime(now),
            version=spec.version,
        )
    return next_spec(shadow, now=now, may_start=False)
