"""One reconcile pass over the whole fleet: which specs change, which nodes start, which shadows go.

Level-based: the pass looks at every shadow and node as they are now, so it can run after any event, any
crash and any number of missed events and still reach the same decision. It never lets more nodes be in
an update cycle than `max_concurrent` allows: in-flight nodes (ErrorReset included) hold their slot, and
new nodes start only in the free slots and only while the schedule window is open. Starting order is the
Rust brupop's: lowest crash count first, the controller's own node last, then by name (deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from brupop.models.constants import SHADOW_NAME_PREFIX, UPDATER_INTERFACE_LABEL, UPDATER_INTERFACE_VERSION
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.policy.backoff import retry_at
from brupop.policy.statemachine import is_active, next_spec, wants_to_start


class ConcurrencyError(ValueError):
    """MAX_CONCURRENT_UPDATE is neither a non-negative integer nor `unlimited`."""


def parse_max_concurrent(text: str) -> int | None:
    """`unlimited` (any case) gives None; otherwise a non-negative integer (0 means: start nothing)."""
    value = text.strip()
    if value.lower() == "unlimited":
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    raise ConcurrencyError("expected a non-negative integer or 'unlimited'")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What decisions need of a Node: its identity and whether it opted in to brupop."""

    name: str
    uid: str
    labels: Mapping[str, str]

    @property
    def opted_in(self) -> bool:
        return self.labels.get(UPDATER_INTERFACE_LABEL) == UPDATER_INTERFACE_VERSION


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    max_concurrent: int | None
    controller_node: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    spec_changes: Mapping[str, ShadowSpec]
    """Shadow name -> the spec to write (only shadows whose spec changes)."""
    started: tuple[str, ...]
    """Shadows that begin an update in this pass (a subset of `spec_changes`)."""
    held: tuple[str, ...]
    """Shadows that want to start but must wait (window closed or no free slot)."""
    deletions: tuple[str, ...]
    """Shadows of Nodes that no longer carry the opt-in label."""
    active: int
    """Nodes in an update cycle after this pass (started ones included)."""
    wake_at: datetime | None
    """The next instant a back-off ends, when the pass should run again even without events."""


def node_name_of(shadow: BottlerocketShadow) -> str:
    """The Node a shadow tracks: its first owner reference, else the name after `brs-`."""
    owners = shadow.metadata.get("ownerReferences") or []
    if owners and isinstance(owners[0], Mapping) and owners[0].get("name"):
        return str(owners[0]["name"])
    return shadow.name.removeprefix(SHADOW_NAME_PREFIX)


def start_order(
    shadows: Iterable[BottlerocketShadow], *, controller_node: str | None
) -> list[BottlerocketShadow]:
    def key(shadow: BottlerocketShadow) -> tuple[bool, int, str]:
        crashes = shadow.status.crash_count if shadow.status else 0
        return (node_name_of(shadow) == controller_node, crashes, shadow.name)

    return sorted(shadows, key=key)


def plan(
    shadows: Iterable[BottlerocketShadow],
    nodes: Mapping[str, NodeInfo],
    *,
    now: datetime,
    config: RolloutConfig,
    window_open: bool,
) -> Plan:
    """Decide this pass. `nodes` maps node name -> NodeInfo for every Node that exists."""
    changes: dict[str, ShadowSpec] = {}
    deletions: list[str] = []
    candidates: list[BottlerocketShadow] = []
    waits: list[datetime] = []
    active = 0
    for shadow in shadows:
        node = nodes.get(node_name_of(shadow))
        if node is not None and not node.opted_in:
            deletions.append(shadow.name)
            continue
        if is_active(shadow):
            active += 1
        elif node is not None and wants_to_start(shadow, now=now):
            candidates.append(shadow)
            continue
        elif shadow.status is not None and shadow.status.update_available():
            at = retry_at(shadow.status)
            if at is not None and at > now:
                waits.append(at)
        wanted = next_spec(shadow, now=now, may_start=False)
        if wanted is not shadow.spec and wanted != shadow.spec:
            changes[shadow.name] = wanted

    if not window_open:
        slots = 0
    elif config.max_concurrent is None:
        slots = len(candidates)
    else:
        slots = max(config.max_concurrent - active, 0)
    ordered = start_order(candidates, controller_node=config.controller_node)
    started = ordered[:slots]
    for shadow in started:
        changes[shadow.name] = next_spec(shadow, now=now, may_start=True)
    return Plan(
        spec_changes=changes,
        started=tuple(s.name for s in started),
        held=tuple(s.name for s in ordered[slots:]),
        deletions=tuple(deletions),
        active=active + len(started),
        wake_at=min(waits, default=None),
    )
