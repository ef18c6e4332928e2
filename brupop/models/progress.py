"""What the controller writes on each shadow for the people who ask "why hasn't my node updated?": the
reason the node waits when only the controller can tell (a health gate's verdict: `Waiting`), and the
node's last update cycles (`History`). `kubectl brupop status` reads both. While a node is in a cycle the
controller also keeps where the cycle began (`CycleStart`), so that its end can be told in the history.

They live in annotations of the shadow (`brupop.bottlerocket.aws/waiting`, `.../history`, `.../cycle`),
not in its status: the status is the agent's report, written through the apiserver in the Rust brupop's
wire format (a Rust apiserver would drop fields it does not know), and the controller may write only the
main resource. Annotations also travel unchanged through the v1/v2 conversion. They are JSON, read with the
same reader as every other wire model; what does not read is ignored by readers and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from brupop.models.timestamp import Timestamp
from brupop.models.version import Version
from brupop.models.wire import MaxSize, Wire, described

HISTORY_LIMIT: Final = 10
"""Cycles kept per node, newest last (a few hundred bytes each)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting(Wire):
    """The controller's last verdict on a node that wants to start but may not."""

    NULLABLE: ClassVar[bool] = False

    reason: Annotated[str, MaxSize(64)] = described("A CamelCase word, e.g. GateBlocked.")
    message: Annotated[str, MaxSize(1024)] = described(
        "For people, e.g. 'blocked: alert KubeNodeNotReady firing'."
    )
    since: Timestamp = described("Since when this reason holds.")


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleStart(Wire):
    """The update cycle a node is in, as the controller began it."""

    NULLABLE: ClassVar[bool] = False

    from_version: Version = described("The version before.", key="from")
    to_version: Version = described("The version asked for.", key="to")
    start: Timestamp = described("When the controller started the cycle.")
    pool: str | None = described(
        "The pool (policy name, or (environment)) the node started in: its slot stays there until the "
        "cycle ends, wherever its labels or the policies move it meanwhile.",
        default=None,
    )


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STUCK = "Stuck"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cycle(CycleStart):
    """One update cycle of a node, from its start (the controller's first step) to Idle again."""

    end: Timestamp = described("When the node was back on Idle (or found stuck).")
    outcome: Outcome = described("Succeeded, Failed or Stuck.")
    reason: Annotated[str, MaxSize(1024)] = described("What failed, for people.", default="")


@dataclass(frozen=True, slots=True, kw_only=True)
class History(Wire):
    NULLABLE: ClassVar[bool] = False

    cycles: Annotated[list[Cycle], MaxSize(HISTORY_LIMIT)] = described(
        "The last cycles, newest last.", default_factory=list
    )
