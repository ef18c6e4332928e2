"""BottlerocketShadow v2, the storage version: one object per node, `spec` written by the controller (the
goal) and `status` by the agent through the apiserver (where the node is).

Field names are the Rust brupop's snake_case wire names; absent optional values serialise as `null`, which
in a JSON merge patch also clears them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from brupop.models.constants import API_VERSION_V2, KIND
from brupop.models.timestamp import Timestamp
from brupop.models.version import Version
from brupop.models.wire import Extra, Range, Wire, annotations_of, described

UINT32_MAX = 2**32 - 1


class ShadowState(StrEnum):
    """Where a node is in its update cycle (v2 spelling)."""

    IDLE = "Idle"
    STAGED_AND_PERFORMED_UPDATE = "StagedAndPerformedUpdate"
    REBOOTED_INTO_UPDATE = "RebootedIntoUpdate"
    MONITORING_UPDATE = "MonitoringUpdate"
    ERROR_RESET = "ErrorReset"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowSpec(Wire):
    """The controller's goal for a node."""

    NULLABLE: ClassVar[bool] = False  # an unset field is absent, not null (kubectl: no `<no value>`)

    # The Python default builds the initial spec; the cluster still requires `state` to be written.
    state: ShadowState = described(
        "The state the controller wants the node to reach; only the controller writes it.",
        default=ShadowState.IDLE,
        schema_required=True,
    )
    state_transition_timestamp: Timestamp | None = described(
        "When the controller set this state (RFC 3339).", default=None
    )
    version: Version | None = described(
        "The Bottlerocket version the node is being updated to.", default=None
    )


DEFAULT_SPEC = ShadowSpec()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowStatus(Wire):
    """What the agent last reported about its node."""

    NULLABLE: ClassVar[bool] = False  # an unset field is absent, not null (kubectl: no `<no value>`)

    current_version: Version = described("The Bottlerocket version the node runs now.")
    target_version: Version = described(
        "The version the host's update API chose, or current_version when none is on offer."
    )
    current_state: ShadowState = described("The state the agent has reached.")
    crash_count: Annotated[int, Range(0, UINT32_MAX, "uint32")] = described(
        "Consecutive failed update attempts."
    )
    state_transition_failure_timestamp: Timestamp | None = described(
        "When the last update attempt failed (RFC 3339).", default=None
    )

    def update_available(self) -> bool:
        return self.current_version != self.target_version


@dataclass(frozen=True, slots=True, kw_only=True)
class BottlerocketShadow(Wire):
    """A whole v2 object. `metadata` is kept as the cluster sent it."""

    EXTRA: ClassVar[Extra] = "ignore"

    api_version: Literal["brupop.bottlerocket.aws/v2"] = field(
        default=API_VERSION_V2, metadata={"key": "apiVersion"}
    )
    kind: Literal["BottlerocketShadow"] = KIND
    metadata: dict[str, Any] = field(default_factory=dict)
    spec: ShadowSpec = field(default_factory=ShadowSpec)
    status: ShadowStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def annotations(self) -> dict[str, str]:
        return annotations_of(self.metadata)
