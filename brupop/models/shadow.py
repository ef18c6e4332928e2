"""BottlerocketShadow v2, the storage version: one object per node, `spec` written by the controller (the
goal) and `status` by the agent through the apiserver (where the node is).

Field names are the Rust brupop's snake_case wire names; absent optional values serialise as `null`, which
in a JSON merge patch also clears them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from brupop.models.constants import API_VERSION_V2, KIND
from brupop.models.timestamp import Timestamp
from brupop.models.version import Version

UINT32_MAX = 2**32 - 1


class ShadowState(StrEnum):
    """Where a node is in its update cycle (v2 spelling)."""

    IDLE = "Idle"
    STAGED_AND_PERFORMED_UPDATE = "StagedAndPerformedUpdate"
    REBOOTED_INTO_UPDATE = "RebootedIntoUpdate"
    MONITORING_UPDATE = "MonitoringUpdate"
    ERROR_RESET = "ErrorReset"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class ShadowSpec(_Wire):
    """The controller's goal for a node."""

    # The Python default builds the initial spec; the cluster still requires `state` to be written.
    model_config = ConfigDict(json_schema_extra={"required": ["state"]})

    state: ShadowState = Field(
        default=ShadowState.IDLE,
        description="The state the controller wants the node to reach; only the controller writes it.",
    )
    state_transition_timestamp: Timestamp | None = Field(
        default=None, description="When the controller set this state (RFC 3339)."
    )
    version: Version | None = Field(
        default=None, description="The Bottlerocket version the node is being updated to."
    )


DEFAULT_SPEC = ShadowSpec()


class ShadowStatus(_Wire):
    """What the agent last reported about its node."""

    current_version: Version = Field(description="The Bottlerocket version the node runs now.")
    target_version: Version = Field(
        description="The version the host's update API chose, or current_version when none is on offer."
    )
    current_state: ShadowState = Field(description="The state the agent has reached.")
    crash_count: Annotated[int, Field(ge=0, le=UINT32_MAX)] = Field(
        description="Consecutive failed update attempts.", json_schema_extra={"format": "uint32"}
    )
    state_transition_failure_timestamp: Timestamp | None = Field(
        default=None, description="When the last update attempt failed (RFC 3339)."
    )

    def update_available(self) -> bool:
        return self.current_version != self.target_version


class BottlerocketShadow(BaseModel):
    """A whole v2 object. `metadata` is kept as the cluster sent it."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: Literal["brupop.bottlerocket.aws/v2"] = Field(default=API_VERSION_V2, alias="apiVersion")
    kind: Literal["BottlerocketShadow"] = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ShadowSpec = Field(default_factory=ShadowSpec)
    status: ShadowStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
