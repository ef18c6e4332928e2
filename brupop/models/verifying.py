"""What the controller keeps on a shadow about the verification of the node's update in progress
(annotation `brupop.bottlerocket.aws/verification`), so a restarted controller or a new leader carries on
where the last one was: the workload snapshot taken before the cordon, when the soak began, and how the
verification ended (a failure counts against the pool's failure budget, with its time as its identity).

One record per cycle: the controller writes it (or removes an old one) in the same patch that sends the
node to RebootedIntoUpdate, the step that cordons and drains it, so no record outlives the cycle it was
taken for, and a snapshot is never from another cycle. It is an annotation, not status, for the reasons
`brupop.models.progress` gives: the status is the agent's report, in the Rust brupop's wire format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from brupop.models.health import WorkloadSnapshot
from brupop.models.timestamp import Timestamp
from brupop.models.version import Version
from brupop.models.wire import MaxSize, Wire, described

REASON_LIMIT: Final = 2048
"""Characters of a failure's reason kept in the record (the rest is cut, marked with an ellipsis)."""


class VerificationOutcome(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationRecord(Wire):
    NULLABLE: ClassVar[bool] = False

    version: Version = described("The version the node is being updated to (the spec's, at the cordon).")
    snapshot: WorkloadSnapshot | None = described(
        "The readiness of the workloads that had pods on the node, before its cordon (None: not checked).",
        default=None,
    )
    verified_at: Timestamp | None = described(
        "When every check first held: the soak began.", key="verifiedAt", default=None
    )
    outcome: VerificationOutcome | None = described("Passed or Failed, once decided.", default=None)
    ended_at: Timestamp | None = described("When the outcome was decided.", key="endedAt", default=None)
    reason: Annotated[str, MaxSize(REASON_LIMIT)] = described("Why it failed.", default="")

    def in_progress(self, version: str | None) -> bool:
        """The record of a verification of an update to `version` that has not ended."""
        return self.outcome is None and self.version == version

    def to_json(self) -> str:
        """The annotation's value (compact JSON)."""
        return json.dumps(self.to_wire(), separators=(",", ":"))


def clipped(reason: str) -> str:
    """A reason cut to what a record keeps."""
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"
