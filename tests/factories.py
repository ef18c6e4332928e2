"""Builders for BottlerocketShadow objects in tests, so each test states only what matters to it."""

from __future__ import annotations

from datetime import datetime

from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp


def shadow(
    node: str,
    *,
    spec: ShadowState = ShadowState.IDLE,
    state: ShadowState | None = ShadowState.IDLE,
    current: str = "1.0.0",
    target: str = "1.0.0",
    crashes: int = 0,
    failed_at: datetime | None = None,
    spec_version: str | None = None,
    uid: str | None = None,
) -> BottlerocketShadow:
    status = (
        None
        if state is None
        else ShadowStatus(
            current_version=current,
            target_version=target,
            current_state=state,
            crash_count=crashes,
            state_transition_failure_timestamp=Timestamp.from_datetime(failed_at) if failed_at else None,
        )
    )
    return BottlerocketShadow(
        metadata={
            "name": f"brs-{node}",
            "namespace": "brupop-bottlerocket-aws",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid or f"uid-{node}"}
            ],
        },
        spec=ShadowSpec(state=spec, version=spec_version),
        status=status,
    )
