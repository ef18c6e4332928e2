"""BottlerocketShadow v1: still served so that old clients and stored objects keep working. It splits
staging and activation into two states and has no crash tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from brupop.models.constants import API_VERSION_V1, KIND
from brupop.models.timestamp import Timestamp
from brupop.models.version import Version
from brupop.models.wire import Extra, Wire, described


class ShadowStateV1(StrEnum):
    IDLE = "Idle"
    STAGED_UPDATE = "StagedUpdate"
    PERFORMED_UPDATE = "PerformedUpdate"
    REBOOTED_INTO_UPDATE = "RebootedIntoUpdate"
    MONITORING_UPDATE = "MonitoringUpdate"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowSpecV1(Wire):
    """The controller's goal for a node (v1)."""

    NULLABLE: ClassVar[bool] = False  # an unset field is absent, not null (kubectl: no `<no value>`)

    state: ShadowStateV1 = described(
        "The state the controller wants.", default=ShadowStateV1.IDLE, schema_required=True
    )
    state_transition_timestamp: Timestamp | None = described(
        "When the controller set this state (RFC 3339).", default=None
    )
    version: Version | None = described("The version the node is being updated to.", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowStatusV1(Wire):
    """What the agent last reported about its node (v1)."""

    NULLABLE: ClassVar[bool] = False  # an unset field is absent, not null (kubectl: no `<no value>`)

    current_version: Version = described("The Bottlerocket version the node runs now.")
    target_version: Version = described("The version the host's update API chose.")
    current_state: ShadowStateV1 = described("The state the agent has reached.")


@dataclass(frozen=True, slots=True, kw_only=True)
class BottlerocketShadowV1(Wire):
    EXTRA: ClassVar[Extra] = "ignore"

    api_version: Literal["brupop.bottlerocket.aws/v1"] = field(
        default=API_VERSION_V1, metadata={"key": "apiVersion"}
    )
    kind: Literal["BottlerocketShadow"] = KIND
    metadata: dict[str, Any] = field(default_factory=dict)
    spec: ShadowSpecV1 = field(default_factory=ShadowSpecV1)
    status: ShadowStatusV1 | None = None
