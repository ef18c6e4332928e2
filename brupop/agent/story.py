"""What the agent tells people about its node's update: an Event on the Node and on its shadow for each
step only the agent sees (staged, rebooting, back on the new version, done, failed and why). With the
apiserver's `Cordoned`, `Drained` and `Uncordoned`, `kubectl describe node` tells the story of an update.

The agent writes nothing else to the cluster (the apiserver is its door for that): Events are a record,
created by `brupop.kube.events.EventRecorder`, in the background and rate-limited, so telling never holds or
fails a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from brupop.kube.events import Regarding
from brupop.models.shadow import ShadowState

REPORTER: Final = "brupop.bottlerocket.aws/agent"


class Recorder(Protocol):
    """`brupop.kube.events.EventRecorder`, as the agent uses it."""

    def record(self, regarding: Regarding, *, reason: str, note: str, warning: bool = False) -> None: ...

    async def run(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Told:
    """One step as people read it: a CamelCase reason and a sentence."""

    reason: str
    note: str
    warning: bool = False


def staged(version: str) -> Told:
    return Told(
        "UpdateStaged",
        f"Bottlerocket {version} is staged and activated: the node boots it at its next reboot",
    )


def rebooting(version: str) -> Told:
    return Told("Rebooting", f"brupop reboots the node into Bottlerocket {version}")


def rebooted(version: str) -> Told:
    return Told("Rebooted", f"the node is back, running Bottlerocket {version}")


def succeeded(version: str) -> Told:
    return Told("UpdateSucceeded", f"the node's update to Bottlerocket {version} is complete")


def failed(*, step: ShadowState, version: str | None, failures: int, error: str) -> Told:
    update = f"the update to Bottlerocket {version}" if version else "the update"
    return Told(
        "UpdateFailed", f"{update} failed at {step.value} (failure {failures}): {error}", warning=True
    )


def tell(
    recorder: Recorder, told: Told, *, node: str, node_uid: str | None, namespace: str, shadow_uid: str | None
) -> None:
    """Record `told` on the Node and on its shadow; returns at once."""
    for regarding in (
        Regarding.node(node, node_uid),
        Regarding.shadow(node, namespace=namespace, uid=shadow_uid),
    ):
        recorder.record(regarding, reason=told.reason, note=told.note, warning=told.warning)
