"""The reconciler's view, writer and leadership for unit tests: dicts of shadows, Nodes and policies that
each write changes, and a Lease that keeps the schedule records per pool."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from brupop.controller.reconciler import UnreadableShadow
from brupop.models.constants import IN_CYCLE_LABEL
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.policy.marks import MarksChange
from brupop.policy.pools import ENV_POOL
from brupop.policy.rollout import NodeInfo, node_name_of

LABELS = {"bottlerocket.aws/updater-interface-version": "2.0.0"}


class Fleet:
    """Our FleetView and FleetWriter over a dict of shadows, Nodes and policies; `refuse` names writes that
    fail."""

    def __init__(self, shadows: list[BottlerocketShadow]) -> None:
        self.by_name = {s.name: s for s in shadows}
        names = [node_name_of(s) for s in shadows]
        self.node_info = {n: NodeInfo(name=n, uid="u", labels=LABELS) for n in names}
        self.bad: list[UnreadableShadow] = []
        self.policy_objects: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, bool]] = []
        self.node_events: list[tuple[str, str]] = []
        self.policy_events: list[tuple[str, str, bool]] = []
        self.deleted: list[str] = []
        self.writes: list[str] = []
        self.refuse: set[str] = set()

    def shadows(self) -> list[BottlerocketShadow]:
        return list(self.by_name.values())

    def unreadable(self) -> list[UnreadableShadow]:
        return list(self.bad)

    def nodes(self) -> Mapping[str, NodeInfo]:
        return dict(self.node_info)

    def policies(self) -> list[dict[str, Any]]:
        return list(self.policy_objects.values())

    def _landed(self, write: str) -> bool:
        self.writes.append(write)
        return write not in self.refuse

    async def write_shadow(
        self, shadow: BottlerocketShadow, *, spec: ShadowSpec | None, annotations: Mapping[str, str | None]
    ) -> bool:
        if not self._landed(f"{'spec' if spec is not None else 'annotations'} {shadow.name}"):
            return False
        found = self.by_name[shadow.name]
        merged = {**found.annotations, **annotations}
        metadata = {**found.metadata, "annotations": {k: v for k, v in merged.items() if v is not None}}
        self.by_name[shadow.name] = replace(found, spec=spec or found.spec, metadata=metadata)
        return True

    async def delete_shadow(self, shadow: BottlerocketShadow) -> bool:
        if not self._landed(f"delete {shadow.name}"):
            return False
        self.deleted.append(shadow.name)
        del self.by_name[shadow.name]
        return True

    async def write_node(self, node: str, *, in_cycle: bool | None, marks: MarksChange) -> bool:
        if not self._landed(f"label {node} {in_cycle}" if in_cycle is not None else f"marks {node}"):
            return False
        info = self.node_info[node]
        labels = _merged(info.labels, marks.labels)
        if in_cycle is not None:
            labels = _merged(labels, {IN_CYCLE_LABEL: "true" if in_cycle else None})
        annotations = _merged(info.annotations, marks.annotations)
        taints = info.taints if marks.taints is None else tuple(marks.taints)
        self.node_info[node] = replace(info, labels=labels, annotations=annotations, taints=taints)
        return True

    async def write_policy_status(self, policy: Mapping[str, Any], status: UpdatePolicyStatus) -> bool:
        name = policy["metadata"]["name"]
        if not self._landed(f"status {name}"):
            return False
        self.policy_objects[name] = {**self.policy_objects[name], "status": status.to_wire()}
        return True

    def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((name, reason, warning))

    def record_node_event(self, node: str, *, reason: str, message: str, warning: bool = True) -> None:
        self.node_events.append((node, reason))

    def record_policy_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        self.policy_events.append((name, reason, warning))


def _merged(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    merged = {**current, **patch}
    return {k: v for k, v in merged.items() if v is not None}


class Lease:
    """Leadership as the Lease gives it: steady or not, and the recorded schedule state (per pool)."""

    def __init__(self, drained_at: datetime | None = None, **pools: datetime) -> None:
        self.steady_now = True
        self.recorded: dict[str, datetime] = dict(pools)
        if drained_at is not None:
            self.recorded[ENV_POOL] = drained_at
        self.records: list[datetime] = []
        """The environment's records."""
        self.pool_records: list[tuple[str, datetime]] = []
        """The policies' records."""

    def steady(self) -> bool:
        return self.steady_now

    def drained_at(self) -> Mapping[str, datetime]:
        return dict(self.recorded)

    async def record_drained(self, pool: str, at: datetime, *, live: Collection[str]) -> bool:
        if pool == ENV_POOL:
            self.records.append(at)
        else:
            self.pool_records.append((pool, at))
        self.recorded[pool] = at
        return True
