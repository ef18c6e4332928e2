"""BottlerocketShadow v1: still served so that old clients and stored objects keep working. It splits
staging and activation into two states and has no crash tracking."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from brupop.models.constants import API_VERSION_V1, KIND
from brupop.models.timestamp import Timestamp
from brupop.models.version import Version


class ShadowStateV1(StrEnum):
    IDLE = "Idle"
    STAGED_UPDATE = "StagedUpdate"
    PERFORMED_UPDATE = "PerformedUpdate"
    REBOOTED_INTO_UPDATE = "RebootedIntoUpdate"
    MONITORING_UPDATE = "MonitoringUpdate"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowSpecV1(_Wire):
    model_config = ConfigDict(json_schema_extra={"required": ["state"]})

    state: ShadowStateV1 = Field(default=ShadowStateV1.IDLE, description="The state the controller wants.")
    state_transition_timestamp: Timestamp | None = Field(
        default=None, description="When the controller set this state (RFC 3339)."
    )
    version: Version | None = Field(default=None, description="The version the node is being updated to.")


class ShadowStatusV1(_Wire):
    current_version: Version = Field(description="The Bottlerocket version the node runs now.")
    target_version: Version = Field(description="The version the host's update API chose.")
    current_state: ShadowStateV1 = Field(description="The state the agent has reached.")


class BottlerocketShadowV1(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: Literal["brupop.bottlerocket.aws/v1"] = Field(default=API_VERSION_V1, alias="apiVersion")
    kind: Literal["BottlerocketShadow"] = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ShadowSpecV1 = Field(default_factory=ShadowSpecV1)
    status: ShadowStatusV1 | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
